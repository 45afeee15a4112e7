// Flow control (probe/replicate/snapshot, inflight window, message size),
// proposal forwarding and the uncommitted-size budget.
import FoundationEssentials
import Testing
@testable import Raft

@Suite struct FlowControlTests {
    // In replicate state at most maxInflightMsgs MsgApp are outstanding;
    // acknowledgements open the window again.
    @Test func inflightWindowBoundsOutstandingAppends() throws {
        var r = newTestRaft(1, peers: [1, 2]) { $0.maxInflightMsgs = 3; $0.maxSizePerMsgBytes = 0 }
        r.becomeCandidate()
        r.becomeLeader()
        _ = r.readMessages()
        try r.step(msg(.msgAppResp, from: 2, to: 1, term: r.term, index: 1))  // -> replicate
        _ = r.readMessages()
        #expect(r.tracker[2]!.state == .replicate)
        for i in 0..<10 { try r.step(propMsg(1, "e\(i)")) }
        let apps = r.readMessages().filter { $0.type == .msgApp && !$0.entries.isEmpty }
        #expect(apps.count == 3)
        #expect(r.tracker[2]!.isPaused)
        // Ack the first: exactly one slot frees, one more message goes out.
        try r.step(msg(.msgAppResp, from: 2, to: 1, term: r.term, index: apps[0].entries.last!.index))
        let more = r.readMessages().filter { $0.type == .msgApp }
        #expect(more.count == 1)
    }

    // A heartbeat response frees one slot of a full window (lost MsgApp).
    @Test func heartbeatResponseUnblocksFullWindow() throws {
        var r = newTestRaft(1, peers: [1, 2]) { $0.maxInflightMsgs = 2; $0.maxSizePerMsgBytes = 0 }
        r.becomeCandidate()
        r.becomeLeader()
        try r.step(msg(.msgAppResp, from: 2, to: 1, term: r.term, index: 1))
        for i in 0..<5 { try r.step(propMsg(1, "e\(i)")) }
        _ = r.readMessages()
        #expect(r.tracker[2]!.inflights.isFull)
        try r.step(msg(.msgHeartbeatResp, from: 2, to: 1, term: r.term))
        #expect(r.readMessages().contains { $0.type == .msgApp })
    }

    // In probe state only one MsgApp is sent until the follower answers.
    @Test func probeSendsOneMessageAtATime() throws {
        var r = newTestRaft(1, peers: [1, 2])
        r.becomeCandidate()
        r.becomeLeader()
        _ = r.readMessages()
        #expect(r.tracker[2]!.state == .probe)
        try r.step(propMsg(1, "a"))
        try r.step(propMsg(1, "b"))
        let apps = r.readMessages().filter { $0.type == .msgApp }
        #expect(apps.count == 1)
        #expect(r.tracker[2]!.probeSent)
    }

    // MsgApp carries at most maxSizePerMsg bytes (but at least one entry).
    @Test func maxSizePerMessageSplitsAppends() throws {
        var r = newTestRaft(1, peers: [1, 2]) { $0.maxSizePerMsgBytes = 300 }
        r.becomeCandidate()
        r.becomeLeader()
        try r.step(msg(.msgAppResp, from: 2, to: 1, term: r.term, index: 1))
        _ = r.readMessages()
        let payload = Data(repeating: 7, count: 100)
        try r.step(Message(type: .msgProp, from: 1, entries: Array(repeating: Entry(data: payload), count: 10)))
        var apps = r.readMessages().filter { $0.type == .msgApp }
        #expect(apps.count == 1)
        // Each acknowledgement streams as much as the window allows.
        try r.step(msg(.msgAppResp, from: 2, to: 1, term: r.term, index: apps[0].entries.last!.index))
        apps += r.readMessages().filter { $0.type == .msgApp }
        #expect(apps.count > 2)
        for m in apps {
            let size = m.entries.reduce(UInt64(0)) { $0 + $1.approximateEncodedSize }
            #expect(size <= 300 || m.entries.count == 1)
        }
        #expect(apps.flatMap(\.entries).count == 10)
    }

    // Proposals stepped one at a time between Readys share one queued
    // MsgApp per follower instead of one message each, and the follower's
    // inflight slot tracks the extended message.
    @Test func queuedAppendsAreCoalesced() throws {
        var r = newTestRaft(1, peers: [1, 2, 3])
        r.becomeCandidate()
        r.becomeLeader()
        for id: NodeID in [2, 3] { try r.step(msg(.msgAppResp, from: id, to: 1, term: r.term, index: 1)) }
        _ = r.readMessages()
        for i in 0..<50 { try r.step(propMsg(1, "p\(i)")) }
        let apps = r.readMessages().filter { $0.type == .msgApp }
        #expect(apps.count == 2)
        #expect(apps.allSatisfy { $0.entries.map(\.index) == Array(2...51) && $0.index == 1 })
        #expect(r.tracker[2]!.inflights.count == 1)
        #expect(r.tracker[2]!.inflights.last == 51)
        #expect(r.tracker[2]!.next == 52)
        // Once handed out, the next proposal starts a new message.
        try r.step(propMsg(1, "next"))
        let more = r.readMessages().filter { $0.type == .msgApp && $0.to == 2 }
        #expect(more.count == 1 && more[0].index == 51)
    }

    // Unreachable peers fall back from replicate to probe.
    @Test func reportUnreachableMovesToProbe() throws {
        var r = newTestRaft(1, peers: [1, 2])
        r.becomeCandidate()
        r.becomeLeader()
        try r.step(msg(.msgAppResp, from: 2, to: 1, term: r.term, index: 1))
        #expect(r.tracker[2]!.state == .replicate)
        try r.step(Message(type: .msgUnreachable, from: 2))
        #expect(r.tracker[2]!.state == .probe)
    }
}

@Suite struct ProposalTests {
    // Followers forward proposals to the leader.
    @Test func followerForwardsProposal() {
        var nw = TestNetwork([1, 2, 3])
        nw.send(hup(1))
        nw.send(propMsg(2, "via follower"))
        #expect(nw[1].log.committed == 2)
        #expect(nw[3].logEntries.last?.data == Data("via follower".utf8))
    }

    // With forwarding disabled, followers drop proposals.
    @Test func forwardingCanBeDisabled() throws {
        var nw = TestNetwork([1, 2, 3], configure: { $0.disableProposalForwarding = true })
        nw.send(hup(1))
        #expect(throws: RaftError.proposalDropped) { try nw.peers[2]!.step(propMsg(2, "x")) }
        #expect(nw[2].readMessages().isEmpty)
    }

    // Without a leader, proposals are dropped.
    @Test func proposalWithoutLeaderIsDropped() {
        var r = newTestRaft(1, peers: [1, 2, 3])
        #expect(throws: RaftError.proposalDropped) { try r.step(propMsg(1, "x")) }
        r.becomeCandidate()
        #expect(throws: RaftError.proposalDropped) { try r.step(propMsg(1, "x")) }
    }

    // The leader refuses proposals beyond the uncommitted budget, and
    // accepts again once entries commit.
    @Test func uncommittedSizeLimit() throws {
        var r = newTestRaft(1, peers: [1, 2, 3]) { $0.maxUncommittedEntriesSizeBytes = 1000 }
        r.becomeCandidate()
        r.becomeLeader()
        let big = Data(repeating: 1, count: 400)
        try r.step(Message(type: .msgProp, from: 1, entries: [Entry(data: big)]))
        try r.step(Message(type: .msgProp, from: 1, entries: [Entry(data: big)]))
        #expect(throws: RaftError.proposalDropped) {
            try r.step(Message(type: .msgProp, from: 1, entries: [Entry(data: big)]))
        }
        // Commit and "apply" what is there; the budget frees up.
        for id: NodeID in [2, 3] { try r.step(msg(.msgAppResp, from: id, to: 1, term: r.term, index: r.log.lastIndex)) }
        r.reduceUncommittedSize(r.log.nextCommittedEntries)
        try r.step(Message(type: .msgProp, from: 1, entries: [Entry(data: big)]))
        #expect(r.uncommittedSizeBytes == 400)
    }

    // A single oversized proposal is accepted when nothing is outstanding.
    @Test func oversizedProposalAcceptedWhenIdle() throws {
        var r = newTestRaft(1, peers: [1, 2, 3]) { $0.maxUncommittedEntriesSizeBytes = 10 }
        r.becomeCandidate()
        r.becomeLeader()
        try r.step(Message(type: .msgProp, from: 1, entries: [Entry(data: Data(repeating: 1, count: 100))]))
        #expect(r.log.lastIndex == 2)
    }
}
