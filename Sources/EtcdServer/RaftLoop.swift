import Auth
import Backend
import EtcdMetrics
import EtcdProto
import Foundation
import Lease
import Logging
import MVCC
import Raft
import WAL

/// The raft loop: one thread that owns the `RawNode`, the WAL, raft's
/// in-memory log and every backend write (LMDB wants a write transaction on
/// the thread that began it, so apply runs here too, right after the
/// entries are durable).
///
/// Per pass: take the mailbox's input (proposals, reads, peer messages),
/// tick on time, then for each `Ready`: a leader sends while it persists,
/// one WAL append with at most one fsync for all its entries (group
/// commit), the entries into raft's log, everyone else sends, committed
/// entries through the `Applier` (the consistent index in the same backend
/// batch), waiters answered by request id, `advance`. Afterwards the
/// backend batch commits when due and one compaction step runs.
///
/// Owner: the loop's thread (`etcd-raft-loop`), or the thread that drives a
/// manual-loop member; nothing here is touched from elsewhere. Other
/// threads talk to it only through the `Mailbox`.
final class RaftLoop: @unchecked Sendable {
    let config: ServerConfig
    let environment: MemberEnvironment
    let logger: Logger
    let memberID: UInt64
    let mailbox: Mailbox
    let applier: Applier
    let backend: Backend
    let store: KVStore
    let lessor: Lessor
    let peers: any RaftTransport
    let encoder: ProposalEncoder
    let requestTimeout: Duration
    /// Where the loop records (nil: not recorded); see `RaftLoop+Metrics.swift`.
    let metrics: EtcdMetrics?
    var meter = LoopMeter()

    var node: RawNode
    let storage: MemoryStorage
    let wal: WAL
    let snapshotter: Snapshotter
    var confState: Raft.ConfState
    /// Invariant: `applied <= node.committedIndex`, and never goes back.
    var applied: UInt64
    var snapshotIndex: UInt64
    var compactedTo: UInt64
    var lastHardState = Raft.HardState()
    var reads: ReadIndexBatcher
    /// When the loop ticks next.
    var nextTick: ContinuousClock.Instant
    /// Entries up to here are in the backend already (after an installed
    /// snapshot the backend can be ahead of raft's log).
    var skipThrough: UInt64
    var campaignAtStart: Bool
    /// Requests this member proposed as leader, by the log index they got,
    /// until applied (bounded by the uncommitted log).
    var proposedHere: [UInt64: QueuedProposal] = [:]
    /// This member applied its own removal.
    var removed = false
    /// Whether this member led at the last look (leases are promoted and
    /// demoted on the change).
    var isLeader = false
    /// A failpoint crashed the loop: shut down without committing anything.
    var crashed = false
    /// Requests applied from `proposedHere`, and decoded from their entry
    /// (published with the status after each Ready).
    var appliedFromMemory = 0
    var appliedDecoded = 0
    /// Maintenance.Defragment calls waiting for the running defragmentation.
    var defragWaiters: [Mailbox.DefragWaiter] = []
    var defragStartedAt: ContinuousClock.Instant?
    /// When the leader's version monitor looks next (set as its term's first
    /// entry applies).
    var nextVersionCheck: ContinuousClock.Instant = .now
    /// A new leader's monitor waits for its term's first entry to apply.
    var versionCheckAtTermStart = false
    /// Whom this member hears from (--strict-reconfig-check).
    var peerContact: PeerContact
    /// `--auto-compaction-*`: nil when off (see `RaftLoop+AutoCompaction.swift`).
    var autoCompactor: AutoCompactor?

    /// Raft snapshot files kept on disk.
    static let retainedSnapshotFiles = 5
    /// Leases the leader revokes per tick (etcd revokes at most 1,000/s).
    static let maxRevokesPerTick = 100
    /// Checkpoints the leader proposes per tick.
    static let maxCheckpointsPerTick = 100

    init(config: ServerConfig, environment: MemberEnvironment, logger: Logger, bootstrap: Bootstrap,
         mailbox: Mailbox, applier: Applier, peers: any RaftTransport, encoder: ProposalEncoder, requestTimeout: Duration,
         metrics: EtcdMetrics? = nil) {
        self.config = config
        self.environment = environment
        self.logger = logger
        self.memberID = bootstrap.memberID
        self.mailbox = mailbox
        self.applier = applier
        self.backend = bootstrap.backend
        self.store = bootstrap.store
        self.lessor = bootstrap.lessor
        self.peers = peers
        self.encoder = encoder
        self.requestTimeout = requestTimeout
        self.metrics = metrics
        node = bootstrap.node
        storage = bootstrap.storage
        wal = bootstrap.wal
        snapshotter = bootstrap.snapshotter
        confState = bootstrap.confState
        applied = bootstrap.applied
        snapshotIndex = bootstrap.snapshotIndex
        compactedTo = bootstrap.snapshotIndex
        skipThrough = bootstrap.consistentIndex
        campaignAtStart = bootstrap.campaignAtStart
        reads = ReadIndexBatcher(memberID: bootstrap.memberID)
        let start = environment.now()
        nextTick = start + .milliseconds(config.heartbeatIntervalMilliseconds)
        peerContact = PeerContact(gap: .milliseconds(config.electionTimeoutMilliseconds))
        if let metrics {
            wal.onSync = { metrics.walFsyncSeconds.record($0.timeInSeconds) }
        }
        autoCompactor = config.autoCompaction.map { policy in
            AutoCompactor(policy: policy, revisionCheckInterval: .milliseconds(config.autoCompactionRevisionCheckIntervalMilliseconds),
                          now: start, revision: bootstrap.store.currentRevision)
        }
    }

    /// The loop's thread: passes until the member shuts down.
    func run() {
        repeat {
            mailbox.waitForInput(timeout: nextTick - environment.now())
        } while iterate()
    }

    /// One pass; false once the member has shut down.
    func iterate() -> Bool {
        let input = mailbox.takeInput()
        if input.stopped {
            for read in input.reads { read.resume(throwing: EtcdError.stopped) }
            for defrag in input.defragWaiters + defragWaiters { defrag(.failure(EtcdError.stopped)) }
            defragWaiters = []
            shutDown()
            return false
        }
        // A single voter elects itself at once instead of waiting a timeout.
        if campaignAtStart {
            campaignAtStart = false
            try? node.campaign()
        }
        // Messages from members outside the configuration, or stale ones,
        // are refused by raft; nothing else to do with them.
        let now = environment.now()
        var lastSender: UInt64 = 0
        for message in input.incoming {
            if message.from != lastSender, confState.voters.contains(message.from) || confState.learners.contains(message.from) {
                peerContact.heard(message.from, at: now)
                lastSender = message.from
            }
            if metrics != nil { heard(message) }
            try? node.step(message)
        }
        for peer in input.unreachable { node.reportUnreachable(peer) }
        for report in input.snapshotReports { node.reportSnapshot(report.peer, status: report.delivered ? .finish : .failure) }
        if now >= nextTick {
            node.tick()
            nextTick = now + .milliseconds(config.heartbeatIntervalMilliseconds)
            proposeLeaseMaintenance()
            monitorClusterVersion(now: now)
            checkAutoCompaction(now: now)
            expireRequests(now: now)
            let contact = peerContact
            mailbox.peerContact.withLock { $0 = contact }
            mailbox.publish { $0.ticks += 1 }
        }
        if let target = input.transferTo, node.role == .leader { node.transferLeadership(to: target) }
        propose(input.proposals)
        for change in input.confChanges {
            do { try node.proposeConfChange(change.change) } catch {
                mailbox.complete(change.id, .failure(node.lead == 0 ? EtcdError.noLeader : EtcdError.timeout))
            }
        }
        if !input.reads.isEmpty {
            if node.lead == 0 {
                for read in input.reads { read.resume(throwing: EtcdError.noLeader) }
            } else {
                node.readIndex(reads.startRound(input.reads, now: now, deadline: now + requestTimeout))
            }
        }
        do {
            try processReadies()
            let failpoints = config.failpoints
            if backend.pendingWriteCount > 0 { try failpoints.hit(.beforeBackendCommit) }
            let commitStart = metrics != nil ? ContinuousClock.now : nil
            if try backend.commitIfDue() {
                if let commitStart { metrics?.backendCommitSeconds.record((ContinuousClock.now - commitStart).timeInSeconds) }
                try failpoints.hit(.afterBackendCommit)
            }
            if store.hasPendingCompaction {
                try failpoints.hit(.midCompaction)
                _ = try store.compactionStep()
            }
            defragment(newWaiters: input.defragWaiters)
        } catch {
            fatalStop(error)
        }
        return true
    }

    /// Starts an online defragmentation for new callers (joining the one
    /// running), and answers every caller when it is done. Reads and writes
    /// carry on meanwhile; see `Backend.startOnlineDefragment`.
    private func defragment(newWaiters: [Mailbox.DefragWaiter]) {
        if !newWaiters.isEmpty, !backend.isDefragmenting {
            logger.info("defragmenting", metadata: [
                "path": "\(backend.path)", "current-db-size-bytes": "\(backend.sizeBytes)",
            ])
            do {
                defragStartedAt = environment.now()
                metrics?.defragInflight.set(1.0)
                try backend.startOnlineDefragment(run: environment.runInBackground)
            } catch {
                logger.warning("failed to defragment", metadata: ["path": "\(backend.path)", "error": "\(error)"])
                for waiter in newWaiters { waiter(.failure(error)) }
                return
            }
        }
        defragWaiters += newWaiters
        guard !defragWaiters.isEmpty || backend.isDefragmenting else { return }
        let outcome: Result<Void, BackendError>
        if let finished = backend.finishOnlineDefragmentIfReady() {
            outcome = finished
        } else if backend.isDefragmenting {
            return
        } else {
            // A snapshot install replaced the file under it.
            outcome = .failure(.defragmentationAborted(reason: "the backend was replaced by a snapshot"))
        }
        let took = defragStartedAt.map { environment.now() - $0 } ?? .zero
        metrics?.defragInflight.set(0.0)
        switch outcome {
        case .success:
            metrics?.backendDefragSeconds.record(took.timeInSeconds)
            logger.info("finished defragmenting directory", metadata: [
                "path": "\(backend.path)", "current-db-size-bytes": "\(backend.sizeBytes)", "took": "\(took)",
            ])
        case .failure(let error):
            logger.warning("failed to defragment", metadata: ["path": "\(backend.path)", "error": "\(error)"])
        }
        let waiters = defragWaiters
        defragWaiters = []
        for waiter in waiters { waiter(outcome.mapError { $0 as any Error }) }
    }

    private func propose(_ proposals: [QueuedProposal]) {
        guard !proposals.isEmpty else { return }
        let lastBefore = node.lastIndex
        do {
            try node.propose(batch: proposals.map(\.data))
            // On the leader they now sit at the end of the log: remember
            // which request is at which index, for apply.
            if node.role == .leader, node.lastIndex == lastBefore + UInt64(proposals.count) {
                for (offset, proposal) in proposals.enumerated() {
                    proposedHere[lastBefore + 1 + UInt64(offset)] = proposal
                }
            }
        } catch {
            metrics?.proposalsFailed.increment(by: Int64(proposals.count))
            for proposal in proposals {
                mailbox.complete(proposal.id, .failure(node.lead == 0 ? EtcdError.noLeader : EtcdError.timeout))
            }
        }
    }

    /// On every tick: requests older than the request timeout get etcd's
    /// `request timed out` (a proposal lost in a leader change, a read whose
    /// ReadIndex round never came back); lost ReadIndex rounds are asked again.
    private func expireRequests(now: ContinuousClock.Instant) {
        let expired = mailbox.expireWaiters(now: now)
        if expired > 0 { metrics?.proposalsFailed.increment(by: Int64(expired)) }
        let retry = reads.expire(now: now, leaderKnown: node.lead != 0)
        if !retry.isEmpty {
            metrics?.slowReadIndexes.increment(by: Int64(retry.count))
            mailbox.publish { $0.readIndexRetries += retry.count }
            for context in retry { node.readIndex(context) }
        }
    }

    private func processReadies() throws {
        let failpoints = config.failpoints
        while node.hasReady {
            let ready = node.ready()
            // A leader sends while it persists (its own entries count once
            // durable, in a later Ready); everyone else only once durable.
            let leading = node.role == .leader
            if leading { try send(ready.messages) }
            if let snapshot = ready.snapshot {
                try snapshotter.save(Raftpb_Snapshot(snapshot))
                try wal.saveSnapshot(WALSnapshot(Raftpb_Snapshot(snapshot)))
            }
            if ready.hardState != nil || !ready.entries.isEmpty {
                let hardState = ready.hardState ?? lastHardState
                try failpoints.hit(.beforeWALSave)
                // After a snapshot the hard state's commit must be durable
                // too: a restart only trusts snapshot markers at or below it,
                // and the leader already counts this member as holding the
                // snapshot (found by the simulation: without the fsync a
                // crash right after an install restarted from the old log).
                try wal.save(hardState: Raftpb_HardState(hardState), entries: ready.entries.map(Raftpb_Entry.init),
                             mustSync: ready.mustSync || ready.snapshot != nil)
                try failpoints.hit(.afterWALSave)
                if let state = ready.hardState { storage.setHardState(state); lastHardState = state }
            }
            if let snapshot = ready.snapshot {
                try storage.applySnapshot(snapshot)
                try failpoints.hit(.beforeApplySnapshot)
                metrics?.applySnapshotInProgress.set(1.0)
                defer { metrics?.applySnapshotInProgress.set(0.0) }
                try installSnapshot(snapshot)
                metaRecorded = false
                try failpoints.hit(.afterApplySnapshot)
            }
            if !ready.entries.isEmpty {
                try storage.append(ready.entries)
                try failpoints.hit(.afterWALAppend, index: ready.entries.last?.index)
            }
            if !leading { try send(ready.messages) }
            if metrics != nil {
                for entry in ready.committedEntries { try timedApply(entry) }
                metrics?.walWriteBytes.set(Double(wal.writtenBytes))
            } else {
                for entry in ready.committedEntries { try apply(entry) }
            }
            try failpoints.hit(.afterApplyBeforeBackendCommit, index: applied)
            reads.answered(ready.readStates)
            node.advance(ready)
            reads.release(applied: applied)
            publish()
            followLeadership()
            monitorClusterVersionAtTermStart(appliedTerm: ready.committedEntries.last?.term)
            if removed { break }
        }
        if removed {
            logger.warning("the member has been permanently removed from the cluster", metadata: [
                "local-member-id": "\(String(memberID, radix: 16))"])
            mailbox.stop()
            return
        }
        if applied >= snapshotIndex + config.snapshotCount { try takeSnapshot() }
    }

    /// Applies one committed entry. A request the state machines reject is
    /// answered with its error; a fatal failure is thrown and stops the member.
    /// Whether this run wrote the `meta` bucket's confState and
    /// storageVersion yet (on the first entry it applies, then as they change).
    private var metaRecorded = false

    private func recordMeta() throws {
        metaRecorded = true
        try backend.put(.meta, key: MetaKey.confState, value: Self.confStateJSON(confState))
        try ClusterVersionStore.recordStorageVersion(applier.membership.versions.version, in: backend)
    }

    func apply(_ entry: Raft.Entry) throws {
        precondition(entry.index > applied, "entry \(entry.index) applied after \(applied): out of order")
        defer { applied = entry.index }
        // The backend already holds this entry (it came with a snapshot
        // newer than raft's); only raft's own membership must still follow.
        let alreadyApplied = entry.index <= skipThrough
        if !alreadyApplied && !metaRecorded { try recordMeta() }
        switch entry.type {
        case .normal:
            let local = proposedHere.removeValue(forKey: entry.index)
            if alreadyApplied { return }
            guard !entry.data.isEmpty else {
                try backend.setConsistentIndex(entry.index, term: entry.term)
                return
            }
            let id: UInt64, request: ProposedRequest, auth: AuthInfo?
            if let local, local.data == entry.data {
                // Proposed here, and the entry is still that proposal (a new
                // leader may have put another at this index): no decoding.
                (id, request, auth) = (local.id, local.request, local.auth)
                appliedFromMemory += 1
            } else {
                appliedDecoded += 1
                do {
                    let decoded = try Etcdserverpb_InternalRaftRequest(serializedBytes: entry.data)
                    (id, request) = (decoded.id, ProposedRequest(decoded))
                    let header = decoded.header
                    auth = header.authRevision == 0 && header.username.isEmpty
                        ? nil : AuthInfo(username: header.username, revision: header.authRevision)
                } catch {
                    throw EtcdError(.dataLoss, "etcdserver: cannot decode raft entry \(entry.index): \(error)")
                }
            }
            switch applier.apply(request, as: auth, index: entry.index) {
            case .success(let result):
                try backend.setConsistentIndex(entry.index, term: entry.term)
                mailbox.complete(id, .success(result))
            case .failure(.rejected(let error)):
                try backend.setConsistentIndex(entry.index, term: entry.term)
                mailbox.complete(id, .failure(error))
            case .failure(.fatal(let error)):
                throw error
            }
        case .confChange, .confChangeV2:
            let change = try ProtobufConfChangeCodec().decode(entry)
            confState = try node.applyConfChange(change.asV2)
            if alreadyApplied { return }
            try backend.put(.meta, key: MetaKey.confState, value: Self.confStateJSON(confState))
            if case let .v1(single) = change {
                if try applier.applyMembership(single) { removed = true }
            }
            try backend.setConsistentIndex(entry.index, term: entry.term)
            if case let .v1(single) = change { mailbox.complete(single.id, .success(.none)) }
        }
    }

    /// The raft configuration as etcd 3.5+ stores it in the `meta` bucket:
    /// Go's JSON of raftpb.ConfState (empty lists left out, auto_leave kept).
    static func confStateJSON(_ state: Raft.ConfState) -> [UInt8] {
        func list(_ name: String, _ ids: [UInt64]) -> String? {
            ids.isEmpty ? nil : "\"\(name)\":[\(ids.map(String.init).joined(separator: ","))]"
        }
        let fields = [list("voters", state.voters), list("learners", state.learners),
                      list("voters_outgoing", state.votersOutgoing), list("learners_next", state.learnersNext)].compactMap { $0 }
        return Array(("{" + (fields + ["\"auto_leave\":\(state.autoLeave)"]).joined(separator: ",") + "}").utf8)
    }

    /// Every `--snapshot-count` applied entries: make the backend durable up
    /// to `applied`, record a raft snapshot (file + WAL marker), then release
    /// the WAL segments and in-memory entries it covers. The snapshot carries
    /// no data: the backend is the state, and its consistent index says how
    /// far it goes.
    private func takeSnapshot() throws {
        try backend.forceCommit()
        try backend.sync()
        let snapshot = try storage.createSnapshot(index: applied, confState: confState, data: Data())
        try snapshotter.save(Raftpb_Snapshot(snapshot))
        try wal.saveSnapshot(WALSnapshot(Raftpb_Snapshot(snapshot)))
        try wal.release(below: snapshot.metadata.index)
        snapshotIndex = snapshot.metadata.index
        if snapshot.metadata.index > compactedTo + config.snapshotCatchUpEntries {
            let target = snapshot.metadata.index - config.snapshotCatchUpEntries
            try storage.compact(target)
            compactedTo = target
        }
        snapshotter.prune(keeping: Self.retainedSnapshotFiles)
    }

    /// Publishes term, leader and indexes for Status and headers: cheap
    /// accessors on every Ready, the full status only while learners exist.
    private func publish() {
        var learners: [UInt64: (match: UInt64, leaderLast: UInt64)] = [:]
        if !confState.learners.isEmpty, let last = try? storage.lastIndex() {
            let status = node.status()
            for id in confState.learners { if let progress = status.progress[id] { learners[id] = (progress.match, last) } }
        }
        let (term, leader, committed, applied) = (node.term, node.lead, node.committedIndex, applied)
        if leader != meter.leader { leaderChanged(to: leader) }
        let (fromMemory, decoded) = (appliedFromMemory, appliedDecoded)
        mailbox.publish { status in
            status.appliedFromMemory = fromMemory
            status.appliedDecoded = decoded
            status.term = term
            status.leader = leader
            status.committedIndex = committed
            status.appliedIndex = applied
            status.learnerProgress = learners
        }
    }

    // MARK: - Leases (the leader's side)

    /// On the leader, once per tick: propose revokes for expired leases and
    /// checkpoints for long ones. Proposals that are lost come back: an
    /// expired lease is offered again a few seconds later.
    private func proposeLeaseMaintenance() {
        guard isLeader else { return }
        let now = applier.leaseClock.now()
        for id in lessor.expiredLeases(now: now, limit: Self.maxRevokesPerTick) {
            var request = Etcdserverpb_InternalRaftRequest()
            request.leaseRevoke.id = id
            proposeOwn(request)
        }
        let due = lessor.dueCheckpoints(now: now, limit: Self.maxCheckpointsPerTick)
        if !due.isEmpty {
            var request = Etcdserverpb_InternalRaftRequest()
            request.leaseCheckpoint.checkpoints = due.map { item in
                var checkpoint = Etcdserverpb_LeaseCheckpoint()
                checkpoint.id = item.id
                checkpoint.remainingTtl = item.remainingTTLSeconds
                return checkpoint
            }
            proposeOwn(request)
        }
    }

    /// etcd's version monitor, on the leader every --downgrade-check-time:
    /// the cluster version follows an enabled downgrade's target, and goes
    /// back to ours once the downgrade is cancelled.
    private func monitorClusterVersion(now: ContinuousClock.Instant) {
        guard isLeader, !versionCheckAtTermStart, now >= nextVersionCheck else { return }
        nextVersionCheck = now + .milliseconds(config.downgradeCheckTimeMilliseconds)
        guard let wanted = applier.membership.versions.wanted else { return }
        var request = Etcdserverpb_InternalRaftRequest()
        request.clusterVersionSet.ver = wanted.description
        proposeOwn(request)
    }

    /// The monitor's first look in a leader's term, as etcd's on the term's
    /// first commit: once every earlier entry has applied, so it decides on
    /// the latest downgrade job, and before any client request of the term
    /// can apply (a downgrade call waits for a barrier that needs this
    /// commit), so it never races a client's change. Then every interval.
    private func monitorClusterVersionAtTermStart(appliedTerm: UInt64?) {
        guard versionCheckAtTermStart, isLeader, let appliedTerm, appliedTerm == node.term else { return }
        versionCheckAtTermStart = false
        nextVersionCheck = environment.now()
        monitorClusterVersion(now: nextVersionCheck)
    }

    /// A proposal the member makes itself: queued like a client's (for the
    /// next pass), with nobody waiting for its result.
    private func proposeOwn(_ request: Etcdserverpb_InternalRaftRequest) {
        guard let proposal = try? encoder.encode(.other(request)) else { return }
        mailbox.enqueue(proposal, deadline: environment.now() + requestTimeout, nil)
    }

    /// Promotes the lessor when this member becomes leader (every lease gets
    /// an election timeout more, so none expires early because of the
    /// change) and demotes it when leadership is lost.
    private func followLeadership() {
        // `lead` is this member exactly while it leads (cheaper than
        // status(), which copies the progress of every peer).
        let leading = node.lead == memberID
        guard leading != isLeader else { return }
        isLeader = leading
        if leading {
            lessor.promote(now: applier.leaseClock.now(), extend: .milliseconds(config.electionTimeoutMilliseconds))
            versionCheckAtTermStart = true
        } else {
            lessor.demote()
        }
    }

    // MARK: - Stopping

    /// A storage error (or a crash failpoint) in the loop: nothing more can
    /// be made durable, so the member stops and every waiter gets an error
    /// (the WAL keeps what was acknowledged).
    private func fatalStop(_ error: any Error) {
        if error is FailpointCrash {
            crashed = true
        } else {
            logger.error("stopping after storage error", metadata: ["error": "\(error)"])
        }
        mailbox.stop()
    }

    private func shutDown() {
        reads.failAll(EtcdError.stopped)
        if crashed {
            wal.close()
            backend.abandon()
        } else {
            try? wal.sync()
            wal.close()
            try? backend.forceCommit()
            try? backend.close()
        }
        mailbox.finish()
    }
}
