import Auth
import TransportSecurity
import Backend
import EtcdMetrics
import EtcdProto
import Foundation
import Lease
import Logging
import MVCC
import PeerTransport
import Raft

/// A single etcd member, the façade over its parts (see
/// docs/architecture.md for the map and a request's path):
///
/// - `Bootstrap` opens or creates the data dir and hands back the pieces;
/// - `RaftLoop` (its own thread) owns the `RawNode`, the WAL and every
///   backend write, and drives apply;
/// - `Applier` turns committed requests into effects on the MVCC store,
///   the lessor and the membership;
/// - `ReadIndexBatcher` (inside the loop) batches linearizable reads;
/// - `Mailbox` is the only way in: proposals, reads and peer messages are
///   queued there, results come back to completions.
///
/// Requests (`Member+Requests.swift`) take one path: check, encode
/// (`ProposalEncoder`), queue with a completion; the async calls wrap it.
/// Leases, membership and peers have files of their own.
public final class Member: Sendable {
    public typealias ApplyResult = EtcdServer.ApplyResult

    public let config: ServerConfig
    public let memberID: UInt64
    public let clusterID: UInt64
    let store: KVStore
    /// Watchers over `store`; the apply step notifies it of every write.
    public let watchable: WatchableStore
    let lessor: Lessor
    let leaseIDs: IDGenerator
    let leaseClock: LeaseClock
    /// Clocks, network, WAL file system and loop driver (see `MemberEnvironment`).
    let environment: MemberEnvironment
    let backend: Backend
    /// The members as applied from the log.
    let membership: MembershipTable
    /// The alarms as applied from the log.
    let alarms: AlarmStore
    /// Users, roles and permissions as applied from the log.
    public let auth: AuthStore
    /// The simple tokens this member has assigned (not persisted).
    let tokens: SimpleTokens
    /// With `--auth-token jwt,...`: signs and checks tokens instead.
    let jwt: JWTTokens?
    /// bcrypt's bounded workers (`Member+Auth.swift`).
    let passwordWork = PasswordWork()
    let bcryptBudget = BcryptBudget()
    /// Raft messages to and from the other members; it sends from the
    /// start and listens once `startPeers` is called.
    let peers: any RaftTransport
    let inbox: PeerInbox
    let mailbox: Mailbox
    let encoder: ProposalEncoder
    /// etcd's request timeout: 5 s plus two election timeouts.
    let requestTimeout: Duration
    private let loop: RaftLoop
    private let watchSyncThread: WatchSyncThread
    /// The leader's periodic and compaction hash checks (`Member+Corruption.swift`).
    let corruptionMonitor = CorruptionMonitor()
    /// The backend snapshots being streamed (`Member+Snapshot.swift`).
    let snapshotStreams = SnapshotStreams()
    let logger: Logger
    /// This member's Prometheus metrics (`metrics.exposition()` is what
    /// `/metrics` serves).
    public let metrics: EtcdMetrics
    /// Where the hot path records: `metrics`, or nil when the environment
    /// variable `ETCD_SWIFT_UNMETERED` is set, which leaves every counter
    /// and histogram fed from requests, the raft loop and the disk at 0
    /// (only for measuring what recording costs, A/B; state gauges are
    /// still set at exposition).
    public let metricsRecorder: EtcdMetrics?

    /// Opens (or creates) the data dir and starts the raft loop. A new data
    /// dir joins the cluster `--initial-cluster` describes; with
    /// `--initial-cluster-state existing` use `Member.open(config:)`, which
    /// asks the running members first.
    public convenience init(config: ServerConfig) throws {
        try self.init(config: config, joining: nil)
    }

    /// A member in a given environment (the simulation's clocks, network
    /// and disk).
    package convenience init(config: ServerConfig, environment: MemberEnvironment) throws {
        try self.init(config: config, joining: nil, environment: environment)
    }

    /// A member joining a running cluster (what `Member.open` learns from
    /// the running members, given directly), in a given environment.
    package convenience init(config: ServerConfig, joiningAs memberID: UInt64, clusterID: UInt64,
                             members: [MemberRecord], environment: MemberEnvironment) throws {
        try self.init(config: config, joining: Bootstrap.JoinInfo(memberID: memberID, clusterID: clusterID, members: members),
                      environment: environment)
    }

    init(config: ServerConfig, joining: Bootstrap.JoinInfo?, environment: MemberEnvironment = .production) throws {
        let logger = environment.logger ?? Logger(label: "etcd")
        // Peer certificates before the data dir: a bad file stops the start.
        let peerSecurity = environment.makeTransport == nil ? try Self.peerCredentials(config) : nil
        // So are the JWT key files.
        let jwt: JWTTokens?
        do { jwt = try config.jwt.map { options throws(AuthError) in try JWTTokens(options: options) } } catch { throw EtcdError(unconverted: error) }
        let parts = try Bootstrap(config: config, joining: joining, environment: environment, logger: logger)
        self.config = config
        self.environment = environment
        self.logger = logger
        memberID = parts.memberID
        clusterID = parts.clusterID
        backend = parts.backend
        store = parts.store
        lessor = parts.lessor
        membership = parts.membership
        alarms = parts.alarms
        auth = parts.auth
        tokens = SimpleTokens(ttl: .seconds(config.authTokenTTLSeconds), maxTokens: auth.limits.maxTokens)
        self.jwt = jwt
        // Member.open awaits this (and reports a key mismatch); a member
        // made directly gets it moments later, before any token checks out.
        if let jwt { Task { try? await jwt.prepare() } }
        watchable = WatchableStore(store: parts.store)
        leaseClock = LeaseClock(environment.now)
        requestTimeout = .seconds(5) + .milliseconds(2 * config.electionTimeoutMilliseconds)
        metrics = EtcdMetrics(serverVersion: EtcdVersion.server, extensive: config.extensiveMetrics)
        metricsRecorder = ProcessInfo.processInfo.environment["ETCD_SWIFT_UNMETERED"] == nil ? metrics : nil
        leaseIDs = IDGenerator(memberID: memberID, nowMilliseconds: environment.wallMilliseconds())
        encoder = ProposalEncoder(requestIDs: IDGenerator(memberID: memberID, nowMilliseconds: environment.wallMilliseconds()),
                                  maxRequestBytes: config.maxRequestBytes)
        var status = Mailbox.LoopStatus()
        status.appliedIndex = parts.applied
        status.committedIndex = parts.storage.hardState.commit
        status.term = parts.storage.hardState.term
        mailbox = Mailbox(status)

        let inbox = PeerInbox()
        self.inbox = inbox
        var transportConfig = PeerTransportConfig(localID: memberID, clusterID: clusterID, snapshotDirectory: config.snapDir)
        transportConfig.security = peerSecurity
        peers = environment.makeTransport?(transportConfig, inbox) ?? PeerTransport(config: transportConfig, delegate: inbox)
        let applier = Applier(memberID: memberID, store: store, watchable: watchable, lessor: lessor, backend: backend,
                              membership: membership, alarms: alarms, auth: auth, tokens: tokens, peers: peers, leaseClock: leaseClock, logger: logger,
                              failpoints: config.failpoints, metrics: metricsRecorder, observeApply: environment.observeApply,
                              observeCompaction: environment.observeCompaction)
        loop = RaftLoop(config: config, environment: environment, logger: logger, bootstrap: parts, mailbox: mailbox,
                        applier: applier, peers: peers, encoder: encoder, requestTimeout: requestTimeout, metrics: metricsRecorder)
        watchSyncThread = WatchSyncThread(store: watchable)
        inbox.member = self
        for record in membership.members where record.id != memberID {
            peers.setPeer(id: record.id, urls: record.peerURLs)
        }

        if !environment.manualLoop {
            let thread = Thread { [loop] in loop.run() }
            thread.name = "etcd-raft-loop"
            thread.start()
            watchSyncThread.start()
        }
        startCorruptionMonitor()
        startCompactHashMonitor()
        startMetrics()
    }

    // MARK: - Lifecycle

    /// Stops the loop, commits the backend and closes the files.
    /// Also waits when the loop already stopped on its own (after a storage
    /// error), so the files are closed when this returns — LMDB must never
    /// have the same file open twice in one process.
    public func stop() {
        corruptionMonitor.stop()
        snapshotStreams.cancelAll()
        if environment.manualLoop {
            mailbox.stop()
            while step() {}
            return
        }
        watchSyncThread.stop()
        mailbox.stop()
        mailbox.waitUntilFinished()
        let peers = self.peers
        Task { await peers.stop() }
    }

    /// `stop()`, waiting for the peer listeners to close too (so the ports
    /// are free again when this returns).
    public func stopAndWait() async {
        await peers.stop()
        stop()
    }

    /// Returns once the member has stopped: after `stop()`, a storage
    /// error, or its removal from the cluster.
    public func waitUntilStopped() async {
        await mailbox.finished()
    }

    // MARK: - Manual-loop members (the simulation drives them on one thread)

    /// Whether the loop has something to do before its next tick.
    package var hasPendingInput: Bool { mailbox.hasPendingInput }

    /// One pass of the raft loop (input, a tick when due, every Ready).
    /// Returns false once the member has shut down.
    @discardableResult
    package func step() -> Bool {
        precondition(environment.manualLoop, "step() drives manual-loop members only")
        if mailbox.isFinished { return false }
        return loop.iterate()
    }

    /// Stop dead, as a `kill -9` would — nothing more is written and the
    /// backend's open batch is dropped.
    package func crash() {
        precondition(environment.manualLoop, "crash() is for manual-loop members")
        loop.crashed = true
        snapshotStreams.cancelAll()
        mailbox.stop()
        while step() {}
    }

    /// The index of the last entry in the store and the store's revision
    /// (consistent with each other when read on the loop's thread, as the
    /// simulation does: the state is a function of the log up to there).
    package func storeState() -> (index: UInt64, revision: Int64)? {
        guard let index = try? store.consistentIndex().index else { return nil }
        return (index, store.currentRevision)
    }

    // MARK: - Status

    /// The header every response carries.
    public func header(revision: Int64? = nil) -> Etcdserverpb_ResponseHeader {
        var header = Etcdserverpb_ResponseHeader()
        header.clusterID = clusterID
        header.memberID = memberID
        header.revision = revision ?? store.currentRevision
        header.raftTerm = mailbox.state.withLock { $0.status.term }
        return header
    }

    public struct RaftStatus: Sendable {
        public var term: UInt64
        public var leader: UInt64
        public var committedIndex: UInt64
        public var appliedIndex: UInt64
    }

    public func raftStatus() -> RaftStatus {
        mailbox.state.withLock {
            RaftStatus(term: $0.status.term, leader: $0.status.leader,
                       committedIndex: $0.status.committedIndex, appliedIndex: $0.status.appliedIndex)
        }
    }

    /// Whether this member is a learner (etcd refuses most client calls on one).
    public var isLearner: Bool { membership.isLearner(memberID) }

    public var backendSizeBytes: Int { backend.sizeBytes }
    public func backendSizeInUseBytes() -> Int { (try? backend.sizeInUseBytes()) ?? backend.sizeBytes }

    /// Requests applied from the message this member proposed as leader,
    /// and requests decoded from their raft entry.
    package var applyCounts: (fromMemory: Int, decoded: Int) {
        let status = mailbox.status
        return (status.appliedFromMemory, status.appliedDecoded)
    }

    /// How many ReadIndex rounds had to be asked again (no answer within
    /// `ReadIndexBatcher.retryInterval`).
    package var readIndexRetries: Int { mailbox.status.readIndexRetries }

    /// Ticks the raft loop has taken.
    package var ticks: Int { mailbox.status.ticks }

    /// Auto-compactions this member finished as leader (`--auto-compaction-*`).
    package var autoCompactions: Int { mailbox.status.autoCompactions }
}
