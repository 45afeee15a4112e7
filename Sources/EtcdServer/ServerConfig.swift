/// What a member needs to start, named after etcd's flags
/// (`--name`, `--data-dir`, `--listen-client-urls`, ...).
public struct ServerConfig: Sendable, Equatable {
    public var name: String
    /// Defaults to `<name>.etcd`, as etcd does.
    public var dataDir: String
    public var listenClientURLs: [String]
    public var advertiseClientURLs: [String]
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
    public var walDir: String { memberDir + "/wal" }
    public var snapDir: String { memberDir + "/snap" }
    public var backendPath: String { snapDir + "/db" }
}
