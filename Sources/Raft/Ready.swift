/// Everything the application must do after feeding raft some input, in
/// this order:
///
/// 1. Persist `hardState` (if set), `entries` and `snapshot` (if set) —
///    with fsync when `mustSync` is true.
/// 2. Send `messages`. Messages may depend on step 1 (a vote is only
///    granted once it is durable; an append is acknowledged only once it
///    is), so a follower sends them only after persisting. A leader may
///    send its messages while it persists: it counts its own new entries
///    towards the commit index at once (as etcd does), but any commit that
///    results only shows up in a later Ready, which the application asks
///    for after finishing step 1 of this one.
/// 3. Apply the snapshot (if set) and then `committedEntries`. Committed
///    entries may include some that are persisted in step 1 of the same
///    Ready, so apply only after step 1.
/// 4. Call `RawNode.advance(_:)` with this Ready before asking for the next
///    (`ready()` traps if called twice without `advance`).
public struct Ready: Sendable {
    /// Set when leader or role changed since the last Ready.
    public var softState: SoftState?
    /// Set when term, vote or commit changed since the last Ready.
    public var hardState: HardState?
    /// Read requests whose index is now known.
    public var readStates: [ReadState] = []
    /// New log entries to persist (they may replace a persisted suffix).
    public var entries: [Entry] = []
    /// A snapshot from the leader to persist and apply.
    public var snapshot: Snapshot?
    /// Committed entries to apply in order.
    public var committedEntries: [Entry] = []
    /// Messages to send once the state above is durable.
    public var messages: [Message] = []
    /// Whether the hard state and entries must be fsynced before sending.
    public var mustSync = false

    public init() {}

    /// True when there is nothing to do.
    public var isEmpty: Bool {
        softState == nil && hardState == nil && readStates.isEmpty && entries.isEmpty && snapshot == nil
            && committedEntries.isEmpty && messages.isEmpty
    }

    /// The applied index after this Ready is processed, or 0 if unchanged.
    var appliedCursor: UInt64 {
        if let last = committedEntries.last { return last.index }
        if let s = snapshot, s.metadata.index > 0 { return s.metadata.index }
        return 0
    }
}

/// A summary of a node's state for monitoring and for the application.
public struct Status: Sendable {
    public var id: NodeID
    public var hardState: HardState
    public var softState: SoftState
    public var applied: UInt64
    /// Replication progress of every member; only filled in on the leader.
    public var progress: [NodeID: ProgressStatus]
    public var leadTransferee: NodeID
    public var config: TrackerConfig
}

/// Outcome of sending a snapshot, reported by the application.
public enum SnapshotStatus: Sendable, Hashable {
    case finish
    case failure
}
