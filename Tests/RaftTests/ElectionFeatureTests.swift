// Pre-vote, check-quorum and leader leases.
import FoundationEssentials
import Testing
@testable import Raft

@Suite struct PreVoteTests {
    // A node cut off from the cluster keeps campaigning with pre-votes,
    // which never bump its term; when it comes back it does not disrupt.
    @Test func partitionedNodeDoesNotInflateTerm() {
        var nw = TestNetwork([1, 2, 3], configure: { $0.preVote = true })
        nw.send(hup(1))
        #expect(nw[1].role == .leader)
        let term = nw[1].term
        nw.isolate(3)
        nw.send(propMsg(1, "while 3 is away"))
        for _ in 0..<5 { nw.send(hup(3)) }
        #expect(nw[3].term == term)
        #expect(nw[3].role == .preCandidate)
        nw.recover()
        nw.send(hup(3))
        // Node 3's log is behind, so its pre-vote fails and the term it
        // asks about is never adopted by anyone.
        #expect(nw[1].role == .leader)
        #expect(nw[1].term == term)
    }

    // Pre-vote requests carry term + 1 but the receiver does not adopt it.
    @Test func preVoteDoesNotChangeReceiverTerm() throws {
        var r = newTestRaft(1, peers: [1, 2, 3]) { $0.preVote = true }
        try r.step(msg(.msgPreVote, from: 2, to: 1, term: 5, logTerm: 0, index: 0))
        #expect(r.term == 0)
        #expect(r.vote == noNode)
        let resp = try #require(r.readMessages().first)
        #expect(resp.type == .msgPreVoteResp && !resp.reject && resp.term == 5)
    }

    // Winning the pre-vote starts a real election with a bumped term.
    @Test func winningPreVoteStartsElection() {
        var nw = TestNetwork([1, 2, 3], configure: { $0.preVote = true })
        nw.send(hup(1))
        #expect(nw[1].role == .leader)
        #expect(nw[1].term == 1)
        #expect(nw.delivered.contains { $0.type == .msgPreVote })
    }

    // A pre-candidate that hears from a leader of its term falls back.
    @Test func preCandidateFallsBackOnHeartbeat() throws {
        var r = newTestRaft(1, peers: [1, 2, 3]) { $0.preVote = true }
        r.becomeFollower(term: 2, lead: noNode)
        try r.step(hup(1))
        #expect(r.role == .preCandidate)
        try r.step(msg(.msgHeartbeat, from: 2, to: 1, term: 2))
        #expect(r.role == .follower && r.lead == 2)
    }

    // A lone pre-candidate rejected by a quorum returns to follower.
    @Test func rejectedPreVoteReturnsToFollower() throws {
        var r = newTestRaft(1, peers: [1, 2, 3]) { $0.preVote = true }
        r.becomeFollower(term: 1, lead: noNode)
        try r.step(hup(1))
        #expect(r.role == .preCandidate)
        try r.step(msg(.msgPreVoteResp, from: 2, to: 1, term: 1, reject: true))
        try r.step(msg(.msgPreVoteResp, from: 3, to: 1, term: 1, reject: true))
        #expect(r.role == .follower)
        #expect(r.term == 1)
    }
}

@Suite struct CheckQuorumTests {
    // A leader that does not hear from a quorum within an election timeout
    // steps down.
    @Test func leaderStepsDownWithoutQuorum() {
        var nw = TestNetwork([1, 2, 3], configure: { $0.checkQuorum = true })
        nw.send(hup(1))
        #expect(nw[1].role == .leader)
        nw.isolate(1)
        for _ in 0..<(2 * 10 + 1) {
            nw.peers[1]!.tick()
            _ = nw.peers[1]!.readMessages()
        }
        #expect(nw[1].role == .follower)
    }

    // With quorum contact the leader stays.
    @Test func leaderStaysWithQuorum() {
        var nw = TestNetwork([1, 2, 3], configure: { $0.checkQuorum = true })
        nw.send(hup(1))
        nw.isolate(3)
        for _ in 0..<50 {
            nw.peers[1]!.tick()
            nw.send(nw.peers[1]!.readMessages())
        }
        #expect(nw[1].role == .leader)
    }

    // Leader lease: a follower that recently heard from the leader ignores
    // a vote request from a disruptive node, even with a higher term.
    @Test func followerIgnoresVoteWithinLease() throws {
        var r = newTestRaft(1, peers: [1, 2, 3]) { $0.checkQuorum = true }
        r.becomeFollower(term: 1, lead: 2)
        try r.step(msg(.msgVote, from: 3, to: 1, term: 2, logTerm: 1, index: 10))
        #expect(r.term == 1)
        #expect(r.readMessages().isEmpty)
        // After the election timeout passes without the leader, it votes.
        r.tick(times: 9)
        r.becomeFollower(term: 1, lead: 2)
        for _ in 0..<10 { r.electionElapsed += 1 }
        try r.step(msg(.msgVote, from: 3, to: 1, term: 2, logTerm: 1, index: 10))
        #expect(r.term == 2)
        #expect(r.readMessages().first?.reject == false)
    }

    // A partitioned node that inflated its term rejoins: the lease keeps the
    // leader in place, and its stale MsgApp responses tell the node the
    // leader's term... with check-quorum the node eventually follows.
    @Test func nodeWithHigherTermRejoinsWithoutDeposingLeader() {
        var nw = TestNetwork([1, 2, 3], configure: { $0.checkQuorum = true })
        nw.send(hup(1))
        nw.isolate(3)
        // Node 3 times out repeatedly; without pre-vote its term grows.
        for _ in 0..<3 {
            nw.peers[3]!.electionElapsed = 100
            nw.send(hup(3))
        }
        #expect(nw[3].term > nw[1].term)
        nw.recover()
        // Its vote requests bounce off the lease.
        nw.peers[3]!.becomeFollower(term: nw[3].term, lead: noNode)
        nw.send(hup(3))
        #expect(nw[1].role == .leader)
    }

    // A vote sent on behalf of a leader transfer overrides the lease.
    @Test func transferElectionOverridesLease() throws {
        var r = newTestRaft(1, peers: [1, 2, 3]) { $0.checkQuorum = true }
        r.becomeFollower(term: 1, lead: 2)
        try r.step(Message(type: .msgVote, to: 1, from: 3, term: 2, logTerm: 1, index: 10, context: campaignTransferContext))
        #expect(r.term == 2)
        #expect(r.vote == 3)
    }
}
