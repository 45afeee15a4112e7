// ReadIndex (safe and lease-based, on leader and followers) and leader
// transfer.
import FoundationEssentials
import Testing
@testable import Raft

func readIndexMsg(_ id: NodeID, _ ctx: String) -> Message {
    Message(type: .msgReadIndex, to: id, from: id, entries: [Entry(data: Data(ctx.utf8))])
}

@Suite struct ReadIndexTests {
    // Safe read index: the leader confirms leadership with a heartbeat round
    // and answers with its commit index at the time of the request.
    @Test func safeReadIndexOnLeader() throws {
        var nw = TestNetwork([1, 2, 3])
        nw.send(hup(1))
        nw.send(propMsg(1, "a"))
        nw.send(readIndexMsg(1, "ctx1"))
        let rs = nw[1].readStates
        #expect(rs == [ReadState(index: 2, requestContext: Data("ctx1".utf8))])
        // The heartbeats carried the context.
        #expect(nw.delivered.contains { $0.type == .msgHeartbeat && $0.context == Data("ctx1".utf8) })
    }

    // Without a quorum of heartbeat acks, no answer.
    @Test func safeReadIndexNeedsQuorum() {
        var nw = TestNetwork([1, 2, 3])
        nw.send(hup(1))
        nw.isolate(1)
        nw.send(readIndexMsg(1, "ctx"))
        #expect(nw[1].readStates.isEmpty)
        nw.recover()
        // The next heartbeat round carries the pending context and confirms it.
        nw.send(Message(type: .msgBeat, to: 1, from: 1))
        #expect(nw[1].readStates.map(\.requestContext) == [Data("ctx".utf8)])
    }

    // A follower forwards the request; the answer comes back as a ReadState.
    @Test(arguments: [ReadOnlyOption.safe, .leaseBased])
    func readIndexOnFollower(option: ReadOnlyOption) {
        var nw = TestNetwork([1, 2, 3], configure: { $0.readOnlyOption = option; $0.checkQuorum = true })
        nw.send(hup(1))
        nw.send(propMsg(1, "a"))
        nw.send(readIndexMsg(2, "f"))
        #expect(nw[2].readStates == [ReadState(index: 2, requestContext: Data("f".utf8))])
        #expect(nw[1].readStates.isEmpty)
    }

    // Lease-based reads answer without a heartbeat round.
    @Test func leaseBasedReadIndexOnLeader() throws {
        var nw = TestNetwork([1, 2, 3], configure: { $0.readOnlyOption = .leaseBased; $0.checkQuorum = true })
        nw.send(hup(1))
        nw.isolate(1)  // no acks possible, the lease answers anyway
        try nw.peers[1]!.step(readIndexMsg(1, "l"))
        #expect(nw[1].readStates.map(\.index) == [1])
        #expect(!nw[1].readMessages().contains { $0.type == .msgHeartbeat })
    }

    // A new leader holds reads until it has committed an entry of its term.
    @Test func readIndexWaitsForCurrentTermCommit() throws {
        var r = newTestRaft(1, peers: [1, 2, 3])
        r.becomeCandidate()
        r.becomeLeader()
        _ = r.readMessages()
        try r.step(readIndexMsg(1, "early"))
        #expect(r.readStates.isEmpty)
        #expect(!r.readMessages().contains { $0.type == .msgHeartbeat })
        try r.step(msg(.msgAppResp, from: 2, to: 1, term: r.term, index: 1))
        // Committed now: the held request starts its heartbeat round.
        let hbs = r.readMessages().filter { $0.type == .msgHeartbeat }
        #expect(hbs.allSatisfy { $0.context == Data("early".utf8) } && !hbs.isEmpty)
        try r.step(msg(.msgHeartbeatResp, from: 2, to: 1, term: r.term, context: Data("early".utf8)))
        #expect(r.readStates.map(\.index) == [1])
    }

    // Without a leader, a follower drops read requests.
    @Test func readIndexWithoutLeaderIsDropped() throws {
        var r = newTestRaft(2, peers: [1, 2, 3])
        try r.step(readIndexMsg(2, "x"))
        #expect(r.readMessages().isEmpty)
        #expect(r.readStates.isEmpty)
    }

    // A single-voter leader answers at once.
    @Test func singleNodeReadIndex() throws {
        var r = newTestRaft(1, peers: [1])
        try r.step(hup(1))
        try r.step(readIndexMsg(1, "solo"))
        #expect(r.readStates.map(\.index) == [1])
    }

    // Acks confirm every earlier request too.
    @Test func laterAckConfirmsEarlierReads() throws {
        var r = try committedLeader()
        try r.step(readIndexMsg(1, "a"))
        try r.step(readIndexMsg(1, "b"))
        try r.step(msg(.msgHeartbeatResp, from: 2, to: 1, term: r.term, context: Data("b".utf8)))
        #expect(r.readStates.map(\.requestContext) == [Data("a".utf8), Data("b".utf8)])
    }
}

@Suite struct LeaderTransferTests {
    // An up-to-date transferee gets MsgTimeoutNow and wins at once.
    @Test func transferToUpToDateFollower() {
        var nw = TestNetwork([1, 2, 3])
        nw.send(hup(1))
        nw.send(Message(type: .msgTransferLeader, to: 1, from: 2))
        #expect(nw[2].role == .leader)
        #expect(nw[1].role == .follower)
        #expect(nw[1].lead == 2)
    }

    // A lagging transferee is caught up first, then takes over.
    @Test func transferToLaggingFollower() {
        var nw = TestNetwork([1, 2, 3])
        nw.send(hup(1))
        nw.isolate(3)
        nw.send(propMsg(1, "a"))
        nw.recover()
        nw.ignore(.msgApp)
        nw.send(Message(type: .msgTransferLeader, to: 1, from: 3))
        #expect(nw[1].leadTransferee == 3)
        #expect(nw[1].role == .leader)
        nw.recover()
        // The next heartbeat response triggers the catch-up, then TimeoutNow.
        nw.send(Message(type: .msgBeat, to: 1, from: 1))
        #expect(nw[3].role == .leader)
        #expect(nw[3].log.lastIndex >= 2)
    }

    // Proposals are dropped while a transfer is in progress.
    @Test func proposalsDroppedDuringTransfer() throws {
        var nw = TestNetwork([1, 2, 3])
        nw.send(hup(1))
        nw.isolate(3)
        nw.send(Message(type: .msgTransferLeader, to: 1, from: 3))
        #expect(nw[1].leadTransferee == 3)
        #expect(throws: RaftError.proposalDropped) { try nw.peers[1]!.step(propMsg(1, "x")) }
    }

    // A transfer that does not finish within an election timeout is aborted.
    @Test func transferAbortsAfterElectionTimeout() throws {
        var nw = TestNetwork([1, 2, 3])
        nw.send(hup(1))
        nw.isolate(3)
        nw.send(Message(type: .msgTransferLeader, to: 1, from: 3))
        #expect(nw[1].leadTransferee == 3)
        for _ in 0..<10 { nw.peers[1]!.tick() }
        #expect(nw[1].leadTransferee == noNode)
        #expect(nw[1].role == .leader)
        try nw.peers[1]!.step(propMsg(1, "accepted again"))
    }

    // Transfers to a learner or to the leader itself are ignored.
    @Test func transferToLearnerOrSelfIgnored() {
        var r = newTestRaft(1, peers: [1, 2], learners: [3])
        r.becomeCandidate()
        r.becomeLeader()
        _ = try? r.step(Message(type: .msgTransferLeader, from: 3))
        #expect(r.leadTransferee == noNode)
        _ = try? r.step(Message(type: .msgTransferLeader, from: 1))
        #expect(r.leadTransferee == noNode)
    }

    // A second request for a different node replaces the first.
    @Test func secondTransferReplacesFirst() {
        var nw = TestNetwork([1, 2, 3])
        nw.send(hup(1))
        nw.isolate(3)
        nw.send(Message(type: .msgTransferLeader, to: 1, from: 3))
        #expect(nw[1].leadTransferee == 3)
        nw.send(Message(type: .msgTransferLeader, to: 1, from: 2))
        #expect(nw[2].role == .leader)
    }

    // Followers forward transfer requests to the leader, keeping the
    // transferee (which need not be the forwarding follower).
    @Test(arguments: [NodeID(2), 3])
    func followerForwardsTransfer(transferee: NodeID) {
        var nw = TestNetwork([1, 2, 3])
        nw.send(hup(1))
        nw.send(Message(type: .msgTransferLeader, to: 2, from: transferee))
        #expect(nw[transferee].role == .leader)
        #expect(nw[1].role == .follower)
    }

    // With pre-vote enabled the transferee still campaigns directly.
    @Test func transferWithPreVoteAndCheckQuorum() {
        var nw = TestNetwork([1, 2, 3], configure: { $0.preVote = true; $0.checkQuorum = true })
        nw.send(hup(1))
        nw.send(Message(type: .msgTransferLeader, to: 1, from: 3))
        #expect(nw[3].role == .leader)
        #expect(!nw.delivered.contains { $0.type == .msgPreVote && $0.from == 3 })
    }
}
