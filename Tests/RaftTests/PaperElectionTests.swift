// Rules of §5.1–5.2 of the Raft paper (terms and leader election), one test
// per rule, driving RaftCore directly.
import FoundationEssentials
import Testing
@testable import Raft

@Suite struct PaperElectionTests {
    // §5.1: "If one server's current term is smaller than the other's, then
    // it updates its current term to the larger value. If a candidate or
    // leader discovers that its term is out of date, it immediately reverts
    // to follower state."
    @Test(arguments: [RaftRole.follower, .candidate, .preCandidate, .leader])
    func updateTermFromMessage(role: RaftRole) throws {
        var r = newTestRaft(1, peers: [1, 2, 3])
        switch role {
        case .follower: r.becomeFollower(term: 1, lead: 2)
        case .candidate: r.becomeCandidate()
        case .preCandidate: r.becomePreCandidate()
        case .leader:
            r.becomeCandidate()
            r.becomeLeader()
        }
        try r.step(msg(.msgApp, from: 2, to: 1, term: 5))
        #expect(r.term == 5)
        #expect(r.role == .follower)
        #expect(r.lead == 2)
    }

    // §5.1: "If a server receives a request with a stale term number, it
    // rejects the request." The entries are not appended and the reply
    // carries the current term, which makes the stale leader step down.
    @Test func rejectStaleTermMessage() throws {
        var r = newTestRaft(1, peers: [1, 2, 3])
        r.becomeFollower(term: 2, lead: noNode)
        try r.step(msg(.msgApp, from: 2, to: 1, term: 1, logTerm: 0, index: 0, entries: [entry(1, 1)]))
        #expect(r.log.lastIndex == 0)
        #expect(r.term == 2)
        let reply = try #require(r.readMessages().first)
        #expect(reply.type == .msgAppResp && reply.term == 2 && reply.to == 2)

        var staleLeader = newTestRaft(2, peers: [1, 2, 3])
        staleLeader.becomeCandidate()
        staleLeader.becomeLeader()
        try staleLeader.step(reply)
        #expect(staleLeader.role == .follower)
        #expect(staleLeader.term == 2)
    }

    // A stale vote request is rejected with the current term, which turns
    // the candidate back into a follower of that term.
    @Test func staleVoteRequestRejectedWithCurrentTerm() throws {
        var r = newTestRaft(1, peers: [1, 2, 3])
        r.becomeFollower(term: 3, lead: noNode)
        try r.step(msg(.msgVote, from: 2, to: 1, term: 2, logTerm: 5, index: 5))
        let reply = try #require(r.readMessages().first)
        #expect(reply == Message(type: .msgVoteResp, to: 2, from: 1, term: 3, reject: true))
        #expect(r.vote == noNode)

        var candidate = newTestRaft(2, peers: [1, 2, 3])
        candidate.becomeFollower(term: 1, lead: noNode)
        try candidate.step(hup(2))
        #expect(candidate.role == .candidate && candidate.term == 2)
        try candidate.step(reply)
        #expect(candidate.role == .follower && candidate.term == 3)
    }

    // §5.2: "When servers start up, they begin as followers."
    @Test func startAsFollower() {
        let r = newTestRaft(1, peers: [1, 2, 3])
        #expect(r.role == .follower)
        #expect(r.term == 0)
    }

    // §5.2: "Leaders send periodic heartbeats (AppendEntries RPCs that carry
    // no log entries) to all followers in order to maintain their authority."
    @Test func leaderBroadcastsHeartbeat() {
        var r = newTestRaft(1, peers: [1, 2, 3], election: 10, heartbeat: 1)
        r.becomeCandidate()
        r.becomeLeader()
        _ = r.readMessages()
        r.tick()
        let msgs = r.readMessages().sorted { $0.to < $1.to }
        #expect(msgs.map(\.type) == [.msgHeartbeat, .msgHeartbeat])
        #expect(msgs.map(\.to) == [2, 3])
        #expect(msgs.allSatisfy { $0.entries.isEmpty && $0.term == 1 })
    }

    // §5.2: "If a follower receives no communication over a period of time
    // called the election timeout, then it ... begins an election": it
    // increments its term, votes for itself and requests votes from all.
    @Test(arguments: [RaftRole.follower, .candidate])
    func startElectionAfterTimeout(role: RaftRole) {
        var r = newTestRaft(1, peers: [1, 2, 3], election: 10)
        if role == .candidate { r.becomeCandidate() }
        let termBefore = r.term
        r.tick(times: 2 * 10)
        #expect(r.role == .candidate)
        #expect(r.term == termBefore + 1)
        #expect(r.vote == 1)
        let msgs = r.readMessages().filter { $0.type == .msgVote }.sorted { $0.to < $1.to }
        #expect(msgs.map(\.to) == [2, 3])
        #expect(msgs.allSatisfy { $0.term == termBefore + 1 })
    }

    // §5.2: a candidate wins with votes from a majority; loses when a
    // majority rejects; otherwise stays a candidate.
    @Test(arguments: [
        (3, [2: true, 3: true], RaftRole.leader),
        (3, [2: true], .leader),
        (3, [2: false, 3: false], .follower),
        (3, [:], .candidate),
        (5, [2: true, 3: true], .leader),
        (5, [2: true], .candidate),
        (5, [2: false, 3: false, 4: false], .follower),
        (5, [2: true, 3: false, 4: false], .candidate),
    ] as [(Int, [NodeID: Bool], RaftRole)])
    func electionInOneRound(size: Int, votes: [NodeID: Bool], expected: RaftRole) throws {
        let peers = (1...size).map { NodeID($0) }
        var r = newTestRaft(1, peers: peers)
        try r.step(hup(1))
        for (id, granted) in votes.sorted(by: { $0.key < $1.key }) {
            try r.step(msg(.msgVoteResp, from: id, to: 1, term: r.term, reject: !granted))
        }
        #expect(r.role == expected)
        #expect(r.term == 1)
    }

    // §5.2: "Each server will vote for at most one candidate in a given term,
    // on a first-come-first-served basis."
    @Test(arguments: [
        (noNode, NodeID(2), false),
        (noNode, NodeID(3), false),
        (NodeID(2), NodeID(2), false),
        (NodeID(3), NodeID(3), false),
        (NodeID(2), NodeID(3), true),
        (NodeID(3), NodeID(2), true),
    ])
    func followerVotesOncePerTerm(priorVote: NodeID, candidate: NodeID, rejected: Bool) throws {
        var r = newTestRaft(1, peers: [1, 2, 3])
        r.term = 1
        r.vote = priorVote
        try r.step(msg(.msgVote, from: candidate, to: 1, term: 1))
        let msgs = r.readMessages()
        #expect(msgs == [Message(type: .msgVoteResp, to: candidate, from: 1, term: 1, reject: rejected)])
    }

    // §5.2: "While waiting for votes, a candidate may receive an
    // AppendEntries RPC from another server claiming to be leader. If the
    // leader's term is at least as large as the candidate's current term,
    // then the candidate ... returns to follower state."
    @Test(arguments: [UInt64(1), 2])
    func candidateFallsBackOnAppend(termOffset: UInt64) throws {
        var r = newTestRaft(1, peers: [1, 2, 3])
        try r.step(hup(1))
        #expect(r.role == .candidate)
        let t = r.term + termOffset - 1
        try r.step(msg(.msgApp, from: 2, to: 1, term: t))
        #expect(r.role == .follower)
        #expect(r.term == t)
        #expect(r.lead == 2)
    }

    // §5.2: "Raft uses randomized election timeouts ... chosen randomly from
    // a fixed interval": here [electionTick, 2 * electionTick).
    @Test func electionTimeoutIsRandomizedWithinRange() {
        var seen = Set<Int>()
        for seed in UInt64(0)..<200 {
            var r = newTestRaft(1, peers: [1, 2, 3], election: 10) { $0.randomSeed = seed }
            var ticks = 0
            while r.role == .follower {
                r.tick()
                ticks += 1
            }
            #expect(ticks >= 10 && ticks < 20, "timeout \(ticks)")
            seen.insert(ticks)
        }
        #expect(seen.count > 5, "timeouts should vary, saw \(seen.sorted())")
    }

    // The same seed gives the same timeouts: the randomness is injected.
    @Test func electionTimeoutIsDeterministicForASeed() {
        func timeouts(_ seed: UInt64) -> [Int] {
            var r = newTestRaft(1, peers: [1, 2, 3], election: 10) { $0.randomSeed = seed }
            var out: [Int] = []
            for _ in 0..<5 {
                r.becomeFollower(term: r.term, lead: noNode)
                out.append(r.randomizedElectionTimeout)
            }
            return out
        }
        #expect(timeouts(99) == timeouts(99))
    }

    // §5.2: randomized timeouts make split votes rare: in most runs a single
    // node times out first and wins.
    @Test func splitVotesAreRare() {
        var splitRounds = 0
        for seed in UInt64(0)..<100 {
            var nw = TestNetwork([1, 2, 3], configure: { $0.randomSeed = seed &* 7 &+ $0.id })
            var firstCandidates = 0
            for _ in 0..<40 {
                for id in NodeID(1)...3 {
                    nw.peers[id]!.tick()
                }
                let candidates = (NodeID(1)...3).filter { nw[$0].role == .candidate }
                if !candidates.isEmpty {
                    firstCandidates = candidates.count
                    break
                }
            }
            if firstCandidates > 1 { splitRounds += 1 }
        }
        #expect(splitRounds < 30)
    }

    // A single-node cluster elects itself immediately.
    @Test func singleNodeBecomesLeader() throws {
        var r = newTestRaft(1, peers: [1])
        try r.step(hup(1))
        #expect(r.role == .leader)
        #expect(r.log.committed == 1)  // its empty entry commits at once
    }

    // §5.2: a leader is elected through the network and the others follow it.
    @Test func electionThroughNetwork() {
        var nw = TestNetwork([1, 2, 3])
        nw.send(hup(1))
        #expect(nw[1].role == .leader)
        #expect(nw[2].role == .follower && nw[2].lead == 1)
        #expect(nw[3].role == .follower && nw[3].lead == 1)
        #expect(nw[1].log.committed == 1)
    }

    // Votes are recorded in the hard state before the response leaves: a
    // RawNode hands out a vote response only with the hard state holding it.
    @Test func voteIsPersistedBeforeResponse() throws {
        let storage = makeStorage(voters: [1, 2, 3])
        var node = try RawNode(config: makeConfig(1, storage: storage))
        try node.step(msg(.msgVote, from: 2, to: 1, term: 3, logTerm: 0, index: 0))
        let rd = node.ready()
        #expect(rd.messages.map(\.type) == [.msgVoteResp])
        #expect(rd.messages[0].reject == false)
        #expect(rd.hardState == HardState(term: 3, vote: 2, commit: 0))
        #expect(rd.mustSync)
    }
}
