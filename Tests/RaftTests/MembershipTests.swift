// §6 of the Raft paper (cluster membership changes) as etcd implements it:
// one voter at a time, or joint consensus with ConfChangeV2; learners.
import FoundationEssentials
import Testing
@testable import Raft

let codec = ProtobufConfChangeCodec()

func confChangeEntry(_ cc: ConfChange) -> Entry { Entry(type: .confChange, data: codec.encode(cc)) }
func confChangeEntry(_ cc: ConfChangeV2) -> Entry { Entry(type: .confChangeV2, data: codec.encode(cc)) }

@Suite struct MembershipTests {
    // Adding a voter makes it count for commit and elections.
    @Test func addVoterChangesQuorum() throws {
        var r = newTestRaft(1, peers: [1])
        try r.step(hup(1))
        try r.step(propMsg(1, "a"))
        #expect(r.log.committed == 2)
        _ = try r.applyConfChange(ConfChange(type: .addNode, nodeID: 2).asV2)
        #expect(r.tracker.voterIDs == [1, 2])
        try r.step(propMsg(1, "b"))
        #expect(r.log.committed == 2)  // needs node 2 now
        try r.step(msg(.msgAppResp, from: 2, to: 1, term: r.term, index: 3))
        #expect(r.log.committed == 3)
    }

    // Removing a voter can let pending entries commit with the smaller quorum.
    @Test func removeVoterCommitsPending() throws {
        var r = newTestRaft(1, peers: [1, 2])
        r.becomeCandidate()
        r.becomeLeader()
        try r.step(propMsg(1, "a"))
        #expect(r.log.committed == 0)
        _ = try r.applyConfChange(ConfChange(type: .removeNode, nodeID: 2).asV2)
        #expect(r.log.committed == 2)
        #expect(r.tracker[2] == nil)
    }

    // Learners receive entries but neither vote nor count towards commit.
    @Test func learnersDoNotCount() throws {
        var nw = TestNetwork([1, 2], nodes: [
            1: newTestRaft(1, peers: [1], learners: [2]),
            2: newTestRaft(2, peers: [1], learners: [2]),
        ])
        nw.send(hup(1))
        #expect(nw[1].role == .leader)
        nw.send(propMsg(1, "x"))
        #expect(nw[2].logEntries.last?.data == Data("x".utf8))
        #expect(nw[1].tracker.committed() == nw[1].log.lastIndex)
        // A learner never campaigns, even after its election timeout.
        nw.peers[2]!.tick(times: 100)
        #expect(nw[2].role == .follower)
        #expect(!nw[2].isPromotable)
    }

    // A candidate does not count a learner's vote.
    @Test func learnerVoteIgnored() throws {
        var r = newTestRaft(1, peers: [1, 2], learners: [3])
        try r.step(hup(1))
        try r.step(msg(.msgVoteResp, from: 3, to: 1, term: r.term))
        #expect(r.role == .candidate)
        try r.step(msg(.msgVoteResp, from: 2, to: 1, term: r.term))
        #expect(r.role == .leader)
    }

    // Promoting a learner makes it a voter that can campaign.
    @Test func promoteLearner() throws {
        var r = newTestRaft(2, peers: [1], learners: [2])
        #expect(r.isLearner)
        _ = try r.applyConfChange(ConfChange(type: .addNode, nodeID: 2).asV2)
        #expect(!r.isLearner)
        #expect(r.isPromotable)
        r.tick(times: 30)
        #expect(r.role == .candidate)
    }

    // Only one conf change may be pending: a second proposal before the
    // first is applied becomes an empty normal entry.
    @Test func onlyOnePendingConfChange() throws {
        var r = newTestRaft(1, peers: [1, 2, 3])
        r.becomeCandidate()
        r.becomeLeader()
        try r.step(msg(.msgAppResp, from: 2, to: 1, term: r.term, index: 1))
        r.log.applied(to: 1)
        try r.step(Message(type: .msgProp, from: 1, entries: [confChangeEntry(ConfChange(type: .addNode, nodeID: 4))]))
        try r.step(Message(type: .msgProp, from: 1, entries: [confChangeEntry(ConfChange(type: .addNode, nodeID: 5))]))
        let ents = r.logEntries
        #expect(ents[1].type == .confChange)
        #expect(ents[2].type == .normal && ents[2].data.isEmpty)
        #expect(r.pendingConfIndex == 2)
    }

    // A new leader treats its whole uncommitted tail as possibly holding a
    // conf change and refuses a new one until it has applied that tail.
    @Test func newLeaderBlocksConfChangeUntilApplied() throws {
        var r = newTestRaft(1, peers: [1, 2, 3])
        r.becomeCandidate()
        r.becomeLeader()
        #expect(r.pendingConfIndex == 0)
        try r.step(Message(type: .msgProp, from: 1, entries: [confChangeEntry(ConfChange(type: .addNode, nodeID: 4))]))
        #expect(r.logEntries.last?.type == .confChange)
        var r2 = newTestRaft(1, peers: [1, 2, 3], storage: makeStorage(voters: [1, 2, 3]))
        try r2.step(msg(.msgApp, from: 2, to: 1, term: 1, logTerm: 0, index: 0, entries: [entry(1, 1), entry(2, 1)]))
        r2.becomeCandidate()
        r2.becomeLeader()
        #expect(r2.pendingConfIndex == 2)
        try r2.step(Message(type: .msgProp, from: 1, entries: [confChangeEntry(ConfChange(type: .addNode, nodeID: 4))]))
        #expect(r2.logEntries.last?.type == .normal)
    }

    // A node with an unapplied committed conf change does not campaign.
    @Test func noCampaignWithUnappliedConfChange() throws {
        var r = newTestRaft(1, peers: [1, 2, 3])
        try r.step(msg(.msgApp, from: 2, to: 1, term: 1, logTerm: 0, index: 0,
                       entries: [Entry(term: 1, index: 1, type: .confChange, data: codec.encode(ConfChange(type: .addNode, nodeID: 4)))], commit: 1))
        try r.step(hup(1))
        #expect(r.role == .follower)
        r.log.applied(to: 1)
        try r.step(hup(1))
        #expect(r.role == .candidate)
    }

    // Joint consensus: while joint, both the old and the new majority must
    // agree; leaving drops the old one.
    @Test func jointConsensusNeedsBothMajorities() throws {
        var r = newTestRaft(1, peers: [1, 2, 3])
        r.becomeCandidate()
        r.becomeLeader()
        for id: NodeID in [2, 3] { try r.step(msg(.msgAppResp, from: id, to: 1, term: r.term, index: 1)) }
        // {1,2,3} -> {1,4,5}
        let cs = try r.applyConfChange(ConfChangeV2(transition: .jointExplicit, changes: [
            ConfChangeSingle(type: .removeNode, nodeID: 2), ConfChangeSingle(type: .removeNode, nodeID: 3),
            ConfChangeSingle(type: .addNode, nodeID: 4), ConfChangeSingle(type: .addNode, nodeID: 5),
        ]))
        #expect(cs.voters == [1, 4, 5])
        #expect(cs.votersOutgoing == [1, 2, 3])
        #expect(!cs.autoLeave)
        try r.step(propMsg(1, "x"))
        let idx = r.log.lastIndex
        // New majority alone is not enough...
        for id: NodeID in [4, 5] { try r.step(msg(.msgAppResp, from: id, to: 1, term: r.term, index: idx)) }
        #expect(r.log.committed < idx)
        // ...together with the old one it commits.
        try r.step(msg(.msgAppResp, from: 2, to: 1, term: r.term, index: idx))
        #expect(r.log.committed == idx)
        let left = try r.applyConfChange(ConfChangeV2())
        #expect(left.voters == [1, 4, 5])
        #expect(left.votersOutgoing.isEmpty)
        #expect(r.tracker[2] == nil && r.tracker[3] == nil)
    }

    // Joint elections need both majorities too.
    @Test func jointElection() throws {
        var r = newTestRaft(1, peers: [1, 2, 3])
        _ = try r.applyConfChange(ConfChangeV2(transition: .jointExplicit, changes: [
            ConfChangeSingle(type: .removeNode, nodeID: 3), ConfChangeSingle(type: .addNode, nodeID: 4),
        ]))
        try r.step(hup(1))
        try r.step(msg(.msgVoteResp, from: 4, to: 1, term: r.term))  // {1,2,4}: won; {1,2,3}: pending
        #expect(r.role == .candidate)
        try r.step(msg(.msgVoteResp, from: 2, to: 1, term: r.term))
        #expect(r.role == .leader)
    }

    // Simple changes may touch at most one voter; more needs joint.
    @Test func simpleChangeOfTwoVotersRejected() throws {
        let r = newTestRaft(1, peers: [1, 2, 3])
        let changer = ConfChanger(tracker: r.tracker, lastIndex: 1)
        #expect(throws: RaftError.self) {
            _ = try changer.simple([ConfChangeSingle(type: .addNode, nodeID: 4), ConfChangeSingle(type: .addNode, nodeID: 5)])
        }
        // One voter plus learners is fine.
        let ok = try changer.simple([ConfChangeSingle(type: .addNode, nodeID: 4), ConfChangeSingle(type: .addLearnerNode, nodeID: 5)])
        #expect(ok.config.voters.incoming.ids == [1, 2, 3, 4])
        // Two changes with the auto transition go through a joint config instead.
        var r2 = newTestRaft(1, peers: [1, 2, 3])
        let cs = try r2.applyConfChange(ConfChangeV2(changes: [
            ConfChangeSingle(type: .addNode, nodeID: 4), ConfChangeSingle(type: .addNode, nodeID: 5),
        ]))
        #expect(cs.votersOutgoing == [1, 2, 3] && cs.autoLeave)
    }

    @Test func invalidChangesAreRejected() throws {
        var r = newTestRaft(1, peers: [1, 2, 3])
        #expect(throws: RaftError.self) { _ = try r.applyConfChange(ConfChangeV2()) }  // not joint: cannot leave
        _ = try r.applyConfChange(ConfChange(type: .removeNode, nodeID: 2).asV2)
        _ = try r.applyConfChange(ConfChange(type: .removeNode, nodeID: 3).asV2)
        #expect(throws: RaftError.self) { _ = try r.applyConfChange(ConfChange(type: .removeNode, nodeID: 1).asV2) }
        #expect(r.tracker.voterIDs == [1])  // unchanged by the failed change
        _ = try r.applyConfChange(ConfChangeV2(transition: .jointExplicit, changes: [ConfChangeSingle(type: .addNode, nodeID: 2)]))
        #expect(throws: RaftError.self) {
            _ = try r.applyConfChange(ConfChangeV2(transition: .jointExplicit, changes: [ConfChangeSingle(type: .addNode, nodeID: 3)]))
        }
    }

    // Demoting a voter while joint parks it in learnersNext until leaving.
    @Test func demotionInJointUsesLearnersNext() throws {
        var r = newTestRaft(1, peers: [1, 2, 3])
        let cs = try r.applyConfChange(ConfChangeV2(transition: .jointImplicit, changes: [
            ConfChangeSingle(type: .addLearnerNode, nodeID: 3), ConfChangeSingle(type: .addNode, nodeID: 4),
        ]))
        #expect(cs.learnersNext == [3])
        #expect(cs.votersOutgoing == [1, 2, 3])
        #expect(cs.autoLeave)
        let left = try r.applyConfChange(ConfChangeV2())
        #expect(left.learners == [3])
        #expect(left.voters == [1, 2, 4])
        #expect(r.tracker[3]!.isLearner)
    }

    // Auto-leave: after the joint config is applied, the leader proposes the
    // leave entry by itself.
    @Test func autoLeaveJoint() throws {
        let storage = makeStorage(voters: [1])
        var node = try RawNode(config: makeConfig(1, storage: storage))
        try node.campaign()
        func drain() throws {
            while node.hasReady {
                let rd = node.ready()
                try storage.append(rd.entries)
                if let hs = rd.hardState { storage.setHardState(hs) }
                for e in rd.committedEntries where e.isConfChange { try node.applyConfChange(entry: e) }
                node.advance(rd)
            }
        }
        try drain()
        try node.proposeConfChange(ConfChangeV2(transition: .auto, changes: [
            ConfChangeSingle(type: .addLearnerNode, nodeID: 2), ConfChangeSingle(type: .addLearnerNode, nodeID: 3),
        ]))
        try drain()
        // Two learners and one voter: no voter change, so no joint needed but
        // the .auto transition with several changes goes joint anyway.
        let st = node.status()
        #expect(!st.config.voters.isJoint)
        #expect(st.config.learners == [2, 3])
        let entries = try storage.entries(1, try storage.lastIndex() + 1, maxSizeBytes: .max)
        let v2 = entries.filter { $0.type == .confChangeV2 }
        #expect(v2.count == 2)
        #expect(v2.last!.data.isEmpty)  // the automatic leave
    }

    // A node restarting in a joint configuration (from its snapshot's
    // ConfState) rebuilds exactly that configuration.
    @Test func restoreJointConfState() throws {
        let cs = ConfState(voters: [1, 2, 4], learners: [5], votersOutgoing: [1, 2, 3], learnersNext: [3], autoLeave: true)
        let storage = MemoryStorage()
        try storage.applySnapshot(Snapshot(metadata: SnapshotMetadata(confState: cs, index: 10, term: 2)))
        let r = try RaftCore(config: makeConfig(1, storage: storage))
        #expect(r.tracker.confState.isEquivalent(to: cs))
        #expect(r.tracker.config.voters.isJoint)
        #expect(r.tracker[3]!.isLearner == false)
        #expect(r.tracker[5]!.isLearner)
    }

    // The conf-change codec is the protobuf wire format and round-trips.
    @Test func codecRoundTrips() throws {
        let v1 = ConfChange(id: 7, type: .addLearnerNode, nodeID: 300, context: Data("ctx".utf8))
        #expect(try codec.decodeConfChange(codec.encode(v1)) == v1)
        // Field 1 (ID) = 7, field 2 (Type) = 3, field 3 (NodeID) = 300, field 4 = "ctx"
        #expect([UInt8](codec.encode(v1)) == [0x08, 7, 0x10, 3, 0x18, 0xAC, 0x02, 0x22, 3, 0x63, 0x74, 0x78])
        let v2 = ConfChangeV2(transition: .jointExplicit, changes: [
            ConfChangeSingle(type: .addNode, nodeID: 4), ConfChangeSingle(type: .removeNode, nodeID: 1),
        ], context: Data([1, 2]))
        #expect(try codec.decodeConfChangeV2(codec.encode(v2)) == v2)
        #expect(codec.encode(ConfChangeV2()).isEmpty)
        #expect(throws: RaftError.self) { try codec.decodeConfChange(Data([0x08])) }
    }
}

extension ConfChangeV2 {
    func withSimple(_ changes: [ConfChangeSingle]) -> ConfChangeV2 {
        var c = self
        c.changes = changes
        c.transition = .auto
        return c
    }
}
