import Backend
import EtcdProto
import Foundation
import Lease
import Logging
import MVCC
import Raft
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
/// Scope today: one member (no peers).
public final class Member: Sendable {
    public let config: ServerConfig
    public let memberID: UInt64
    public let clusterID: UInt64
    let store: KVStore
    /// Watchers over `store`; the apply step notifies it of every write.
    public let watchable: WatchableStore
    let lessor: Lessor
    let leaseIDs: IDGenerator
    /// The monotonic time leases are measured in.
    let clock = ContinuousClock()
    let clockOrigin: ContinuousClock.Instant
    let backend: Backend
    let shared: Mutex<SharedState>
    private let wakeup = NSCondition()
    private let finished = Mutex<Bool>(false)
    private let loopBox: LoopBox
    private let watchSyncThread: WatchSyncThread
    let logger = Logger(label: "etcd")

    /// Proposals waiting in line for the loop; bounded so a flood of writes
    /// gets a clear error instead of unbounded memory.
    static let maxQueuedProposals = 10_000

    struct SharedState {
        var proposals: [(id: UInt64, data: Data)] = []
        var waiters: [UInt64: CheckedContinuation<ApplyResult, any Error>] = [:]
        var readWaiters: [CheckedContinuation<Void, any Error>] = []
        var nextRequestID: UInt64 = 1
        var stopped = false
        // Published by the loop for Status and headers.
        var term: UInt64 = 0
        var leader: UInt64 = 0
        var committedIndex: UInt64 = 0
        var appliedIndex: UInt64 = 0
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

    /// Opens (or creates) the data dir and starts the raft loop.
    public init(config: ServerConfig) throws {
        self.config = config
        let fm = FileManager.default
        try fm.createDirectory(atPath: config.snapDir, withIntermediateDirectories: true)
        try fm.createDirectory(atPath: URL(fileURLWithPath: config.walDir).deletingLastPathComponent().path, withIntermediateDirectories: true)
        let backend = try Backend(path: config.backendPath, config: BackendConfig(quotaBytes: config.quotaBackendBytes))
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
        self.clockOrigin = clock.now

        let storage = MemoryStorage()
        let wal: WAL
        let snapshotter = Snapshotter(dir: config.snapDir)
        if WAL.exists(in: config.walDir) {
            // Continue from the newest raft snapshot the WAL knows about, or
            // from the bootstrap marker at index 1 that `create` wrote below.
            let markers = try WAL.validSnapshots(dir: config.walDir)
            let snapshot = try snapshotter.loadNewestAvailable(among: markers)
            let marker = snapshot.map(WALSnapshot.init) ?? WALSnapshot(index: 1, term: 1)
            wal = try WAL.open(dir: config.walDir, at: marker)
            let (metadata, hardState, entries) = try wal.readAll()
            let ids = try Etcdserverpb_Metadata(serializedBytes: metadata)
            memberID = ids.nodeID
            clusterID = ids.clusterID
            if let snapshot {
                try storage.applySnapshot(Raft.Snapshot(snapshot))
            } else {
                try RawNode.bootstrap(storage, voters: [memberID])
            }
            try storage.append(entries.filter { $0.index > marker.index }.map(Raft.Entry.init))
            if hardState.term > 0 { storage.setHardState(Raft.HardState(hardState)) }
        } else {
            memberID = MemberIdentity.memberID(peerURLs: config.initialAdvertisePeerURLs, clusterToken: config.initialClusterToken)
            clusterID = MemberIdentity.clusterID(memberIDs: [memberID])
            var metadata = Etcdserverpb_Metadata()
            metadata.nodeID = memberID
            metadata.clusterID = clusterID
            wal = try WAL.create(dir: config.walDir, metadata: try metadata.serializedData())
            // The initial configuration is raft's snapshot at index 1, term 1;
            // the WAL records it as a snapshot marker so the log continues at 2.
            try RawNode.bootstrap(storage, voters: [memberID])
            try wal.saveSnapshot(WALSnapshot(index: 1, term: 1, confState: Raftpb_ConfState(Raft.ConfState(voters: [memberID]))))
            try wal.save(hardState: Raftpb_HardState(Raft.HardState(term: 1, vote: 0, commit: 1)), entries: [], mustSync: true)
        }

        var raftConfig = Raft.Config(id: memberID, electionTick: config.electionTicks, heartbeatTick: 1, storage: storage)
        let snapshotIndex = try storage.snapshot().metadata.index
        raftConfig.applied = max(snapshotIndex, try store.consistentIndex().index)
        raftConfig.checkQuorum = true
        raftConfig.preVote = true
        raftConfig.randomSeed = memberID
        let node = try RawNode(config: raftConfig)
        shared = Mutex(SharedState())
        leaseIDs = IDGenerator(memberID: memberID)
        watchSyncThread = WatchSyncThread(store: watchable)
        loopBox = LoopBox(RaftLoopState(
            node: node, storage: storage, wal: wal, snapshotter: snapshotter,
            confState: try storage.initialState().1, applied: raftConfig.applied,
            snapshotIndex: snapshotIndex, compactedTo: snapshotIndex
        ))

        let thread = Thread { [self] in runLoop() }
        thread.name = "etcd-raft-loop"
        thread.start()
        watchSyncThread.start()
    }

    /// Stops the loop, commits the backend and closes the files.
    /// Also waits when the loop already stopped on its own (after a storage
    /// error), so the files are closed when this returns — LMDB must never
    /// have the same file open twice in one process.
    public func stop() {
        watchSyncThread.stop()
        shared.withLock { $0.stopped = true }
        signal()
        wakeup.lock()
        while !finished.withLock({ $0 }) { _ = wakeup.wait(until: Date().addingTimeInterval(0.05)) }
        wakeup.unlock()
    }

    // MARK: - Requests

    public func put(_ request: Etcdserverpb_PutRequest) async throws -> Etcdserverpb_PutResponse {
        try validate { try RequestValidation.check(request) }
        var internalRequest = Etcdserverpb_InternalRaftRequest()
        internalRequest.put = request
        guard case let .put(response) = try await propose(internalRequest) else { throw EtcdError(.internal, "unexpected apply result") }
        return response
    }

    public func deleteRange(_ request: Etcdserverpb_DeleteRangeRequest) async throws -> Etcdserverpb_DeleteRangeResponse {
        try validate { try RequestValidation.check(request) }
        var internalRequest = Etcdserverpb_InternalRaftRequest()
        internalRequest.deleteRange = request
        guard case let .deleteRange(response) = try await propose(internalRequest) else { throw EtcdError(.internal, "unexpected apply result") }
        return response
    }

    public func txn(_ request: Etcdserverpb_TxnRequest) async throws -> Etcdserverpb_TxnResponse {
        try validate { try RequestValidation.check(request, maxOperations: config.maxTxnOps) }
        if KVStore.isReadOnly(request) {
            try await linearizableBarrier()
            return try validate { try store.readOnlyTxn(request) }
        }
        var internalRequest = Etcdserverpb_InternalRaftRequest()
        internalRequest.txn = request
        guard case let .txn(response) = try await propose(internalRequest) else { throw EtcdError(.internal, "unexpected apply result") }
        return response
    }

    public func compact(_ request: Etcdserverpb_CompactionRequest) async throws -> Etcdserverpb_CompactionResponse {
        var internalRequest = Etcdserverpb_InternalRaftRequest()
        internalRequest.compaction = request
        guard case let .compaction(response) = try await propose(internalRequest) else { throw EtcdError(.internal, "unexpected apply result") }
        return response
    }

    public func range(_ request: Etcdserverpb_RangeRequest) async throws -> Etcdserverpb_RangeResponse {
        try validate { try RequestValidation.check(request) }
        if !request.serializable { try await linearizableBarrier() }
        return try validate { try store.range(request) }
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

    func propose(_ request: Etcdserverpb_InternalRaftRequest) async throws -> ApplyResult {
        var request = request
        let data: Data
        let id: UInt64 = try shared.withLock { state in
            if state.stopped { throw EtcdError.stopped }
            if state.proposals.count >= Self.maxQueuedProposals { throw EtcdError.timeout }
            defer { state.nextRequestID += 1 }
            return state.nextRequestID
        }
        request.id = id
        var header = Etcdserverpb_RequestHeader()
        header.id = id
        request.header = header
        data = try request.serializedData()
        if data.count > config.maxRequestBytes { throw EtcdError.requestTooLarge }

        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let accepted = shared.withLock { state -> Bool in
                    if state.stopped { return false }
                    state.waiters[id] = continuation
                    state.proposals.append((id, data))
                    return true
                }
                if accepted { signal() } else { continuation.resume(throwing: EtcdError.stopped) }
            }
        } onCancel: {
            // The entry may still commit; the caller just stops waiting.
            let waiter = shared.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// Returns once everything committed before the call has been applied:
    /// reads queued together share one ReadIndex round.
    private func linearizableBarrier() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let accepted = shared.withLock { state -> Bool in
                if state.stopped { return false }
                state.readWaiters.append(continuation)
                return true
            }
            if accepted { signal() } else { continuation.resume(throwing: EtcdError.stopped) }
        }
    }

    private func signal() {
        wakeup.lock()
        wakeup.signal()
        wakeup.unlock()
    }

    private func validate<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as MVCCError { throw EtcdError(error) }
    }

    // MARK: - The raft loop (runs on its own thread)

    private func runLoop() {
        let tickSeconds = Double(config.heartbeatIntervalMilliseconds) / 1000
        var nextTick = Date().addingTimeInterval(tickSeconds)
        loopBox.withState { loop in
            // A single voter elects itself at once instead of waiting a timeout.
            try? loop.node.campaign()
        }
        while true {
            wakeup.lock()
            let idle = shared.withLock { $0.proposals.isEmpty && $0.readWaiters.isEmpty && !$0.stopped }
            if idle { _ = wakeup.wait(until: nextTick) }
            wakeup.unlock()

            let (proposals, reads, stopped) = shared.withLock { state in
                defer { state.proposals.removeAll(keepingCapacity: true); state.readWaiters.removeAll(keepingCapacity: true) }
                return (state.proposals, state.readWaiters, state.stopped)
            }
            if stopped {
                for read in reads { read.resume(throwing: EtcdError.stopped) }
                shutDown()
                return
            }
            loopBox.withState { loop in
                if Date() >= nextTick {
                    loop.node.tick()
                    nextTick = Date().addingTimeInterval(tickSeconds)
                    proposeLeaseMaintenance(&loop)
                }
                for proposal in proposals {
                    do { try loop.node.propose(proposal.data) } catch {
                        complete(proposal.id, .failure(loop.node.lead == 0 ? EtcdError.noLeader : EtcdError.timeout))
                    }
                }
                if !reads.isEmpty {
                    if loop.node.lead == 0 {
                        for read in reads { read.resume(throwing: EtcdError.noLeader) }
                    } else {
                        loop.readBatch += 1
                        var context = Data(count: 8)
                        context.withUnsafeMutableBytes { $0.storeBytes(of: loop.readBatch.bigEndian, as: UInt64.self) }
                        loop.pendingReads[context] = reads
                        loop.node.readIndex(context)
                    }
                }
                do {
                    try processReadies(&loop)
                    _ = try backend.commitIfDue()
                    if store.hasPendingCompaction { _ = try store.compactionStep() }
                } catch {
                    fatalStop(loop: &loop, error)
                }
            }
        }
    }

    private func processReadies(_ loop: inout RaftLoopState) throws {
        while loop.node.hasReady {
            let ready = loop.node.ready()
            if ready.hardState != nil || !ready.entries.isEmpty {
                let hardState = ready.hardState ?? loop.lastHardState
                try loop.wal.save(hardState: Raftpb_HardState(hardState), entries: ready.entries.map(Raftpb_Entry.init), mustSync: ready.mustSync)
                if let state = ready.hardState { loop.storage.setHardState(state); loop.lastHardState = state }
                try loop.storage.append(ready.entries)
                try crashIfAsked(.afterWALAppend, reached: ready.entries.last?.index ?? 0, &loop)
            }
            // Single member: raft addresses no peers. (Peers come with clustering.)
            for entry in ready.committedEntries { try apply(entry, &loop) }
            try crashIfAsked(.afterApplyBeforeBackendCommit, reached: loop.applied, &loop)
            for readState in ready.readStates {
                if let waiters = loop.pendingReads.removeValue(forKey: readState.requestContext) {
                    loop.readsWaitingForApply.append((readState.index, waiters))
                }
            }
            loop.node.advance(ready)
            releaseReads(&loop)
            publish(loop)
            followLeadership(&loop)
        }
        if loop.applied >= loop.snapshotIndex + config.snapshotCount { try takeSnapshot(&loop) }
    }

    /// Entries kept in memory below a snapshot, for followers slightly behind
    /// (etcd keeps 5,000 too).
    static let retainedEntries: UInt64 = 5_000

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
        if snapshot.metadata.index > loop.compactedTo + Self.retainedEntries {
            let target = snapshot.metadata.index - Self.retainedEntries
            try loop.storage.compact(target)
            loop.compactedTo = target
        }
        loop.snapshotter.prune(keeping: Self.retainedSnapshotFiles)
    }

    static let retainedSnapshotFiles = 5

    private func releaseReads(_ loop: inout RaftLoopState) {
        loop.readsWaitingForApply.removeAll { pending in
            guard pending.index <= loop.applied else { return false }
            for waiter in pending.waiters { waiter.resume() }
            return true
        }
    }

    private func publish(_ loop: RaftLoopState) {
        let status = loop.node.status()
        shared.withLock { state in
            state.term = status.hardState.term
            state.leader = status.softState.lead
            state.committedIndex = status.hardState.commit
            state.appliedIndex = loop.applied
        }
    }

    private func apply(_ entry: Raft.Entry, _ loop: inout RaftLoopState) throws {
        defer { loop.applied = entry.index }
        switch entry.type {
        case .normal:
            guard !entry.data.isEmpty else {
                try backend.setConsistentIndex(entry.index, term: entry.term)
                return
            }
            let request: Etcdserverpb_InternalRaftRequest
            do { request = try Etcdserverpb_InternalRaftRequest(serializedBytes: entry.data) } catch {
                throw EtcdError(.dataLoss, "etcdserver: cannot decode raft entry \(entry.index): \(error)")
            }
            let result = try applyRequest(request)
            try backend.setConsistentIndex(entry.index, term: entry.term)
            complete(request.id, result)
        case .confChange, .confChangeV2:
            loop.confState = try loop.node.applyConfChange(entry: entry)
            try backend.setConsistentIndex(entry.index, term: entry.term)
        }
    }

    /// Applies one request to the state machines. Errors of the request
    /// (a failed compare, an unknown lease, ...) are its result; a backend
    /// failure is thrown and stops the member.
    private func applyRequest(_ request: Etcdserverpb_InternalRaftRequest) throws -> Result<ApplyResult, EtcdError> {
        let leaseExists: (Int64) -> Bool = { [lessor] in lessor.contains($0) }
        do {
            if request.hasPut {
                return .success(.put(try published(store.put(request.put, leaseExists: leaseExists))))
            } else if request.hasDeleteRange {
                return .success(.deleteRange(try published(store.deleteRange(request.deleteRange))))
            } else if request.hasTxn {
                return .success(.txn(try published(store.txn(request.txn, leaseExists: leaseExists))))
            } else if request.hasCompaction {
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
        }
        return write.response
    }

    private func complete(_ id: UInt64, _ result: Result<ApplyResult, EtcdError>) {
        guard let waiter = shared.withLock({ $0.waiters.removeValue(forKey: id) }) else { return }
        waiter.resume(with: result.mapError { $0 as any Error })
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
        for waiter in waiters { waiter.resume(throwing: EtcdError.stopped) }
        for read in reads { read.resume(throwing: EtcdError.stopped) }
        loopBox.withState { loop in
            for (_, waiters) in loop.pendingReads { for waiter in waiters { waiter.resume(throwing: EtcdError.stopped) } }
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
        finished.withLock { $0 = true }
        signal()
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
    var pendingReads: [Data: [CheckedContinuation<Void, any Error>]] = [:]
    var readsWaitingForApply: [(index: UInt64, waiters: [CheckedContinuation<Void, any Error>])] = []
    /// Whether this member led at the last look (leases are promoted and
    /// demoted on the change).
    var isLeader = false
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
