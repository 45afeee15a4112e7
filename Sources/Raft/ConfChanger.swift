/// Computes a new membership from the current one and a list of changes,
/// without touching the original: the caller switches over only if it
/// succeeds. Mirrors the rules of etcd's confchange package:
///
/// - A simple change may alter at most one voter.
/// - Larger changes go through a joint configuration: `enterJoint` copies the
///   voters into the outgoing half, applies the changes to the incoming half,
///   and `leaveJoint` drops the outgoing half.
/// - A voter being demoted while joint is parked in `learnersNext` until the
///   joint configuration is left.
struct ConfChanger {
    var config: TrackerConfig
    var progress: ProgressMap
    /// New members start probing from here.
    let lastIndex: UInt64
    let maxInflight: Int

    init(tracker: ProgressTracker, lastIndex: UInt64) {
        config = tracker.config
        progress = tracker.progress
        self.lastIndex = lastIndex
        maxInflight = tracker.maxInflight
    }

    typealias Result = (config: TrackerConfig, progress: ProgressMap)

    func enterJoint(autoLeave: Bool, _ changes: [ConfChangeSingle]) throws(RaftError) -> Result {
        var c = self
        if c.config.voters.isJoint { throw .invalidConfChange("config is already joint") }
        if c.config.voters.incoming.ids.isEmpty {
            // Also rejected by etcd: a joint config needs an outgoing majority.
            throw .invalidConfChange("can't make a zero-voter config joint")
        }
        c.config.voters.outgoing = c.config.voters.incoming
        try c.apply(changes)
        c.config.autoLeave = autoLeave
        try c.checkInvariants()
        return (c.config, c.progress)
    }

    func leaveJoint() throws(RaftError) -> Result {
        var c = self
        if !c.config.voters.isJoint { throw .invalidConfChange("can't leave a non-joint config") }
        for id in c.config.learnersNext {
            c.config.learners.insert(id)
            c.progress[id]?.isLearner = true
        }
        c.config.learnersNext = []
        for id in c.config.voters.outgoing.ids
        where !c.config.voters.incoming.ids.contains(id) && !c.config.learners.contains(id) {
            c.progress[id] = nil
        }
        c.config.voters.outgoing = MajorityConfig()
        c.config.autoLeave = false
        try c.checkInvariants()
        return (c.config, c.progress)
    }

    func simple(_ changes: [ConfChangeSingle]) throws(RaftError) -> Result {
        var c = self
        if c.config.voters.isJoint {
            throw .invalidConfChange("can't apply simple config change in joint config")
        }
        try c.apply(changes)
        let before = config.voters.incoming.ids
        let after = c.config.voters.incoming.ids
        if before.symmetricDifference(after).count > 1 {
            throw .invalidConfChange("more than one voter changed without entering joint config")
        }
        try c.checkInvariants()
        return (c.config, c.progress)
    }

    private mutating func apply(_ changes: [ConfChangeSingle]) throws(RaftError) {
        for cc in changes where cc.nodeID != noNode {
            switch cc.type {
            case .addNode: makeVoter(cc.nodeID)
            case .addLearnerNode: makeLearner(cc.nodeID)
            case .removeNode: remove(cc.nodeID)
            case .updateNode: break
            }
        }
        if config.voters.incoming.ids.isEmpty { throw .invalidConfChange("removed all voters") }
    }

    private mutating func makeVoter(_ id: NodeID) {
        guard progress[id] != nil else {
            initProgress(id, isLearner: false)
            return
        }
        progress[existing: id].isLearner = false
        config.learners.remove(id)
        config.learnersNext.remove(id)
        config.voters.incoming.ids.insert(id)
    }

    private mutating func makeLearner(_ id: NodeID) {
        guard let pr = progress[id] else {
            initProgress(id, isLearner: true)
            return
        }
        if pr.isLearner { return }
        remove(id)
        progress[id] = pr  // keep its replication state
        if config.voters.outgoing.ids.contains(id) {
            // Still a voter in the outgoing half: becomes a learner on leave.
            config.learnersNext.insert(id)
        } else {
            progress[existing: id].isLearner = true
            config.learners.insert(id)
        }
    }

    private mutating func remove(_ id: NodeID) {
        guard progress[id] != nil else { return }
        config.voters.incoming.ids.remove(id)
        config.learners.remove(id)
        config.learnersNext.remove(id)
        // Still needed while the outgoing half counts it.
        if !config.voters.outgoing.ids.contains(id) { progress[id] = nil }
    }

    private mutating func initProgress(_ id: NodeID, isLearner: Bool) {
        if isLearner {
            config.learners.insert(id)
        } else {
            config.voters.incoming.ids.insert(id)
        }
        // Probing from the last index finds the match point quickly; marking
        // it active keeps check-quorum from stepping down right after adding.
        var pr = Progress(next: max(lastIndex, 1), maxInflight: maxInflight, isLearner: isLearner)
        pr.recentActive = true
        progress[id] = pr
    }

    private func checkInvariants() throws(RaftError) {
        for id in config.voters.allIDs.union(config.learners).union(config.learnersNext) where progress[id] == nil {
            throw .invalidConfChange("no progress for \(id)")
        }
        for id in config.learnersNext {
            guard config.voters.outgoing.ids.contains(id) else { throw .invalidConfChange("\(id) is in learnersNext but not outgoing") }
            if progress[existing: id].isLearner { throw .invalidConfChange("\(id) is in learnersNext but already a learner") }
        }
        for id in config.learners {
            if config.voters.allIDs.contains(id) { throw .invalidConfChange("\(id) is a learner and a voter") }
            if !progress[existing: id].isLearner { throw .invalidConfChange("\(id) is a learner but not marked so") }
        }
        if !config.voters.isJoint {
            if !config.learnersNext.isEmpty { throw .invalidConfChange("learnersNext must be empty when not joint") }
            if config.autoLeave { throw .invalidConfChange("autoLeave must be false when not joint") }
        }
    }

    /// Builds the configuration a ConfState describes, starting from an empty
    /// tracker: replay the outgoing voters as simple changes, then enter the
    /// joint configuration with the incoming side.
    static func restore(_ cs: ConfState, tracker: ProgressTracker, lastIndex: UInt64) throws(RaftError) -> Result {
        var outgoing: [ConfChangeSingle] = []
        var incoming: [ConfChangeSingle] = []
        for id in cs.votersOutgoing {
            outgoing.append(ConfChangeSingle(type: .addNode, nodeID: id))
            incoming.append(ConfChangeSingle(type: .removeNode, nodeID: id))
        }
        for id in cs.voters { incoming.append(ConfChangeSingle(type: .addNode, nodeID: id)) }
        for id in cs.learners { incoming.append(ConfChangeSingle(type: .addLearnerNode, nodeID: id)) }
        // Learners-next are added as learners *after* the voters so that they
        // end up in learnersNext, since they are still outgoing voters.
        for id in cs.learnersNext { incoming.append(ConfChangeSingle(type: .addLearnerNode, nodeID: id)) }

        var changer = ConfChanger(tracker: tracker, lastIndex: lastIndex)
        if outgoing.isEmpty {
            for cc in incoming {
                let r = try changer.simple([cc])
                changer.config = r.config
                changer.progress = r.progress
            }
            return (changer.config, changer.progress)
        }
        for cc in outgoing {
            let r = try changer.simple([cc])
            changer.config = r.config
            changer.progress = r.progress
        }
        return try changer.enterJoint(autoLeave: cs.autoLeave, incoming)
    }
}
