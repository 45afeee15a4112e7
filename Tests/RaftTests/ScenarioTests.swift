// Scripted interaction scenarios over the simulated cluster (RawNodes with
// persistence), each replaying a situation that has broken Raft
// implementations before.
import FoundationEssentials
import Testing
@testable import Raft

@Suite struct ScenarioTests {
    // An old leader cut off with a minority keeps accepting proposals that
    // can never commit. The majority elects a new leader and moves on. When
    // the old leader rejoins it steps down and its uncommitted tail is
    // replaced by the new leader's log.
    @Test(arguments: [false, true])
    func partitionedOldLeaderRejoins(preVoteAndCheckQuorum: Bool) throws {
        var opts = SimOptions()
        opts.preVote = preVoteAndCheckQuorum
        opts.checkQuorum = preVoteAndCheckQuorum
        let c = SimulatedCluster(voters: [1, 2, 3, 4, 5], options: opts, seed: 1)
        c.campaign(1)
        #expect(c.leaders == [1])
        c.partition([1, 2])
        _ = c.propose(1, "lost write")
        c.stabilize()
        #expect(!c.hasApplied(1, "lost write"))
        // Time passes: the majority side elects a leader of its own (with
        // check-quorum, the old leader also notices it lost its quorum).
        var newLeader: NodeID?
        for _ in 0..<100 where newLeader == nil {
            c.tickAll()
            c.stabilize()
            newLeader = c.leaders.first { [3, 4, 5].contains($0) }
        }
        let majorityLeader = try #require(newLeader)
        if preVoteAndCheckQuorum {
            // Within an election timeout the old leader notices it lost its quorum.
            for _ in 0..<10 {
                c.tickAll()
                c.stabilize()
            }
            #expect(c.node(1).node?.role != .leader)
        }
        #expect(c.propose(majorityLeader, "new write"))
        c.stabilize()
        #expect(c.hasApplied(majorityLeader, "new write"))
        c.heal()
        for _ in 0..<30 {
            c.tickAll()
            c.stabilize()
        }
        #expect(c.leaders.count == 1)
        #expect(c.node(1).node?.role == .follower)
        for id in c.ids {
            #expect(c.hasApplied(id, "new write"))
            #expect(!c.hasApplied(id, "lost write"))
        }
        #expect(c.violations.isEmpty)
    }

    // A node that missed committed entries (it was down) campaigns with a
    // higher term. It must not win; the cluster re-elects an up-to-date
    // leader and nothing committed is lost.
    @Test func candidateWithStaleLog() {
        let c = SimulatedCluster(voters: [1, 2, 3], seed: 2)
        c.campaign(1)
        c.crash(3)
        for i in 0..<5 { _ = c.propose(1, "w\(i)") }
        c.stabilize()
        c.restart(3)
        // Node 3 campaigns repeatedly before hearing from anyone.
        for _ in 0..<3 {
            guard var raw = c.node(3).node else { break }
            try? raw.campaign()
            c.node(3).node = raw
            c.stabilize()
            #expect(c.node(3).node?.role != .leader)
        }
        for _ in 0..<30 {
            c.tickAll()
            c.stabilize()
        }
        let leader = c.currentLeader
        #expect(leader != nil && leader != 3 || c.hasApplied(3, "w4"))
        for id in c.ids { #expect(c.hasApplied(id, "w4")) }
        #expect(c.violations.isEmpty)
    }

    // The leader removes itself. Once the removal is applied it steps down
    // (stepDownOnRemoval) and the remaining two elect a leader and go on.
    @Test func removedLeader() throws {
        var opts = SimOptions()
        opts.stepDownOnRemoval = true
        let c = SimulatedCluster(voters: [1, 2, 3], options: opts, seed: 3)
        c.campaign(1)
        #expect(c.proposeConfChange(1, ConfChange(type: .removeNode, nodeID: 1).asV2))
        c.stabilize()
        #expect(c.node(1).node?.role == .follower)
        #expect(c.node(2).confState.voters == [2, 3])
        // The removed node is shut down, as an application would.
        c.crash(1)
        for _ in 0..<40 {
            c.tickAll()
            c.stabilize()
        }
        let leader = try #require(c.currentLeader)
        #expect(leader != 1)
        #expect(c.propose(leader, "after removal"))
        c.stabilize()
        #expect(c.hasApplied(2, "after removal") && c.hasApplied(3, "after removal"))
        #expect(c.violations.isEmpty)
    }

    // A learner is promoted while it is partitioned away. The promotion
    // commits with the old voters; the promoted node then counts for the
    // quorum, so with another voter down nothing commits until it returns
    // and catches up — then it does.
    @Test func learnerPromotionDuringPartition() throws {
        let c = SimulatedCluster(voters: [1, 2, 3], learners: [4], seed: 4)
        c.campaign(1)
        c.isolate(4)
        #expect(c.proposeConfChange(1, ConfChange(type: .addNode, nodeID: 4).asV2))
        c.stabilize()
        #expect(c.node(1).confState.voters == [1, 2, 3, 4])
        #expect(c.node(4).confState.learners == [4])  // it has not heard yet
        c.crash(3)
        _ = c.propose(1, "needs node 4")
        c.stabilize()
        #expect(!c.hasApplied(1, "needs node 4"))  // 2 of 4 voters
        c.heal()
        for _ in 0..<5 {
            c.tickAll()
            c.stabilize()
        }
        #expect(c.hasApplied(1, "needs node 4"))
        #expect(c.node(4).confState.voters == [1, 2, 3, 4])
        #expect(c.violations.isEmpty)
    }

    // Snapshots delayed in the network arrive out of order: the newer one
    // is installed, the older one afterwards is ignored and the follower
    // replies with its (newer) commit index so the leader is not confused.
    @Test func snapshotArrivingOutOfOrder() throws {
        var r = newTestRaft(2, peers: [1, 2, 3])
        let cs = ConfState(voters: [1, 2, 3])
        let newer = Snapshot(data: Data("20".utf8), metadata: SnapshotMetadata(confState: cs, index: 20, term: 3))
        let older = Snapshot(data: Data("10".utf8), metadata: SnapshotMetadata(confState: cs, index: 10, term: 2))
        try r.step(Message(type: .msgSnap, to: 2, from: 1, term: 3, snapshot: newer))
        #expect(r.log.committed == 20)
        #expect(r.readMessages().first?.index == 20)
        try r.step(Message(type: .msgSnap, to: 2, from: 1, term: 3, snapshot: older))
        #expect(r.log.unstable.snapshot == newer)
        #expect(r.log.lastIndex == 20)
        let resp = try #require(r.readMessages().first)
        #expect(resp.type == .msgAppResp && resp.index == 20 && !resp.reject)
        // A delayed MsgApp from before the snapshot is answered with the
        // commit index rather than rejected.
        try r.step(msg(.msgApp, from: 1, to: 2, term: 3, logTerm: 2, index: 5, entries: [entry(6, 2)], commit: 5))
        let appResp = try #require(r.readMessages().first)
        #expect(appResp.index == 20 && !appResp.reject)

        // Through the leader: stale acks after the snapshot do not move the
        // follower's progress backwards.
        var (leader, _) = try leaderWithSnapshot()
        leader.tracker[2]!.becomeSnapshot(11)
        try leader.step(msg(.msgAppResp, from: 2, to: 1, term: leader.term, index: 11))
        try leader.step(msg(.msgAppResp, from: 2, to: 1, term: leader.term, index: 3))
        #expect(leader.tracker[2]!.match == 11)
        #expect(leader.tracker[2]!.state == .replicate)
    }

    // A minority partition cannot commit; reads from it do not complete.
    @Test func minorityCannotCommitOrRead() {
        let c = SimulatedCluster(voters: [1, 2, 3], seed: 6)
        c.campaign(1)
        c.partition([1])
        _ = c.propose(1, "minority")
        guard var raw = c.node(1).node else { return }
        raw.readIndex(Data("r".utf8))
        c.node(1).node = raw
        c.stabilize()
        #expect(!c.hasApplied(1, "minority"))
        #expect(c.violations.isEmpty)
    }
}
