/// The membership as raft uses it: voters (possibly joint) and learners.
public struct TrackerConfig: Sendable, Hashable {
    public var voters = JointConfig()
    /// Learners: replicated to, but never counted for elections or commits.
    public var learners: Set<NodeID> = []
    /// Outgoing voters that will become learners when the joint
    /// configuration is left (a voter cannot be both at once).
    public var learnersNext: Set<NodeID> = []
    /// Leave the joint configuration automatically once it is applied.
    public var autoLeave = false

    public init() {}
}

/// Progress per member, kept sorted by id. Clusters are small, so a linear
/// scan beats hashing, and walking members in id order keeps every run
/// deterministic.
struct ProgressMap: Sequence {
    private(set) var ids: [NodeID] = []
    private var values: [Progress] = []

    init() {}

    var count: Int { ids.count }

    func contains(_ id: NodeID) -> Bool { position(of: id) != nil }

    private func position(of id: NodeID) -> Int? {
        for i in ids.indices where ids[i] == id { return i }
        return nil
    }

    subscript(id: NodeID) -> Progress? {
        get { position(of: id).map { values[$0] } }
        set {
            if let i = position(of: id) {
                if let v = newValue { values[i] = v } else {
                    ids.remove(at: i)
                    values.remove(at: i)
                }
            } else if let v = newValue {
                let at = ids.firstIndex { $0 > id } ?? ids.count
                ids.insert(id, at: at)
                values.insert(v, at: at)
            }
        }
    }

    /// In-place access to a member that must exist (the hot path: no
    /// optional wrapping, no copy of the inflight buffer).
    subscript(existing id: NodeID) -> Progress {
        get { values[position(of: id)!] }
        _modify {
            guard let i = position(of: id) else { preconditionFailure("no progress for \(id)") }
            yield &values[i]
        }
    }

    func makeIterator() -> some IteratorProtocol<(id: NodeID, progress: Progress)> {
        zip(ids, values).lazy.map { (id: $0.0, progress: $0.1) }.makeIterator()
    }
}

/// Tracks the membership, each member's replication progress and the votes
/// of the current election.
struct ProgressTracker {
    var config = TrackerConfig()
    private(set) var progress = ProgressMap()
    var votes: [NodeID: Bool] = [:]
    let maxInflight: Int

    init(maxInflight: Int) { self.maxInflight = maxInflight }

    /// Ids of all members, sorted.
    var ids: [NodeID] { progress.ids }

    /// Replaces all progress at once (after a conf change).
    mutating func setProgress(_ newProgress: ProgressMap) {
        progress = newProgress
    }

    subscript(id: NodeID) -> Progress? {
        get { progress[id] }
        set { progress[id] = newValue }
    }

    subscript(existing id: NodeID) -> Progress {
        get { progress[existing: id] }
        _modify { yield &progress[existing: id] }
    }

    var isSingleton: Bool {
        config.voters.incoming.ids.count == 1 && config.voters.outgoing.ids.isEmpty
    }

    /// Largest index acknowledged by a quorum.
    func committed() -> UInt64 {
        config.voters.committedIndex { id in progress[id]?.match }
    }

    /// Whether a quorum has been heard from since the last check.
    func quorumActive() -> Bool {
        var votes: [NodeID: Bool] = [:]
        for (id, pr) in progress where !pr.isLearner {
            votes[id] = pr.recentActive
        }
        return config.voters.voteResult(votes) == .won
    }

    var voterIDs: [NodeID] { config.voters.allIDs.sorted() }
    var learnerIDs: [NodeID] { config.learners.union(config.learnersNext).sorted() }

    mutating func resetVotes() { votes.removeAll(keepingCapacity: true) }

    /// Records the first vote from `id`; later ones are ignored.
    mutating func recordVote(_ id: NodeID, granted: Bool) {
        if votes[id] == nil { votes[id] = granted }
    }

    func tallyVotes() -> (granted: Int, rejected: Int, result: VoteResult) {
        var granted = 0
        var rejected = 0
        for (id, pr) in progress where !pr.isLearner {
            guard let v = votes[id] else { continue }
            if v { granted += 1 } else { rejected += 1 }
        }
        return (granted, rejected, config.voters.voteResult(votes))
    }

    var confState: ConfState {
        ConfState(
            voters: config.voters.incoming.sortedIDs,
            learners: config.learners.sorted(),
            votersOutgoing: config.voters.outgoing.sortedIDs,
            learnersNext: config.learnersNext.sorted(),
            autoLeave: config.autoLeave)
    }
}
