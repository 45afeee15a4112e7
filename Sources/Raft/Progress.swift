/// How the leader is currently replicating to a follower.
public enum ProgressState: Sendable, Hashable {
    /// Send one MsgApp per heartbeat interval until the match point is found.
    case probe
    /// Stream entries optimistically, bounded by the inflight window.
    case replicate
    /// A snapshot is on its way; send nothing else until it is acknowledged.
    case snapshot
}

/// A bounded window of MsgApp messages sent but not yet acknowledged,
/// remembered by the last index each carried. A ring buffer: no allocation
/// once it has grown to its capacity.
struct Inflights: Sendable {
    private(set) var capacity: Int
    private var buffer: [UInt64] = []
    private var start = 0
    private(set) var count = 0

    init(capacity: Int) {
        precondition(capacity > 0, "inflight capacity must be positive")
        self.capacity = capacity
    }

    var isFull: Bool { count == capacity }

    mutating func add(_ index: UInt64) {
        precondition(!isFull, "cannot add into a full inflights window")
        var next = start + count
        if next >= capacity { next -= capacity }
        if next >= buffer.count {
            // Grow lazily: most followers never fill the window.
            buffer.reserveCapacity(capacity)
            while buffer.count <= next { buffer.append(0) }
        }
        buffer[next] = index
        count += 1
    }

    /// The index most recently added, if any.
    var last: UInt64? {
        guard count > 0 else { return nil }
        var i = start + count - 1
        if i >= capacity { i -= capacity }
        return buffer[i]
    }

    /// Moves the most recent slot to a higher index (its message grew).
    mutating func replaceLast(_ index: UInt64) {
        precondition(count > 0, "no inflight message to extend")
        var i = start + count - 1
        if i >= capacity { i -= capacity }
        precondition(buffer[i] <= index, "inflight indexes must not decrease")
        buffer[i] = index
    }

    /// Frees every message whose last index is `<= index`.
    mutating func freeLE(_ index: UInt64) {
        guard count > 0, buffer[start] <= index else { return }
        var i = 0
        var idx = start
        while i < count {
            if index < buffer[idx] { break }
            idx += 1
            if idx >= capacity { idx -= capacity }
            i += 1
        }
        count -= i
        start = idx
        if count == 0 { start = 0 }
    }

    mutating func freeFirstOne() {
        guard count > 0 else { return }
        freeLE(buffer[start])
    }

    mutating func reset() {
        count = 0
        start = 0
    }
}

/// The leader's view of one follower (or learner).
///
/// Invariant: `match < next`. Entries up to `match` are known to be on the
/// follower; `next` is the first entry the leader will send.
struct Progress: Sendable {
    var match: UInt64 = 0
    var next: UInt64
    var state: ProgressState = .probe
    /// Index of the snapshot being sent while in `.snapshot` state.
    var pendingSnapshot: UInt64 = 0
    /// Heard from since the last check-quorum round.
    var recentActive = false
    /// In probe state: a probe is outstanding, wait before sending another.
    var probeSent = false
    var inflights: Inflights
    var isLearner: Bool

    init(next: UInt64, maxInflight: Int, isLearner: Bool) {
        self.next = next
        self.inflights = Inflights(capacity: maxInflight)
        self.isLearner = isLearner
    }

    private mutating func resetState(_ newState: ProgressState) {
        probeSent = false
        pendingSnapshot = 0
        state = newState
        inflights.reset()
    }

    mutating func becomeProbe() {
        if state == .snapshot {
            // Resume after the snapshot if it got there, else after match.
            let pending = pendingSnapshot
            resetState(.probe)
            next = max(match + 1, pending + 1)
        } else {
            resetState(.probe)
            next = match + 1
        }
    }

    mutating func becomeReplicate() {
        resetState(.replicate)
        next = match + 1
    }

    mutating func becomeSnapshot(_ snapshotIndex: UInt64) {
        resetState(.snapshot)
        pendingSnapshot = snapshotIndex
    }

    /// A successful MsgAppResp for `index`. Returns false if it is stale.
    mutating func maybeUpdate(_ index: UInt64) -> Bool {
        var updated = false
        if match < index {
            match = index
            updated = true
            probeSent = false
        }
        next = max(next, index + 1)
        return updated
    }

    /// Replicate state: assume the entries up to `index` will arrive.
    mutating func optimisticUpdate(_ index: UInt64) { next = index + 1 }

    /// A rejected MsgApp that was sent at `rejected`; `matchHint` is the
    /// highest index that can still match (from the fast back-off).
    /// Returns false if the rejection is stale.
    mutating func maybeDecrement(rejected: UInt64, matchHint: UInt64) -> Bool {
        if state == .replicate {
            // Stale unless it rejects something above what we know matches.
            if rejected <= match { return false }
            next = match + 1
            return true
        }
        // Probe: only the response to the latest probe counts.
        if next - 1 != rejected { return false }
        next = max(min(rejected, matchHint + 1), match + 1)
        probeSent = false
        return true
    }

    /// Whether sending more entries must wait.
    var isPaused: Bool {
        switch state {
        case .probe: probeSent
        case .replicate: inflights.isFull
        case .snapshot: true
        }
    }
}

/// A read-only copy of a follower's progress, for `Status`.
public struct ProgressStatus: Sendable, Hashable {
    public var match: UInt64
    public var next: UInt64
    public var state: ProgressState
    public var pendingSnapshot: UInt64
    public var recentActive: Bool
    public var isLearner: Bool
    public var inflightCount: Int
}
