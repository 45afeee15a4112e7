// Quorum arithmetic for plain majorities and for joint configurations
// (two majorities that must both agree while membership changes).

/// Outcome of counting votes.
public enum VoteResult: Sendable, Hashable {
    /// Neither won nor lost yet: some votes are missing.
    case pending
    /// A quorum rejected.
    case lost
    /// A quorum granted.
    case won
}

/// A set of voters that decide by simple majority.
public struct MajorityConfig: Sendable, Hashable {
    public var ids: Set<NodeID>

    public init(_ ids: some Sequence<NodeID> = []) { self.ids = Set(ids) }

    public var sortedIDs: [NodeID] { ids.sorted() }

    /// The largest index that a majority has acknowledged, given each
    /// voter's acknowledged index (missing voters count as 0). An empty
    /// config returns `UInt64.max` so that it never constrains a joint config.
    func committedIndex(_ acked: (NodeID) -> UInt64?) -> UInt64 {
        let n = ids.count
        if n == 0 { return .max }
        // Small clusters are the rule: sort on the stack.
        return withUnsafeTemporaryAllocation(of: UInt64.self, capacity: n) { buf in
            var buffer = buf
            var i = 0
            for id in ids {
                buffer[i] = acked(id) ?? 0
                i += 1
            }
            buffer.sort()
            // With the indexes ascending, the entry at n - (n/2 + 1) is held
            // by at least a majority (it and everything after it).
            return buffer[n - (n / 2 + 1)]
        }
    }

    /// Counts `votes` (true = granted) among this config's voters.
    func voteResult(_ votes: [NodeID: Bool]) -> VoteResult {
        if ids.isEmpty { return .won }  // empty configs win every vote, for joint configs
        var granted = 0
        var missing = 0
        for id in ids {
            switch votes[id] {
            case .some(true): granted += 1
            case .some(false): break
            case .none: missing += 1
            }
        }
        let q = ids.count / 2 + 1
        if granted >= q { return .won }
        if granted + missing >= q { return .pending }
        return .lost
    }
}

/// Incoming and outgoing majority; outside of a membership transition the
/// outgoing half is empty and the config behaves like `incoming` alone.
public struct JointConfig: Sendable, Hashable {
    public var incoming = MajorityConfig()
    public var outgoing = MajorityConfig()

    public init(incoming: MajorityConfig = MajorityConfig(), outgoing: MajorityConfig = MajorityConfig()) {
        self.incoming = incoming
        self.outgoing = outgoing
    }

    public var isJoint: Bool { !outgoing.ids.isEmpty }

    /// Every voter of either half.
    public var allIDs: Set<NodeID> { incoming.ids.union(outgoing.ids) }

    func committedIndex(_ acked: (NodeID) -> UInt64?) -> UInt64 {
        min(incoming.committedIndex(acked), outgoing.committedIndex(acked))
    }

    func voteResult(_ votes: [NodeID: Bool]) -> VoteResult {
        let a = incoming.voteResult(votes)
        let b = outgoing.voteResult(votes)
        if a == b { return a }
        if a == .lost || b == .lost { return .lost }
        return .pending
    }
}
