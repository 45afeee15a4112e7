import Auth
import TransportSecurity
/// What a member needs to start, named after etcd's flags
/// (`--name`, `--data-dir`, `--listen-client-urls`, ...).
public struct ServerConfig: Sendable {
    public var name: String
    /// Defaults to `<name>.etcd`, as etcd does.
    public var dataDir: String
    public var listenClientURLs: [String]
    public var advertiseClientURLs: [String]
    /// --listen-metrics-urls: extra listeners for `/metrics` and the health endpoints only.
    public var listenMetricsURLs: [String] = []
    /// --metrics extensive: also grpc_server_handling_seconds (etcd's
    /// default, basic, leaves the histograms out).
    public var extensiveMetrics = false
    /// --initial-advertise-peer-urls (reported by MemberList; peers come with clustering).
    public var initialAdvertisePeerURLs = ["http://localhost:2380"]
    /// --initial-cluster-token: part of every member id, so clusters started
    /// from the same flags but different tokens never mistake each other.
    public var initialClusterToken = "etcd-cluster"
    /// --max-request-bytes: the largest request a client may send.
    public var maxRequestBytes = 1_572_864
    /// --snapshot-count: applied entries between raft snapshots (which release the WAL).
    public var snapshotCount: UInt64 = 10_000
    /// --max-txn-ops: the most operations one txn may hold.
    public var maxTxnOps = 128
    /// --wal-dir: a separate directory for the WAL (default: `<data-dir>/member/wal`).
    public var dedicatedWALDir: String?
    /// --listen-peer-urls (validated; peers come with clustering).
    public var listenPeerURLs = ["http://localhost:2380"]
    /// --initial-cluster: name → peer URLs of the members a new cluster starts with.
    public var initialCluster: [(name: String, peerURLs: [String])] = [("default", ["http://localhost:2380"])]
    /// --initial-cluster-state: `new` or `existing`.
    public var initialClusterState = "new"
    /// --heartbeat-interval in milliseconds: one raft tick.
    public var heartbeatIntervalMilliseconds = 100
    /// --election-timeout in milliseconds.
    public var electionTimeoutMilliseconds = 1000
    /// --quota-backend-bytes: the backend may not grow past this.
    public var quotaBackendBytes: Int = 2 << 30
    /// --experimental-snapshot-catchup-entries: raft entries kept in memory
    /// below a snapshot for followers slightly behind; a follower further
    /// behind gets the whole backend instead.
    public var snapshotCatchUpEntries: UInt64 = 5_000
    /// --pre-vote: a member first asks whether it could win before it
    /// disrupts the cluster with a new term (etcd 3.5's default: on).
    public var preVote = true
    /// --force-new-cluster: restart this member as a one-member cluster
    /// that keeps its data (after losing quorum for good); the other
    /// members are removed through the log, as etcd does.
    public var forceNewCluster = false
    /// --strict-reconfig-check: refuse a member change that would leave
    /// the cluster without a quorum of started, connected members.
    public var strictReconfigCheck = true
    /// --downgrade-check-time: how often the leader's version monitor
    /// looks at the cluster version (etcd's default 5 s).
    public var downgradeCheckTimeMilliseconds = 5_000
    /// --log-level: debug, info, warn, error, panic or fatal.
    public var logLevel = "info"
    /// --experimental-watch-progress-notify-interval: how often watchers that
    /// asked for progress notifications get one when idle.
    public var watchProgressNotifyIntervalMilliseconds = 600_000
    /// --max-concurrent-streams: gRPC streams one client connection may open
    /// (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
    public var maxConcurrentStreams: UInt32 = UInt32.max
    /// --grpc-keepalive-min-time: clients pinging more often than this are
    /// told to go away (grpc-go's enforcement policy).
    public var grpcKeepaliveMinTimeMilliseconds: Int = 5000
    /// --grpc-keepalive-interval: an idle client connection is pinged this often.
    public var grpcKeepaliveIntervalMilliseconds: Int = 7_200_000
    /// --grpc-keepalive-timeout: a ping unanswered this long closes the connection.
    public var grpcKeepaliveTimeoutMilliseconds: Int = 20_000
    /// --max-learners: learners the cluster may have at once (etcd's default 1).
    public var maxLearners = 1
    /// TLS of the client listeners (`--cert-file`, ...) and of the peer
    /// listeners and dialers (`--peer-cert-file`, ...).
    public var clientTLS = TLSSettings()
    public var peerTLS = TLSSettings()
    /// --experimental-initial-corrupt-check (3.6: --feature-gates=InitialCorruptCheck=true):
    /// a member with data compares its HashKV with its peers' before serving.
    public var initialCorruptCheck = false
    /// --experimental-corrupt-check-time (3.6: --corrupt-check-time): how often
    /// the leader compares its HashKV with its followers'; 0: never.
    public var corruptCheckTimeMilliseconds = 0
    /// --experimental-compact-hash-check-enabled (3.6:
    /// --feature-gates=CompactHashCheck=true): the leader compares the
    /// hashes members recorded at their compactions.
    public var compactHashCheck = false
    /// --experimental-compact-hash-check-time (3.6: --compact-hash-check-time):
    /// how often it does (etcd's default 1 minute).
    public var compactHashCheckTimeMilliseconds = 60_000
    /// --auto-compaction-mode and --auto-compaction-retention: nil (etcd's
    /// retention "0") leaves compaction to clients.
    public var autoCompaction: AutoCompactionPolicy?
    /// How often revision-mode auto-compaction looks: etcd's fixed 5
    /// minutes. Not a flag; tests and the simulation shorten it.
    public var autoCompactionRevisionCheckIntervalMilliseconds = 300_000
    /// --bcrypt-cost: bcrypt's cost for the passwords of users added or changed.
    public var bcryptCost = 10
    /// --auth-token-ttl: seconds a simple token lives past its last use.
    public var authTokenTTLSeconds = 300
    /// --auth-token jwt,...: JWT tokens with these options (nil: simple tokens).
    public var jwt: JWTOptions?
    /// Watchers one watch stream may hold (a bound etcd does not have).
    public var maxWatchersPerStream = 100_000

    /// Failpoints of the write path (`ETCD_FAILPOINTS`; tests may set their own).
    public var failpoints: Failpoints = .shared

    /// Raft ticks per election timeout.
    public var electionTicks: Int { electionTimeoutMilliseconds / heartbeatIntervalMilliseconds }

    /// The shortest lease TTL, as etcd derives it: 1.5 election timeouts
    /// (in whole heartbeats), rounded up to seconds — 2 s with the defaults.
    public var minLeaseTTLSeconds: Int64 {
        let milliseconds = (3 * electionTicks / 2) * heartbeatIntervalMilliseconds
        return Int64((milliseconds + 999) / 1000)
    }

    public init(
        name: String = "default",
        dataDir: String? = nil,
        listenClientURLs: [String] = ["http://localhost:2379"],
        advertiseClientURLs: [String] = ["http://localhost:2379"]
    ) {
        self.name = name
        self.dataDir = dataDir ?? "\(name).etcd"
        self.listenClientURLs = listenClientURLs
        self.advertiseClientURLs = advertiseClientURLs
    }

    /// `member/` under the data dir: holds `wal/` and `snap/` (with the backend `snap/db`).
    public var memberDir: String { dataDir + "/member" }
    public var walDir: String { dedicatedWALDir ?? memberDir + "/wal" }
    public var snapDir: String { memberDir + "/snap" }
    public var backendPath: String { snapDir + "/db" }
}
