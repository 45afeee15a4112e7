// The Raft module at a glance (read in this order):
//
//   RawNode.swift        the API: tick/step/propose/ready/advance
//   Ready.swift          what the application must persist, send, apply
//   RaftCore.swift       the state machine: terms, elections, sending
//   RaftCore+Roles.swift per-role message handlers, read index, snapshots,
//                        membership switching
//   Log.swift            the log: storage + unstable tail (Log+Unstable)
//   Storage.swift        the Storage protocol and MemoryStorage
//   Progress.swift       per-follower replication state and inflights
//   ProgressTracker.swift, Quorum.swift, ConfChanger.swift
//                        membership, quorum math, conf-change rules
//   Messages.swift       raftpb-shaped value types; ConfChangeCodec.swift
//
// The module does no I/O, reads no clock and uses no global randomness:
// the same inputs (and seed) always produce the same outputs.
import FoundationEssentials

/// The application's handle on a raft node: a synchronous state machine.
///
/// Drive it with `tick()` at a fixed interval and `step(_:)` for each message
/// from a peer; make requests with `propose`, `proposeConfChange`,
/// `readIndex`, `transferLeadership`; and whenever `hasReady` is true, take
/// `ready()`, carry it out (see `Ready`), then call `advance(_:)`.
///
/// Not thread-safe; one owner drives it.
public struct RawNode {
    var raft: RaftCore
    private var previousSoftState: SoftState
    private var previousHardState: HardState
    /// A Ready was handed out and not yet advanced.
    private var awaitingAdvance = false

    /// Creates a node from `config`, restoring whatever its storage holds.
    /// A brand-new cluster's storage must contain the initial ConfState
    /// (e.g. via a snapshot at index 1, or `bootstrap`).
    public init(config: Config) throws(RaftError) {
        raft = try RaftCore(config: config)
        previousSoftState = raft.softState
        previousHardState = raft.hardState
    }

    /// Writes an initial configuration into an empty MemoryStorage so that a
    /// new cluster can start: a snapshot at index 1 with `voters`/`learners`.
    public static func bootstrap(_ storage: MemoryStorage, voters: [NodeID], learners: [NodeID] = []) throws(RaftError) {
        let cs = ConfState(voters: voters, learners: learners)
        try storage.applySnapshot(Snapshot(metadata: SnapshotMetadata(confState: cs, index: 1, term: 1)))
        storage.setHardState(HardState(term: 1, vote: noNode, commit: 1))
    }

    // MARK: input

    /// Advances logical time by one tick.
    public mutating func tick() { raft.tick() }

    /// Starts an election now (if this node is promotable).
    public mutating func campaign() throws(RaftError) {
        try raft.step(Message(type: .msgHup))
    }

    /// Proposes `data` to be appended to the log.
    /// - Throws: `RaftError.proposalDropped` when there is no leader, a
    ///   leadership transfer is in progress, forwarding is disabled, or the
    ///   uncommitted-size budget is exhausted.
    public mutating func propose(_ data: Data) throws(RaftError) {
        try raft.step(Message(type: .msgProp, from: raft.id, entries: [Entry(data: data)]))
    }

    /// Proposes several entries in one message (cheaper than one at a time).
    public mutating func propose(batch: [Data]) throws(RaftError) {
        guard !batch.isEmpty else { return }
        var entries: [Entry] = []
        entries.reserveCapacity(batch.count)
        for d in batch { entries.append(Entry(data: d)) }
        try raft.step(Message(type: .msgProp, from: raft.id, entries: entries))
    }

    /// Proposes a one-member change. Apply it with `applyConfChange` once committed.
    public mutating func proposeConfChange(_ change: ConfChange) throws(RaftError) {
        let data = raft.codec.encode(change)
        try raft.step(Message(type: .msgProp, from: raft.id, entries: [Entry(type: .confChange, data: data)]))
    }

    /// Proposes a V2 change (possibly joint). An empty change leaves a joint config.
    public mutating func proposeConfChange(_ change: ConfChangeV2) throws(RaftError) {
        let data = raft.codec.encode(change)
        try raft.step(Message(type: .msgProp, from: raft.id, entries: [Entry(type: .confChangeV2, data: data)]))
    }

    /// Applies a committed conf change to the membership and returns it; the
    /// application saves the returned ConfState with its next snapshot.
    @discardableResult
    public mutating func applyConfChange(_ change: ConfChange) throws(RaftError) -> ConfState {
        try raft.applyConfChange(change.asV2)
    }

    @discardableResult
    public mutating func applyConfChange(_ change: ConfChangeV2) throws(RaftError) -> ConfState {
        try raft.applyConfChange(change)
    }

    /// Decodes and applies the conf change carried by a committed entry.
    @discardableResult
    public mutating func applyConfChange(entry: Entry) throws(RaftError) -> ConfState {
        try raft.applyConfChange(raft.codec.decode(entry).asV2)
    }

    /// Feeds a message received from a peer.
    /// - Throws: `.stepLocalMessage` for local-only types, `.stepPeerNotFound`
    ///   for a response from a node outside the configuration.
    public mutating func step(_ message: Message) throws(RaftError) {
        if message.type.isLocal { throw .stepLocalMessage }
        if message.type.isResponse && raft.tracker[message.from] == nil { throw .stepPeerNotFound }
        try raft.step(message)
    }

    /// Asks for a linearizable read point; the answer arrives as a ReadState
    /// with the same `context` (which should be unique per request).
    public mutating func readIndex(_ context: Data) {
        _ = try? raft.step(Message(type: .msgReadIndex, entries: [Entry(data: context)]))
    }

    /// Asks the leader to hand leadership to `transferee`.
    public mutating func transferLeadership(to transferee: NodeID) {
        _ = try? raft.step(Message(type: .msgTransferLeader, from: transferee))
    }

    /// Tells the leader that the last message to `id` failed to arrive.
    public mutating func reportUnreachable(_ id: NodeID) {
        _ = try? raft.step(Message(type: .msgUnreachable, from: id))
    }

    /// Tells the leader whether a snapshot reached `id`.
    public mutating func reportSnapshot(_ id: NodeID, status: SnapshotStatus) {
        _ = try? raft.step(Message(type: .msgSnapStatus, from: id, reject: status == .failure))
    }

    /// Stops a leadership transfer (if any).
    public mutating func abortLeaderTransfer() { raft.abortLeaderTransfer() }

    // MARK: output

    /// Whether `ready()` has anything to hand out.
    public var hasReady: Bool {
        if raft.softState != previousSoftState { return true }
        let hs = raft.hardState
        if !hs.isEmpty && hs != previousHardState { return true }
        if raft.log.hasPendingSnapshot { return true }
        if !raft.messages.isEmpty || !raft.log.unstable.entries.isEmpty || raft.log.hasNextCommittedEntries { return true }
        return !raft.readStates.isEmpty
    }

    /// Collects pending output. Carry it out, then call `advance`.
    public mutating func ready() -> Ready {
        precondition(!awaitingAdvance, "ready() called again before advance()")
        var rd = Ready()
        rd.entries = raft.log.unstableEntries
        rd.committedEntries = raft.log.nextCommittedEntries
        rd.messages = raft.messages
        raft.messages = []
        let ss = raft.softState
        if ss != previousSoftState {
            rd.softState = ss
            previousSoftState = ss
        }
        let hs = raft.hardState
        if hs != previousHardState { rd.hardState = hs }
        rd.snapshot = raft.log.unstable.snapshot
        if !raft.readStates.isEmpty {
            rd.readStates = raft.readStates
            raft.readStates = []
        }
        rd.mustSync = !rd.entries.isEmpty || hs.vote != previousHardState.vote || hs.term != previousHardState.term
        awaitingAdvance = true
        return rd
    }

    /// Reports that `ready` has been carried out.
    public mutating func advance(_ ready: Ready) {
        awaitingAdvance = false
        if let hs = ready.hardState { previousHardState = hs }
        let newApplied = ready.appliedCursor
        if newApplied > 0 {
            raft.log.applied(to: newApplied)
            // Auto-leave: once the joint configuration is applied, the leader
            // proposes the empty change that leaves it.
            if raft.tracker.config.autoLeave && newApplied >= raft.pendingConfIndex && raft.role == .leader {
                let leave = Entry(type: .confChangeV2, data: raft.codec.encode(ConfChangeV2()))
                if raft.appendEntries([leave]) {
                    raft.broadcastAppend()
                }
                raft.pendingConfIndex = raft.log.lastIndex
            }
        }
        raft.reduceUncommittedSize(ready.committedEntries)
        if let last = ready.entries.last { raft.log.stableTo(index: last.index, term: last.term) }
        if let s = ready.snapshot { raft.log.stableSnapshotTo(index: s.metadata.index) }
    }

    // MARK: inspection

    public var id: NodeID { raft.id }
    public var role: RaftRole { raft.role }
    public var lead: NodeID { raft.lead }
    public var term: UInt64 { raft.term }
    /// The highest log index known to be committed.
    public var committedIndex: UInt64 { raft.log.committed }
    /// The index of the last entry in the log (stable or not).
    public var lastIndex: UInt64 { raft.log.lastIndex }

    public func status() -> Status {
        var progress: [NodeID: ProgressStatus] = [:]
        if raft.role == .leader {
            for (id, pr) in raft.tracker.progress {
                progress[id] = ProgressStatus(
                    match: pr.match, next: pr.next, state: pr.state, pendingSnapshot: pr.pendingSnapshot,
                    recentActive: pr.recentActive, isLearner: pr.isLearner, inflightCount: pr.inflights.count)
            }
        }
        return Status(
            id: raft.id, hardState: raft.hardState, softState: raft.softState, applied: raft.log.applied,
            progress: progress, leadTransferee: raft.leadTransferee, config: raft.tracker.config)
    }
}
