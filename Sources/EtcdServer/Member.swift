import Backend
import EtcdProto
import Foundation
import Lease
import Logging
import MVCC
import PeerTransport
import Raft
import SwiftProtobuf
import Synchronization
import WAL

/// A single etcd member: Raft, the WAL and the MVCC store, driven by one
/// dedicated thread (the *raft loop*).
///
/// The loop owns the `RawNode`, the WAL and every backend write — LMDB needs
/// its write transactions on one OS thread, so apply runs on the same thread
/// right after the entries are durable. Per iteration: take queued proposals
/// and read requests, tick on time, then for each `Ready`: append entries and
/// hard state to the WAL with one fsync, hand them to raft's storage, apply
/// committed entries to MVCC (the consistent index goes in the same backend
/// batch), answer waiting requests by id, `advance`. Many proposals ride one
/// fsync. Reads never enter the loop: serializable reads go to the store,
/// linearizable reads queue one ReadIndex per batch and wait for apply.
///
/// Leases (`Member+Lease.swift`) and watchers (`Member+Watch.swift`) are
/// fed by the same apply step: every write's events go to the lessor (key
/// attachments) and to the watchable store.
///
/// Peers (`Member+Peers.swift`): raft messages go out through the
/// `PeerTransport` (a leader sends before its own fsync, a follower after),
/// incoming ones are queued for the loop; a follower too far behind gets
/// the leader's backend as a snapshot.
public final class Member: Sendable {
    public let config: ServerConfig
    public let memberID: UInt64
    public let clusterID: UInt64
    let store: KVStore
    /// Watchers over `store`; the apply step notifies it of every write.
    public let watchable: WatchableStore
    let lessor: Lessor
    let leaseIDs: IDGenerator
    /// Clocks, network, WAL file system and loop driver (see `MemberEnvironment`).
    let environment: MemberEnvironment
    /// Where the monotonic time leases are measured from.
    let clockOrigin: ContinuousClock.Instant
    let backend: Backend
    let shared: Mutex<SharedState>
    /// The members as applied from the log.
    let membership = MembershipTable()
    /// Raft messages to and from the other members; it sends from the
    /// start and listens once `startPeers` is called.
    let peers: any RaftTransport
    let inbox: PeerInbox
    /// Ids of proposals, unique cluster-wide (a follower's proposal is
    /// applied by every member, and only its proposer may answer it).
    let requestIDs: IDGenerator
    /// etcd's request timeout: 5 s plus two election timeouts.
    let requestTimeout: Duration
    let wakeup = NSCondition()
    /// Set by the loop (holding `wakeup`'s lock) while it checks for input
    /// and sleeps; `signal` skips the lock and the wake-up otherwise.
    private let loopMaySleep = Atomic<Bool>(false)
    private let loopBox: LoopBox
    private let watchSyncThread: WatchSyncThread
    let logger: Logger

    /// Proposals waiting in line for the loop; bounded so a flood of writes
    /// gets a clear error instead of unbounded memory.
    static let maxQueuedProposals = 10_000

    struct Waiter {
        var complete: @Sendable (Result<ApplyResult, any Error>) -> Void
        var deadline: ContinuousClock.Instant
    }

    /// A request on its way to raft: its id, its encoding (an
    /// InternalRaftRequest's bytes), and the request itself, so that
    /// applying it on this member need not decode it again.
    struct QueuedProposal {
        var id: UInt64
        var data: Data
        var request: ProposedRequest
    }

    struct SharedState {
        var proposals: [QueuedProposal] = []
        var confChanges: [(id: UInt64, change: ConfChange)] = []
        var waiters: [UInt64: Waiter] = [:]
        var readIndexRetries = 0
        var readWaiters: [ReadWaiter] = []
        /// MoveLeader: hand leadership to this member.
        var transferTo: UInt64?
        /// From the peer transport, for the loop.
        var incoming: [Raft.Message] = []
        var unreachable: Set<UInt64> = []
        var snapshotReports: [(peer: UInt64, delivered: Bool)] = []
        var stopped = false
        /// The loop has shut down (tasks waiting in `waitUntilStopped`).
        var finished = false
        var stopWaiters: [CheckedContinuation<Void, Never>] = []
        /// On the leader, for MemberPromote: each learner's match index and
        /// the leader's last index.
        var learnerProgress: [UInt64: (match: UInt64, leaderLast: UInt64)] = [:]
        // Published by the loop for Status and headers.
        var term: UInt64 = 0
        var leader: UInt64 = 0
        var committedIndex: UInt64 = 0
        var appliedIndex: UInt64 = 0
    }

    /// A request as the member applies it: the KV writes on their own (so
    /// a proposal need not build an InternalRaftRequest), anything else as
    /// the InternalRaftRequest that carries it.
    enum ProposedRequest {
        case put(Etcdserverpb_PutRequest)
        case deleteRange(Etcdserverpb_DeleteRangeRequest)
        case txn(Etcdserverpb_TxnRequest)
        case other(Etcdserverpb_InternalRaftRequest)

        /// The request an entry carries (exactly one per entry).
        init(_ request: Etcdserverpb_InternalRaftRequest) {
            if request.hasPut {
                self = .put(request.put)
            } else if request.hasDeleteRange {
                self = .deleteRange(request.deleteRange)
            } else if request.hasTxn {
                self = .txn(request.txn)
            } else {
                self = .other(request)
            }
        }
    }

    /// What applying one request produced.
    public enum ApplyResult: Sendable {
        case put(Etcdserverpb_PutResponse)
        case deleteRange(Etcdserverpb_DeleteRangeResponse)
        case txn(Etcdserverpb_TxnResponse)
        case compaction(Etcdserverpb_CompactionResponse)
        case leaseGrant(Etcdserverpb_LeaseGrantResponse)
        case leaseRevoke(Etcdserverpb_LeaseRevokeResponse)
        case none
    }

    /// Opens (or creates) the data dir and starts the raft loop. A new data
    /// dir joins the cluster `--initial-cluster` describes; with
    /// `--initial-cluster-state existing` use `Member.join(config:)`, which
    /// asks the running members first.
    public convenience init(config: ServerConfig) throws {
        try self.init(config: config, joining: nil)
    }

    /// What a member joining a running cluster learned from it.
    struct JoinInfo {
        var memberID: UInt64
        var clusterID: UInt64
        var members: [MemberRecord]
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
        try self.init(config: config, joining: JoinInfo(memberID: memberID, clusterID: clusterID, members: members),
                      environment: environment)
    }

    init(config: ServerConfig, joining: JoinInfo?, environment: MemberEnvironment = .production) throws {
        self.config = config
        self.environment = environment
        self.logger = environment.logger ?? Logger(label: "etcd")
        let walFS = environment.walFileSystem
        let fm = FileManager.default
        try fm.createDirectory(atPath: config.snapDir, withIntermediateDirectories: true)
        try fm.createDirectory(atPath: URL(fileURLWithPath: config.walDir).deletingLastPathComponent().path, withIntermediateDirectories: true)

        // Which raft snapshot to continue from decides the backend file: a
        // received snapshot whose install was cut short is finished first.
        let snapshotter = Snapshotter(dir: config.snapDir)
        let walExists = WAL.exists(in: config.walDir, fs: walFS)
        var markers: [WALSnapshot] = []
        var snapshot: Raftpb_Snapshot?
        if walExists {
            markers = try WAL.validSnapshots(dir: config.walDir, fs: walFS)
            snapshot = try snapshotter.loadNewestAvailable(among: markers)
        }
        try Self.finishSnapshotInstall(config: config, snapshotIndex: snapshot?.metadata.index)

        var backendConfig = BackendConfig(quotaBytes: config.quotaBackendBytes)
        if let interval = environment.backendBatchIntervalMilliseconds { backendConfig.batchIntervalMilliseconds = interval }
        if let limit = environment.backendBatchLimitOps { backendConfig.batchLimitOps = limit }
        let backend = try Backend(path: config.backendPath, config: backendConfig)
        self.backend = backend
        let store = try KVStore(backend: backend)
        self.store = store
        self.watchable = WatchableStore(store: store)
        let lessor: Lessor
        do {
            // As etcd: an expired lease whose revoke got lost is retried after
            // a request timeout (5 s + two election timeouts).
            let retrySeconds = 5 + Int64(2 * config.electionTimeoutMilliseconds / 1000)
            lessor = try Lessor(backend: backend, config: LessorConfig(
                minTTLSeconds: config.minLeaseTTLSeconds, expiredRetrySeconds: retrySeconds))
        } catch {
            throw EtcdError(.dataLoss, "etcdserver: cannot load leases: \(error)")
        }
        lessor.restoreAttachments(store.restoredLeases)
        self.lessor = lessor
        self.clockOrigin = environment.now()
        requestTimeout = .seconds(5) + .milliseconds(2 * config.electionTimeoutMilliseconds)

        let storage = MemoryStorage()
        let wal: WAL
        var singleVoter = false
        if walExists {
            // Continue from the newest raft snapshot the WAL knows about, or
            // from the bootstrap marker at index 1 that a new cluster's
            // members write (a joining member has none: it starts empty and
            // gets a snapshot from the leader).
            let bootstrapMarker = markers.first { $0.index == 1 && $0.term == 1 }
            let marker = snapshot.map(WALSnapshot.init) ?? bootstrapMarker ?? WALSnapshot()
            wal = try WAL.open(dir: config.walDir, at: marker, segmentSizeBytes: environment.walSegmentSizeBytes, fs: walFS)
            let (metadata, hardState, entries) = try wal.readAll()
            let ids = try Etcdserverpb_Metadata(serializedBytes: metadata)
            memberID = ids.nodeID
            clusterID = ids.clusterID
            if let snapshot {
                try storage.applySnapshot(Raft.Snapshot(snapshot))
            } else if let bootstrapMarker {
                let voters = bootstrapMarker.confState.map { Raft.ConfState($0) } ?? Raft.ConfState(voters: [memberID])
                try storage.applySnapshot(Raft.Snapshot(metadata: SnapshotMetadata(confState: voters, index: 1, term: 1)))
            }
            try storage.append(entries.filter { $0.index > marker.index }.map(Raft.Entry.init))
            if hardState.term > 0 { storage.setHardState(Raft.HardState(hardState)) }
            try membership.load(from: backend)
        } else if let joining {
            memberID = joining.memberID
            clusterID = joining.clusterID
            var metadata = Etcdserverpb_Metadata()
            metadata.nodeID = memberID
            metadata.clusterID = clusterID
            wal = try WAL.create(dir: config.walDir, metadata: try metadata.serializedData(),
                                 segmentSizeBytes: environment.walSegmentSizeBytes, fs: walFS)
            // The member records come with the leader's snapshot; until then
            // the known members are what the cluster told us.
            for record in joining.members { try membership.save(record, to: backend) }
            try backend.forceCommit()
        } else {
            let initial = config.initialMembers
            memberID = MemberIdentity.memberID(peerURLs: config.initialAdvertisePeerURLs, clusterToken: config.initialClusterToken)
            clusterID = MemberIdentity.clusterID(memberIDs: initial.map(\.id))
            var metadata = Etcdserverpb_Metadata()
            metadata.nodeID = memberID
            metadata.clusterID = clusterID
            wal = try WAL.create(dir: config.walDir, metadata: try metadata.serializedData(),
                                 segmentSizeBytes: environment.walSegmentSizeBytes, fs: walFS)
            // The initial configuration is raft's snapshot at index 1, term 1
            // (every member of a new cluster writes the same one); the WAL
            // records it as a snapshot marker so the log continues at 2.
            let voters = initial.map(\.id).sorted()
            try RawNode.bootstrap(storage, voters: voters)
            for record in initial { try membership.save(record, to: backend) }
            try backend.setConsistentIndex(1, term: 1)
            try backend.forceCommit()
            try wal.saveSnapshot(WALSnapshot(index: 1, term: 1, confState: Raftpb_ConfState(Raft.ConfState(voters: voters))))
            try wal.save(hardState: Raftpb_HardState(Raft.HardState(term: 1, vote: 0, commit: 1)), entries: [], mustSync: true)
        }
        let confState = try storage.initialState().1
        singleVoter = confState.voters == [memberID] && confState.learners.isEmpty

        var raftConfig = Raft.Config(id: memberID, electionTick: config.electionTicks, heartbeatTick: 1, storage: storage)
        let snapshotIndex = try storage.snapshot().metadata.index
        let consistentIndex = try store.consistentIndex().index
        // Raft hands back every committed entry after the snapshot, as etcd
        // does: membership changes must reach raft's configuration again
        // (the snapshot's is older), while entries the backend already
        // holds are skipped by `skipThrough` (after an installed snapshot
        // the backend may even be ahead of the raft log). Starting raft past
        // them instead forgot every conf change since the last snapshot — a
        // restarted leader never replicated to a member added meanwhile
        // (found by the simulation).
        raftConfig.applied = snapshotIndex
        raftConfig.checkQuorum = true
        raftConfig.preVote = config.preVote
        raftConfig.randomSeed = memberID
        let node = try RawNode(config: raftConfig)
        var initialState = SharedState()
        initialState.appliedIndex = raftConfig.applied
        initialState.committedIndex = storage.hardState.commit
        initialState.term = storage.hardState.term
        shared = Mutex(initialState)
        leaseIDs = IDGenerator(memberID: memberID, nowMilliseconds: environment.wallMilliseconds())
        requestIDs = IDGenerator(memberID: memberID, nowMilliseconds: environment.wallMilliseconds())
        watchSyncThread = WatchSyncThread(store: watchable)
        var loopState = RaftLoopState(
            node: node, storage: storage, wal: wal, snapshotter: snapshotter,
            confState: confState, applied: raftConfig.applied,
            snapshotIndex: snapshotIndex, compactedTo: snapshotIndex
        )
        loopState.skipThrough = consistentIndex
        loopState.campaignAtStart = singleVoter
        loopState.nextTick = environment.now() + .milliseconds(config.heartbeatIntervalMilliseconds)
        loopBox = LoopBox(loopState)

        let inbox = PeerInbox()
        self.inbox = inbox
        let transportConfig = PeerTransportConfig(localID: memberID, clusterID: clusterID, snapshotDirectory: config.snapDir)
        peers = environment.makeTransport?(transportConfig, inbox) ?? PeerTransport(config: transportConfig, delegate: inbox)
        inbox.member = self
        for record in membership.members where record.id != memberID {
            peers.setPeer(id: record.id, urls: record.peerURLs)
        }

        if !environment.manualLoop {
            let thread = Thread { [self] in runLoop() }
            thread.name = "etcd-raft-loop"
            thread.start()
            watchSyncThread.start()
        }
    }

    /// Stops the loop, commits the backend and closes the files.
    /// Also waits when the loop already stopped on its own (after a storage
    /// error), so the files are closed when this returns — LMDB must never
    /// have the same file open twice in one process.
    public func stop() {
        if environment.manualLoop {
            shared.withLock { $0.stopped = true }
            while step() {}
            return
        }
        watchSyncThread.stop()
        shared.withLock { $0.stopped = true }
        signal()
        wakeup.lock()
        while !shared.withLock({ $0.finished }) { _ = wakeup.wait(until: Date().addingTimeInterval(0.05)) }
        wakeup.unlock()
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
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let finished = shared.withLock { state -> Bool in
                if state.finished { return true }
                state.stopWaiters.append(continuation)
                return false
            }
            if finished { continuation.resume() }
        }
    }

    // MARK: - Requests

    public func put(_ request: Etcdserverpb_PutRequest) async throws -> Etcdserverpb_PutResponse {
        try validate { try RequestValidation.check(request) }
        guard case let .put(response) = try await propose(.put(request)) else { throw EtcdError(.internal, "unexpected apply result") }
        return response
    }

    public func deleteRange(_ request: Etcdserverpb_DeleteRangeRequest) async throws -> Etcdserverpb_DeleteRangeResponse {
        try validate { try RequestValidation.check(request) }
        guard case let .deleteRange(response) = try await propose(.deleteRange(request)) else { throw EtcdError(.internal, "unexpected apply result") }
        return response
    }

    public func txn(_ request: Etcdserverpb_TxnRequest) async throws -> Etcdserverpb_TxnResponse {
        try validate { try RequestValidation.check(request, maxOperations: config.maxTxnOps) }
        if KVStore.isReadOnly(request) {
            try await linearizableBarrier()
            return try validate { try store.readOnlyTxn(request) }
        }
        guard case let .txn(response) = try await propose(.txn(request)) else { throw EtcdError(.internal, "unexpected apply result") }
        return response
    }

    public func compact(_ request: Etcdserverpb_CompactionRequest) async throws -> Etcdserverpb_CompactionResponse {
        var internalRequest = Etcdserverpb_InternalRaftRequest()
        internalRequest.compaction = request
        guard case let .compaction(response) = try await propose(.other(internalRequest)) else { throw EtcdError(.internal, "unexpected apply result") }
        return response
    }

    public func range(_ request: Etcdserverpb_RangeRequest) async throws -> Etcdserverpb_RangeResponse {
        try validate { try RequestValidation.check(request) }
        if !request.serializable { try await linearizableBarrier() }
        return try validate { try store.range(request) }
    }

    // MARK: - Requests with completions (the client API's hot path)

    /// As `put(_:)`, without a task: `completion` runs once, on the raft
    /// loop's thread once the entry is applied (or at once on a refusal).
    public func put(_ request: Etcdserverpb_PutRequest,
                    completion: @escaping @Sendable (Result<Etcdserverpb_PutResponse, any Error>) -> Void) {
        propose(.put(request), checking: { try RequestValidation.check(request) },
                as: { if case let .put(response) = $0 { response } else { nil } }, completion)
    }

    /// As `deleteRange(_:)`, with a completion (see `put(_:completion:)`).
    public func deleteRange(_ request: Etcdserverpb_DeleteRangeRequest,
                            completion: @escaping @Sendable (Result<Etcdserverpb_DeleteRangeResponse, any Error>) -> Void) {
        propose(.deleteRange(request), checking: { try RequestValidation.check(request) },
                as: { if case let .deleteRange(response) = $0 { response } else { nil } }, completion)
    }

    /// A txn that writes, with a completion (see `put(_:completion:)`).
    /// Read-only txns go through `readBarrier` and `readOnlyTxnNow` instead.
    public func writeTxn(_ request: Etcdserverpb_TxnRequest,
                         completion: @escaping @Sendable (Result<Etcdserverpb_TxnResponse, any Error>) -> Void) {
        propose(.txn(request), checking: { try checkTxn(request) },
                as: { if case let .txn(response) = $0 { response } else { nil } }, completion)
    }

    /// Checks, encodes and queues `request`; `completion` gets the applied
    /// result as `extract` reads it (nil: not the kind of result expected).
    private func propose<Response>(_ request: ProposedRequest, checking check: () throws -> Void,
                                   as extract: @escaping @Sendable (ApplyResult) -> Response?,
                                   _ completion: @escaping @Sendable (Result<Response, any Error>) -> Void) {
        let proposal: QueuedProposal
        do {
            try validate(check)
            proposal = try encodeProposal(request)
        } catch {
            return completion(.failure(error))
        }
        enqueueWaiter(proposal.id, { $0.proposals.append(proposal) }) { result in
            completion(result.flatMap { extract($0).map { .success($0) } ?? .failure(EtcdError(.internal, "unexpected apply result")) })
        }
    }

    /// The linearizable-read barrier with a completion: `done` runs (on the
    /// raft loop's thread) once everything committed before the call has
    /// been applied; reads queued together share one ReadIndex round.
    public func readBarrier(_ done: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        if environment.bugLocalLinearizableReads { return done(.success(())) }
        enqueueRead(done)
    }

    /// A range over what this member has applied, validated, without any
    /// barrier: a serializable read, or a linearizable one after `readBarrier`.
    public func rangeNow(_ request: Etcdserverpb_RangeRequest) throws -> Etcdserverpb_RangeResponse {
        try validate { try RequestValidation.check(request) }
        return try validate { try store.range(request) }
    }

    /// Checks a txn's shape and size (etcd's limits) before it is routed.
    public func checkTxn(_ request: Etcdserverpb_TxnRequest) throws {
        try validate { try RequestValidation.check(request, maxOperations: config.maxTxnOps) }
    }

    /// A read-only txn over what this member has applied (after `readBarrier`).
    public func readOnlyTxnNow(_ request: Etcdserverpb_TxnRequest) throws -> Etcdserverpb_TxnResponse {
        try validate { try store.readOnlyTxn(request) }
    }

    /// etcd's HashKV: a hash of the MVCC key space up to `revision` (0: now),
    /// equal on members with the same history.
    public func hashKV(revision: Int64) throws -> (hash: UInt32, compactRevision: Int64, hashRevision: Int64, currentRevision: Int64) {
        let (result, current) = try validate { try store.hashKV(revision) }
        return (result.hash, result.compactRevision, result.revision, current)
    }

    /// etcd's Hash: a hash over the whole backend.
    public func backendHash() throws -> (hash: UInt32, revision: Int64) {
        try validate { try store.hash() }
    }

    /// The header every response carries.
    public func header(revision: Int64? = nil) -> Etcdserverpb_ResponseHeader {
        var header = Etcdserverpb_ResponseHeader()
        header.clusterID = clusterID
        header.memberID = memberID
        header.revision = revision ?? store.currentRevision
        header.raftTerm = shared.withLock { $0.term }
        return header
    }

    public struct RaftStatus: Sendable {
        public var term: UInt64
        public var leader: UInt64
        public var committedIndex: UInt64
        public var appliedIndex: UInt64
    }

    public func raftStatus() -> RaftStatus {
        shared.withLock { RaftStatus(term: $0.term, leader: $0.leader, committedIndex: $0.committedIndex, appliedIndex: $0.appliedIndex) }
    }

    public var backendSizeBytes: Int { backend.sizeBytes }
    public func backendSizeInUseBytes() -> Int { (try? backend.sizeInUseBytes()) ?? backend.sizeBytes }

    // MARK: - Proposals and reads

    /// Proposes `request` and waits until it is applied.
    func propose(_ request: ProposedRequest) async throws -> ApplyResult {
        let proposal = try encodeProposal(request)
        return try await waitForApply(proposal.id) { $0.proposals.append(proposal) }
    }

    /// Gives `request` its cluster-wide id and encodes it as an
    /// InternalRaftRequest — a KV write through its narrow message (see
    /// `ProposalMessage`) —, refusing it when the member has stopped, the
    /// queue is full or it is too large.
    private func encodeProposal(_ request: ProposedRequest) throws -> QueuedProposal {
        let encoded: (id: UInt64, data: Data)
        var applied = request
        switch request {
        case .put(let put):
            var message = Etcdswiftpb_PutProposal()
            message.put = put
            encoded = try identified(&message)
        case .deleteRange(let delete):
            var message = Etcdswiftpb_DeleteRangeProposal()
            message.deleteRange = delete
            encoded = try identified(&message)
        case .txn(let txn):
            var message = Etcdswiftpb_TxnProposal()
            message.txn = txn
            encoded = try identified(&message)
        case .other(var other):
            // Rare requests (leases, compaction, membership): setting the id
            // copies the message's storage once; the copy is what is applied.
            encoded = try identified(&other)
            applied = .other(other)
        }
        return QueuedProposal(id: encoded.id, data: encoded.data, request: applied)
    }

    /// Sets a fresh id in `message` (in both places etcd does) and encodes it.
    private func identified<Message: ProposalMessage>(_ message: inout Message) throws -> (id: UInt64, data: Data) {
        try shared.withLock { state in
            if state.stopped { throw EtcdError.stopped }
            if state.proposals.count >= Self.maxQueuedProposals { throw EtcdError.timeout }
        }
        let id = requestIDs.next()
        message.id = id
        var header = Etcdserverpb_RequestHeader()
        header.id = id
        message.header = header
        let data = try message.serializedData()
        if data.count > config.maxRequestBytes { throw EtcdError.requestTooLarge }
        return (id, data)
    }

    /// Proposes a membership change and waits until it is applied.
    func proposeConfChange(_ change: ConfChange) async throws {
        if shared.withLock({ $0.stopped }) { throw EtcdError.stopped }
        let change = identified(change)
        _ = try await waitForApply(change.id) { $0.confChanges.append((change.id, change)) }
    }

    /// Manual-loop members: propose a membership change; `completion`
    /// runs on the driving thread once it is applied, fails or times out.
    package func submitConfChange(_ change: ConfChange,
                                  completion: @escaping @Sendable (Result<ApplyResult, any Error>) -> Void) {
        let change = identified(change)
        enqueueWaiter(change.id, { $0.confChanges.append((change.id, change)) }, completion)
    }

    private func identified(_ change: ConfChange) -> ConfChange {
        var change = change
        change.id = requestIDs.next()
        return change
    }

    /// Registers a waiter for request `id`, queues the request with
    /// `enqueue` and waits for its result (or etcd's request timeout, which
    /// the loop enforces on its ticks).
    private func waitForApply(_ id: UInt64, _ enqueue: (inout SharedState) -> Void) async throws -> ApplyResult {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                enqueueWaiter(id, enqueue) { continuation.resume(with: $0) }
            }
        } onCancel: {
            // The entry may still commit; the caller just stops waiting.
            let waiter = shared.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.complete(.failure(CancellationError()))
        }
    }

    /// Registers `complete` as the waiter for request `id` and queues the
    /// request with `enqueue`; `complete` runs once, on the loop's thread
    /// (or at once when the member has stopped).
    private func enqueueWaiter(_ id: UInt64, _ enqueue: (inout SharedState) -> Void,
                               _ complete: @escaping @Sendable (Result<ApplyResult, any Error>) -> Void) {
        let deadline = environment.now() + requestTimeout
        let accepted = shared.withLock { state -> Bool in
            if state.stopped { return false }
            state.waiters[id] = Waiter(complete: complete, deadline: deadline)
            enqueue(&state)
            return true
        }
        if accepted { signal() } else { complete(.failure(EtcdError.stopped)) }
    }

    /// Returns once everything committed before the call has been applied:
    /// reads queued together share one ReadIndex round.
    private func linearizableBarrier() async throws {
        if environment.bugLocalLinearizableReads { return }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            enqueueRead { continuation.resume(with: $0) }
        }
    }

    private func enqueueRead(_ done: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        let accepted = shared.withLock { state -> Bool in
            if state.stopped { return false }
            state.readWaiters.append(ReadWaiter(done: done))
            return true
        }
        if accepted { signal() } else { done(.failure(EtcdError.stopped)) }
    }

    /// Wakes the loop after input was queued in `shared`. The loop raises
    /// `loopMaySleep` before it looks at `shared` (under that lock), so if
    /// the flag reads false here the loop will still see this input; when
    /// it reads true, taking `wakeup`'s lock waits until the loop is really
    /// waiting, and the signal goes out after the unlock so the loop does
    /// not wake only to block on the lock this thread still holds.
    func signal() {
        guard loopMaySleep.load(ordering: .relaxed) else { return }
        wakeup.lock()
        wakeup.unlock()
        wakeup.signal()
    }

    private func validate<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as MVCCError { throw EtcdError(error) }
    }

    // MARK: - The raft loop (runs on its own thread)

    private func runLoop() {
        while true {
            wakeup.lock()
            loopMaySleep.store(true, ordering: .relaxed)
            if !hasPendingInput {
                let wait = loopBox.withState { $0.nextTick } - environment.now()
                _ = wakeup.wait(until: Date().addingTimeInterval(max(0, wait.secondsDouble)))
            }
            loopMaySleep.store(false, ordering: .relaxed)
            wakeup.unlock()
            if !iterate() { return }
        }
    }

    /// Whether the loop has something to do before its next tick.
    package var hasPendingInput: Bool {
        shared.withLock {
            !($0.proposals.isEmpty && $0.readWaiters.isEmpty && $0.incoming.isEmpty && $0.confChanges.isEmpty
                && $0.unreachable.isEmpty && $0.snapshotReports.isEmpty && $0.transferTo == nil && !$0.stopped)
        }
    }

    /// Manual-loop members: one pass of the raft loop (input, a tick when
    /// due, every Ready). Returns false once the member has shut down.
    @discardableResult
    package func step() -> Bool {
        precondition(environment.manualLoop, "step() drives manual-loop members only")
        if shared.withLock({ $0.finished }) { return false }
        return iterate()
    }

    /// Manual-loop members: stop dead, as a `kill -9` would — nothing more
    /// is written and the backend's open batch is dropped.
    package func crash() {
        precondition(environment.manualLoop, "crash() is for manual-loop members")
        loopBox.withState { $0.crashed = true }
        shared.withLock { $0.stopped = true }
        while step() {}
    }

    /// Manual-loop members: propose `request` (its id is set here);
    /// `completion` runs on the driving thread once it is applied, fails or
    /// times out.
    package func submit(_ request: Etcdserverpb_InternalRaftRequest,
                        completion: @escaping @Sendable (Result<ApplyResult, any Error>) -> Void) {
        do {
            let proposal = try encodeProposal(ProposedRequest(request))
            enqueueWaiter(proposal.id, { $0.proposals.append(proposal) }, completion)
        } catch {
            completion(.failure(error))
        }
    }

    /// Manual-loop members: `done` runs once a linearizable read may be
    /// served from the store (everything committed before the call is applied).
    package func submitReadBarrier(_ done: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        if environment.bugLocalLinearizableReads { return done(.success(())) }
        enqueueRead(done)
    }

    /// The index of the last entry in the store and the store's revision
    /// (consistent with each other when read on the loop's thread, as the
    /// simulation does: the state is a function of the log up to there).
    package func storeState() -> (index: UInt64, revision: Int64)? {
        guard let index = try? store.consistentIndex().index else { return nil }
        return (index, store.currentRevision)
    }

    /// One pass of the loop; false once the member has shut down.
    private func iterate() -> Bool {
        let input = shared.withLock { state in
            defer {
                state.proposals.removeAll(keepingCapacity: true)
                state.readWaiters.removeAll(keepingCapacity: true)
                state.incoming.removeAll(keepingCapacity: true)
                state.confChanges.removeAll()
                state.unreachable.removeAll()
                state.snapshotReports.removeAll()
                state.transferTo = nil
            }
            return LoopInput(proposals: state.proposals, confChanges: state.confChanges, reads: state.readWaiters,
                             incoming: state.incoming, unreachable: state.unreachable,
                             snapshotReports: state.snapshotReports, transferTo: state.transferTo, stopped: state.stopped)
        }
        if input.stopped {
            for read in input.reads { read.resume(throwing: EtcdError.stopped) }
            shutDown()
            return false
        }
        loopBox.withState { loop in
            // A single voter elects itself at once instead of waiting a timeout.
            if loop.campaignAtStart {
                loop.campaignAtStart = false
                try? loop.node.campaign()
            }
            for message in input.incoming { stepPeerMessage(message, &loop) }
            for peer in input.unreachable { loop.node.reportUnreachable(peer) }
            for report in input.snapshotReports { loop.node.reportSnapshot(report.peer, status: report.delivered ? .finish : .failure) }
            let now = environment.now()
            if now >= loop.nextTick {
                loop.node.tick()
                loop.nextTick = now + .milliseconds(config.heartbeatIntervalMilliseconds)
                proposeLeaseMaintenance(&loop)
                expireRequests(&loop)
            }
            if let target = input.transferTo, loop.node.role == .leader { loop.node.transferLeadership(to: target) }
            if !input.proposals.isEmpty {
                let lastBefore = loop.node.lastIndex
                do {
                    try loop.node.propose(batch: input.proposals.map(\.data))
                    // On the leader they now sit at the end of the log: remember
                    // which request is at which index, for apply.
                    if loop.node.role == .leader, loop.node.lastIndex == lastBefore + UInt64(input.proposals.count) {
                        for (offset, proposal) in input.proposals.enumerated() {
                            loop.proposedHere[lastBefore + 1 + UInt64(offset)] = (proposal.id, proposal.data, proposal.request)
                        }
                    }
                } catch {
                    for proposal in input.proposals {
                        complete(proposal.id, .failure(loop.node.lead == 0 ? EtcdError.noLeader : EtcdError.timeout))
                    }
                }
            }
            for change in input.confChanges {
                do { try loop.node.proposeConfChange(change.change) } catch {
                    complete(change.id, .failure(loop.node.lead == 0 ? EtcdError.noLeader : EtcdError.timeout))
                }
            }
            if !input.reads.isEmpty {
                if loop.node.lead == 0 {
                    for read in input.reads { read.resume(throwing: EtcdError.noLeader) }
                } else {
                    loop.readBatch += 1
                    let context = Self.readContext(member: memberID, batch: loop.readBatch)
                    loop.pendingReads[context] = PendingRead(deadline: now + requestTimeout, waiters: input.reads, askedAt: now)
                    loop.node.readIndex(context)
                }
            }
            do {
                try processReadies(&loop)
                let failpoints = config.failpoints
                if backend.pendingWriteCount > 0 { failpoints.hit(.beforeBackendCommit) }
                if try backend.commitIfDue() { failpoints.hit(.afterBackendCommit) }
                if store.hasPendingCompaction {
                    failpoints.hit(.midCompaction)
                    _ = try store.compactionStep()
                }
            } catch {
                fatalStop(loop: &loop, error)
            }
        }
        return true
    }

    static let readIndexRetry: Duration = .milliseconds(500)

    /// A ReadIndex round's context: unique in the cluster, not only on this
    /// member — the leader keeps one pending request per context and
    /// ignores a second with the same bytes, so two followers counting from
    /// the same number would leave one of them waiting for the retry.
    static func readContext(member: UInt64, batch: UInt64) -> Data {
        var context = Data(count: 16)
        context.withUnsafeMutableBytes { bytes in
            bytes.storeBytes(of: member.bigEndian, as: UInt64.self)
            bytes.storeBytes(of: batch.bigEndian, toByteOffset: 8, as: UInt64.self)
        }
        return context
    }

    /// Requests applied from the message this member proposed as leader,
    /// and requests decoded from their raft entry.
    package var applyCounts: (fromMemory: Int, decoded: Int) {
        loopBox.withState { ($0.appliedFromMemory, $0.appliedDecoded) }
    }

    /// How many ReadIndex rounds had to be asked again (no answer within
    /// `readIndexRetry`).
    package var readIndexRetries: Int { shared.withLock { $0.readIndexRetries } }

    struct LoopInput {
        var proposals: [QueuedProposal]
        var confChanges: [(id: UInt64, change: ConfChange)]
        var reads: [ReadWaiter]
        var incoming: [Raft.Message]
        var unreachable: Set<UInt64>
        var snapshotReports: [(peer: UInt64, delivered: Bool)]
        var transferTo: UInt64?
        var stopped: Bool
    }

    /// On every tick: requests older than the request timeout get etcd's
    /// `request timed out` (a proposal lost in a leader change, a read whose
    /// ReadIndex round never came back).
    private func expireRequests(_ loop: inout RaftLoopState) {
        let now = environment.now()
        let expired = shared.withLock { state -> [Waiter] in
            guard state.waiters.values.contains(where: { $0.deadline <= now }) else { return [] }
            var expired: [Waiter] = []
            state.waiters = state.waiters.filter { _, waiter in
                if waiter.deadline <= now { expired.append(waiter); return false }
                return true
            }
            return expired
        }
        for waiter in expired { waiter.complete(.failure(EtcdError.timeout)) }
        for (context, pending) in loop.pendingReads {
            if pending.deadline <= now {
                loop.pendingReads[context] = nil
                for waiter in pending.waiters { waiter.resume(throwing: EtcdError.timeout) }
            } else if now - pending.askedAt >= Self.readIndexRetry, loop.node.lead != 0 {
                // The request or its answer was lost (a dropped message, a
                // leader change): ask again, as etcd does every 500 ms.
                loop.pendingReads[context]?.askedAt = now
                shared.withLock { $0.readIndexRetries += 1 }
                loop.node.readIndex(context)
            }
        }
        loop.readsWaitingForApply.removeAll { pending in
            guard pending.deadline <= now else { return false }
            for waiter in pending.waiters { waiter.resume(throwing: EtcdError.timeout) }
            return true
        }
    }

    private func processReadies(_ loop: inout RaftLoopState) throws {
        while loop.node.hasReady {
            let ready = loop.node.ready()
            // A leader sends while it persists (its own entries count once
            // durable, in a later Ready); everyone else only once durable.
            let leading = loop.node.role == .leader
            let failpoints = config.failpoints
            if leading { send(ready.messages, &loop) }
            if let snapshot = ready.snapshot {
                try loop.snapshotter.save(Raftpb_Snapshot(snapshot))
                try loop.wal.saveSnapshot(WALSnapshot(Raftpb_Snapshot(snapshot)))
            }
            if ready.hardState != nil || !ready.entries.isEmpty {
                let hardState = ready.hardState ?? loop.lastHardState
                failpoints.hit(.beforeWALSave)
                // After a snapshot the hard state's commit must be durable
                // too: a restart only trusts snapshot markers at or below it,
                // and the leader already counts this member as holding the
                // snapshot (found by the simulation: without the fsync a
                // crash right after an install restarted from the old log).
                try loop.wal.save(hardState: Raftpb_HardState(hardState), entries: ready.entries.map(Raftpb_Entry.init),
                                  mustSync: ready.mustSync || ready.snapshot != nil)
                failpoints.hit(.afterWALSave)
                if let state = ready.hardState { loop.storage.setHardState(state); loop.lastHardState = state }
            }
            if let snapshot = ready.snapshot {
                try loop.storage.applySnapshot(snapshot)
                failpoints.hit(.beforeApplySnapshot)
                try installSnapshot(snapshot, &loop)
                failpoints.hit(.afterApplySnapshot)
            }
            if !ready.entries.isEmpty {
                try loop.storage.append(ready.entries)
                try crashIfAsked(.afterWALAppend, reached: ready.entries.last?.index ?? 0, &loop)
            }
            if !leading { send(ready.messages, &loop) }
            for entry in ready.committedEntries { try apply(entry, &loop) }
            try crashIfAsked(.afterApplyBeforeBackendCommit, reached: loop.applied, &loop)
            for readState in ready.readStates {
                if let pending = loop.pendingReads.removeValue(forKey: readState.requestContext) {
                    loop.readsWaitingForApply.append((readState.index, pending.deadline, pending.waiters))
                }
            }
            loop.node.advance(ready)
            releaseReads(&loop)
            publish(loop)
            followLeadership(&loop)
            if loop.removed { break }
        }
        if loop.removed {
            logger.warning("the member has been permanently removed from the cluster", metadata: [
                "local-member-id": "\(String(memberID, radix: 16))"])
            shared.withLock { $0.stopped = true }
            return
        }
        if loop.applied >= loop.snapshotIndex + config.snapshotCount { try takeSnapshot(&loop) }
    }


    /// Every `--snapshot-count` applied entries: make the backend durable up
    /// to `applied`, record a raft snapshot (file + WAL marker), then release
    /// the WAL segments and in-memory entries it covers. The snapshot carries
    /// no data: the backend is the state, and its consistent index says how
    /// far it goes.
    private func takeSnapshot(_ loop: inout RaftLoopState) throws {
        try backend.forceCommit()
        try backend.sync()
        let snapshot = try loop.storage.createSnapshot(index: loop.applied, confState: loop.confState, data: Data())
        try loop.snapshotter.save(Raftpb_Snapshot(snapshot))
        try loop.wal.saveSnapshot(WALSnapshot(Raftpb_Snapshot(snapshot)))
        try loop.wal.release(below: snapshot.metadata.index)
        loop.snapshotIndex = snapshot.metadata.index
        if snapshot.metadata.index > loop.compactedTo + config.snapshotCatchUpEntries {
            let target = snapshot.metadata.index - config.snapshotCatchUpEntries
            try loop.storage.compact(target)
            loop.compactedTo = target
        }
        loop.snapshotter.prune(keeping: Self.retainedSnapshotFiles)
    }

    static let retainedSnapshotFiles = 5

    private func releaseReads(_ loop: inout RaftLoopState) {
        guard !loop.readsWaitingForApply.isEmpty else { return }
        loop.readsWaitingForApply.removeAll { pending in
            guard pending.index <= loop.applied else { return false }
            for waiter in pending.waiters { waiter.resume() }
            return true
        }
    }

    /// Publishes term, leader and indexes for Status and headers: cheap
    /// accessors on every Ready, the full status only while learners exist.
    private func publish(_ loop: RaftLoopState) {
        var learners: [UInt64: (match: UInt64, leaderLast: UInt64)] = [:]
        if !loop.confState.learners.isEmpty, let last = try? loop.storage.lastIndex() {
            let status = loop.node.status()
            for id in loop.confState.learners { if let progress = status.progress[id] { learners[id] = (progress.match, last) } }
        }
        let (term, leader, committed) = (loop.node.term, loop.node.lead, loop.node.committedIndex)
        shared.withLock { state in
            state.term = term
            state.leader = leader
            state.committedIndex = committed
            state.appliedIndex = loop.applied
            state.learnerProgress = learners
        }
    }

    private func apply(_ entry: Raft.Entry, _ loop: inout RaftLoopState) throws {
        defer { loop.applied = entry.index }
        // The backend already holds this entry (it came with a snapshot
        // newer than raft's); only raft's own membership must still follow.
        let alreadyApplied = entry.index <= loop.skipThrough
        switch entry.type {
        case .normal:
            let local = loop.proposedHere.removeValue(forKey: entry.index)
            if alreadyApplied { return }
            guard !entry.data.isEmpty else {
                try backend.setConsistentIndex(entry.index, term: entry.term)
                return
            }
            let id: UInt64, request: ProposedRequest
            if let local, local.data == entry.data {
                // Proposed here, and the entry is still that proposal (a new
                // leader may have put another at this index): no decoding.
                (id, request) = (local.id, local.request)
                loop.appliedFromMemory += 1
            } else {
                loop.appliedDecoded += 1
                do {
                    let decoded = try Etcdserverpb_InternalRaftRequest(serializedBytes: entry.data)
                    (id, request) = (decoded.id, ProposedRequest(decoded))
                } catch {
                    throw EtcdError(.dataLoss, "etcdserver: cannot decode raft entry \(entry.index): \(error)")
                }
            }
            let result = try applyRequest(request)
            try backend.setConsistentIndex(entry.index, term: entry.term)
            complete(id, result)
        case .confChange, .confChangeV2:
            let change = try ProtobufConfChangeCodec().decode(entry)
            loop.confState = try loop.node.applyConfChange(change.asV2)
            if alreadyApplied { return }
            if case let .v1(single) = change {
                if try applyMembership(single) { loop.removed = true }
            }
            try backend.setConsistentIndex(entry.index, term: entry.term)
            if case let .v1(single) = change { complete(single.id, .success(.none)) }
        }
    }

    /// Applies one request to the state machines. Errors of the request
    /// (a failed compare, an unknown lease, ...) are its result; a backend
    /// failure is thrown and stops the member.
    private func applyRequest(_ proposed: ProposedRequest) throws -> Result<ApplyResult, EtcdError> {
        let leaseExists: (Int64) -> Bool = { [lessor] in lessor.contains($0) }
        do {
            let request: Etcdserverpb_InternalRaftRequest
            switch proposed {
            case .put(let put): return .success(.put(try published(store.put(put, leaseExists: leaseExists))))
            case .deleteRange(let delete): return .success(.deleteRange(try published(store.deleteRange(delete))))
            case .txn(let txn): return .success(.txn(try published(store.txn(txn, leaseExists: leaseExists))))
            case .other(let other): request = other
            }
            if request.hasCompaction {
                let response = try store.compact(request.compaction.revision)
                if request.compaction.physical { try store.finishCompaction() }
                return .success(.compaction(response))
            } else if request.hasLeaseGrant || request.hasLeaseRevoke || request.hasLeaseCheckpoint {
                return try applyLease(request)
            } else if request.hasClusterMemberAttrSet {
                try applyMemberAttributes(request.clusterMemberAttrSet)
                return .success(.none)
            }
            return .failure(EtcdError(.unimplemented, "etcdserver: request type not supported yet"))
        } catch {
            if case .backend = error { throw error }
            return .failure(EtcdError(error))
        }
    }

    /// Hands a write's events to the lessor and the watchers; returns its response.
    func published<R>(_ write: WriteResult<R>) -> R {
        if !write.events.isEmpty {
            lessor.apply(events: write.events)
            watchable.notify(write.events, revision: write.revision)
            environment.observeApply?(memberID, write.revision, write.events)
        }
        return write.response
    }

    private func complete(_ id: UInt64, _ result: Result<ApplyResult, EtcdError>) {
        guard let waiter = shared.withLock({ $0.waiters.removeValue(forKey: id) }) else { return }
        waiter.complete(result.mapError { $0 as any Error })
    }

    /// A storage error in the loop: nothing more can be made durable, so the
    /// member stops and every waiter gets an error (the WAL keeps what was
    /// acknowledged).
    private func fatalStop(loop: inout RaftLoopState, _ error: any Error) {
        if !(error is SimulatedCrash) { logger.error("stopping after storage error", metadata: ["error": "\(error)"]) }
        shared.withLock { $0.stopped = true }
    }

    /// Test seam: stop dead at a point of the write path, as a `kill -9` there
    /// would — nothing more is written, the backend batch is dropped.
    private func crashIfAsked(_ point: CrashPoint, reached index: UInt64, _ loop: inout RaftLoopState) throws {
        guard let crash = config.crashForTesting, crash.point == point, index >= crash.atIndex else { return }
        loop.crashed = true
        throw SimulatedCrash()
    }

    private func shutDown() {
        let (waiters, reads) = shared.withLock { state in
            defer { state.waiters.removeAll(); state.readWaiters.removeAll() }
            return (Array(state.waiters.values), state.readWaiters)
        }
        for waiter in waiters { waiter.complete(.failure(EtcdError.stopped)) }
        for read in reads { read.resume(throwing: EtcdError.stopped) }
        loopBox.withState { loop in
            for (_, pending) in loop.pendingReads { for waiter in pending.waiters { waiter.resume(throwing: EtcdError.stopped) } }
            for pending in loop.readsWaitingForApply { for waiter in pending.waiters { waiter.resume(throwing: EtcdError.stopped) } }
            loop.pendingReads.removeAll()
            loop.readsWaitingForApply.removeAll()
            if loop.crashed {
                loop.wal.close()
                backend.abandon()
            } else {
                try? loop.wal.sync()
                loop.wal.close()
                try? backend.forceCommit()
                try? backend.close()
            }
        }
        let stopWaiters = shared.withLock { state in
            state.finished = true
            state.stopped = true
            defer { state.stopWaiters.removeAll() }
            return state.stopWaiters
        }
        for waiter in stopWaiters { waiter.resume() }
        // Wake `stop()`, which waits on the same condition.
        wakeup.lock()
        wakeup.broadcast()
        wakeup.unlock()
    }
}

/// Points of the write path where tests simulate a crash.
enum CrashPoint: Sendable {
    /// Entries are fsynced in the WAL but not yet applied.
    case afterWALAppend
    /// Entries are applied to the backend batch, which is not yet committed.
    case afterApplyBeforeBackendCommit
}

struct SimulatedCrash: Error {}

/// State only the raft loop thread touches.
struct RaftLoopState {
    var node: RawNode
    let storage: MemoryStorage
    let wal: WAL
    let snapshotter: Snapshotter
    var confState: Raft.ConfState
    var applied: UInt64
    var snapshotIndex: UInt64
    var compactedTo: UInt64
    var lastHardState = Raft.HardState()
    /// Set by a simulated crash: shut down without committing anything.
    var crashed = false
    var readBatch: UInt64 = 0
    var pendingReads: [Data: PendingRead] = [:]
    var readsWaitingForApply: [(index: UInt64, deadline: ContinuousClock.Instant, waiters: [ReadWaiter])] = []
    /// When the loop ticks next.
    var nextTick: ContinuousClock.Instant = .now
    /// Entries up to here are in the backend already (after an installed
    /// snapshot the backend can be ahead of raft's log).
    var skipThrough: UInt64 = 0
    /// A single voter campaigns at once on start.
    var campaignAtStart = false
    /// Requests this member proposed as leader, by the log index they got,
    /// until applied (bounded by the uncommitted log).
    var proposedHere: [UInt64: (id: UInt64, data: Data, request: Member.ProposedRequest)] = [:]
    /// Requests applied from `proposedHere`, and decoded from their entry.
    var appliedFromMemory = 0
    var appliedDecoded = 0
    /// This member applied its own removal.
    var removed = false
    /// Whether this member led at the last look (leases are promoted and
    /// demoted on the change).
    var isLeader = false
}

/// Linearizable reads waiting for their ReadIndex round.
struct PendingRead {
    var deadline: ContinuousClock.Instant
    var waiters: [ReadWaiter]
    /// When the ReadIndex request last went out (a lost one is asked again).
    var askedAt: ContinuousClock.Instant
}

/// A linearizable read waiting for the store to catch up.
struct ReadWaiter: Sendable {
    let done: @Sendable (Result<Void, any Error>) -> Void
    func resume() { done(.success(())) }
    func resume(throwing error: any Error) { done(.failure(error)) }
}

/// Holds the loop's state; only the raft loop thread uses it, so access is
/// not synchronised beyond what a single thread needs.
final class LoopBox: @unchecked Sendable {
    private var state: RaftLoopState
    init(_ state: RaftLoopState) { self.state = state }
    func withState<T>(_ body: (inout RaftLoopState) throws -> T) rethrows -> T { try body(&state) }
}

extension EtcdError {
    init(_ error: MVCCError) {
        switch error {
        case .compacted: self = .compacted
        case .futureRevision: self = .futureRevision
        case .duplicateKey: self = .duplicateKey
        case .keyNotFound: self = .keyNotFound
        case .emptyKey: self = .emptyKey
        case .tooManyOperations: self = .tooManyOps
        case .valueProvided: self = .valueProvided
        case .leaseProvided: self = .leaseProvided
        case .leaseNotFound: self = .leaseNotFound
        case .backend(.quotaExceeded): self = .noSpace
        case .backend, .corruptEntry: self = EtcdError(.internal, error.message)
        }
    }
}

/// A message proposed through raft: an InternalRaftRequest, or one of the
/// narrow KV proposals (`Protos/etcdswiftpb/proposal.proto`) that encode to
/// the same bytes. The member sets the id in both places etcd does.
protocol ProposalMessage: SwiftProtobuf.Message {
    var id: UInt64 { get set }
    var header: Etcdserverpb_RequestHeader { get set }
}

extension Etcdserverpb_InternalRaftRequest: ProposalMessage {}
extension Etcdswiftpb_PutProposal: ProposalMessage {}
extension Etcdswiftpb_DeleteRangeProposal: ProposalMessage {}
extension Etcdswiftpb_TxnProposal: ProposalMessage {}
