import EtcdServer
import Foundation
import Raft

extension SimWorld {
    /// A membership change through the leader, as an operator would make
    /// one: promote the learner if there is one (once it is caught up),
    /// else remove a voter while more than three remain, else add a learner
    /// (up to five members) and start it.
    func changeMembership() {
        guard let leaderNode = leader, let leader = leaderNode.member else { return }
        let live = nodes.filter { !$0.removed }
        if let learner = live.first(where: { $0.learner }) {
            guard let change = try? leader.memberPromoteChange(id: learner.id) else { return }
            count("promote")
            log("promote \(learner.name)")
            proposeMembership(change, on: leader) { [self] applied in
                if applied { learner.learner = false }
            }
        } else if live.count > 3, random.chance(0.5) {
            let victim = live[random.index(live.count)]
            guard let change = try? leader.memberRemoveChange(id: victim.id) else { return }
            count("remove-member")
            log("remove \(victim.name)")
            proposeMembership(change, on: leader) { [self] applied in
                if applied { markRemoved(victim) }
            }
        } else if live.count < 5 {
            let index = nodes.count
            let name = "m\(index)"
            let url = "http://\(name).sim:2380"
            guard let (record, change) = try? leader.memberAddChange(peerURLs: [url], isLearner: true) else { return }
            count("add-learner")
            log("add learner \(name) (\(String(record.id, radix: 16)))")
            let clusterID = leader.clusterID
            proposeMembership(change, on: leader) { [self] applied in
                guard applied else { return }
                var config = nodes[0].config
                config.name = name
                config.dataDir = root + "/" + name
                config.initialAdvertisePeerURLs = [url]
                config.listenPeerURLs = [url]
                config.advertiseClientURLs = ["http://\(name).sim:2379"]
                config.initialClusterState = "existing"
                let node = SimNode(index: index, config: config)
                node.id = record.id
                node.learner = true
                nodes.append(node)
                join(node, clusterID: clusterID, members: leader.memberList())
            }
        }
    }

    /// `done(true)` once applied; false when it failed or its outcome is
    /// unknown (an unknown removal is noticed when the member stops).
    private func proposeMembership(_ change: ConfChange, on member: Member, _ done: @escaping (Bool) -> Void) {
        let box = SimThreadOnly(done)
        member.submitConfChange(change) { result in
            if case .success = result { box.value(true) } else { box.value(false) }
        }
    }

    /// Starts a member that joins the running cluster as `node.id`.
    private func join(_ node: SimNode, clusterID: UInt64, members: [MemberRecord]) {
        do {
            let member = try Member(config: node.config, joiningAs: node.id, clusterID: clusterID, members: members,
                                    environment: environment(for: node))
            node.member = member
            log("\(node.name) joins")
        } catch {
            violation("\(node.name) cannot join: \(error)")
            return
        }
        scheduleTick(node, generation: node.generation, at: now + random.int(1...Self.tickMicroseconds))
        settle(node)
    }

    /// The node is out of the cluster: it stops by itself (or is stopped
    /// here once some member has applied the removal) and never restarts.
    func markRemoved(_ node: SimNode) {
        guard !node.removed else { return }
        node.removed = true
        log("\(node.name) removed")
        // Its clients go elsewhere.
        streamsOfCrashed(node)
    }

    /// Whether a member that stopped by itself was removed from the cluster
    /// (as some other running member has applied).
    func wasRemoved(_ node: SimNode) -> Bool {
        if node.removed { return true }
        let others = nodes.filter { $0 !== node && $0.member != nil }
        return others.contains { $0.member!.member(id: node.id) == nil }
    }
}
