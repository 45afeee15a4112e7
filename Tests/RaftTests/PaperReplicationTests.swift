// Rules of §5.3 (log replication) and §5.4 (safety) of the Raft paper.
import FoundationEssentials
import Testing
@testable import Raft

/// A leader of term 1 for peers 1...n with its empty entry committed.
func committedLeader(_ peers: [NodeID] = [1, 2, 3]) throws -> RaftCore {
    var r = newTestRaft(1, peers: peers)
    r.becomeCandidate()
    r.becomeLeader()
    for id in peers where id != 1 {
        try r.step(msg(.msgAppResp, from: id, to: 1, term: r.term, index: 1))
    }
    #expect(r.log.committed == 1)
    _ = r.readMessages()
    return r
}

@Suite struct PaperReplicationTests {
    // §5.3: "The leader appends the command to its log as a new entry, then
    // issues AppendEntries RPCs in parallel to each of the other servers."
    @Test func leaderStartsReplication() throws {
        var r = try committedLeader()
        try r.step(propMsg(1, "some data"))
        #expect(r.log.lastIndex == 2)
        let msgs = r.readMessages().sorted { $0.to < $1.to }
        #expect(msgs.count == 2)
        for (m, to) in zip(msgs, [NodeID(2), 3]) {
            #expect(m.type == .msgApp && m.to == to)
            #expect(m.index == 1 && m.logTerm == 1 && m.commit == 1)
            #expect(m.entries == [entry(2, 1, "some data")])
        }
        #expect(r.log.unstableEntries.last == entry(2, 1, "some data"))
    }

    // §5.3: "A log entry is committed once the leader that created the entry
    // has replicated it on a majority of the servers"; the leader includes
    // the commit index in future AppendEntries.
    @Test func leaderCommitsOnMajority() throws {
        var r = try committedLeader()
        try r.step(propMsg(1, "x"))
        _ = r.readMessages()
        try r.step(msg(.msgAppResp, from: 2, to: 1, term: 1, index: 2))
        #expect(r.log.committed == 2)
        let msgs = r.readMessages().filter { $0.type == .msgApp }
        #expect(!msgs.isEmpty)
        #expect(msgs.allSatisfy { $0.commit == 2 })
    }

    // §5.3: commit needs a majority of acknowledgements, counting the leader.
    @Test(arguments: [
        (3, [NodeID](), false), (3, [2], true), (3, [2, 3], true),
        (5, [2], false), (5, [2, 3], true), (5, [2, 3, 4, 5], true),
        (1, [], true),
    ] as [(Int, [NodeID], Bool)])
    func leaderAcknowledgesCommit(size: Int, acks: [NodeID], committed: Bool) throws {
        let peers = (1...size).map { NodeID($0) }
        var r = try committedLeader(peers)
        try r.step(propMsg(1, "x"))
        for id in acks { try r.step(msg(.msgAppResp, from: id, to: 1, term: 1, index: 2)) }
        #expect((r.log.committed == 2) == committed)
    }

    // §5.3: "This also commits all preceding entries in the leader's log,
    // including entries created by previous leaders."
    @Test func leaderCommitsPrecedingEntries() throws {
        let storage = makeStorage(voters: [1, 2, 3])
        try storage.append([entry(1, 1), entry(2, 2)])
        var r = newTestRaft(1, peers: [1, 2, 3], storage: storage)
        r.term = 2
        r.becomeCandidate()  // term 3
        r.becomeLeader()
        try r.step(propMsg(1, "x"))
        for id: NodeID in [2, 3] { try r.step(msg(.msgAppResp, from: id, to: 1, term: 3, index: 4)) }
        #expect(r.log.committed == 4)
        #expect(r.log.nextCommittedEntries.map(\.index) == [1, 2, 3, 4])
    }

    // §5.3: "Once a follower learns that a log entry is committed, it applies
    // the entry to its local state machine (in log order)."
    @Test func followerCommitsEntries() throws {
        var r = newTestRaft(1, peers: [1, 2, 3])
        r.becomeFollower(term: 1, lead: 2)
        let ents = [entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")]
        try r.step(msg(.msgApp, from: 2, to: 1, term: 1, logTerm: 0, index: 0, entries: ents, commit: 2))
        #expect(r.log.committed == 2)
        #expect(r.log.nextCommittedEntries == Array(ents.prefix(2)))
    }

    // §5.3: "If the follower does not find an entry in its log with the same
    // index and term, then it refuses the new entries." The rejection
    // carries a hint for the leader.
    @Test(arguments: [
        // (logTerm, index, reject, hintIndex, hintTerm)
        (UInt64(0), UInt64(0), false, UInt64(0), UInt64(0)),
        (1, 1, false, 0, 0),
        (2, 2, false, 0, 0),
        (1, 2, true, 1, 1),  // mismatch at 2: our entry 2 has term 2 > 1, hint at 1
        (3, 3, true, 2, 2),  // we do not have index 3: hint at our last index
    ] as [(UInt64, UInt64, Bool, UInt64, UInt64)])
    func followerChecksConsistency(logTerm: UInt64, index: UInt64, reject: Bool, hintIndex: UInt64, hintTerm: UInt64) throws {
        let storage = makeStorage(voters: [1, 2, 3])
        try storage.append([entry(1, 1), entry(2, 2)])
        var r = newTestRaft(1, peers: [1, 2, 3], storage: storage)
        r.loadCommit(1)
        r.becomeFollower(term: 2, lead: 2)
        try r.step(msg(.msgApp, from: 2, to: 1, term: 2, logTerm: logTerm, index: index, commit: 1))
        let resp = try #require(r.readMessages().first)
        #expect(resp.type == .msgAppResp)
        #expect(resp.reject == reject)
        if reject {
            #expect(resp.rejectHint == hintIndex)
            #expect(resp.logTerm == hintTerm)
        }
    }

    // §5.3: "If an existing entry conflicts with a new one (same index but
    // different terms), delete the existing entry and all that follow it;
    // append any new entries not already in the log."
    @Test(arguments: [
        (UInt64(2), UInt64(2), [entry(3, 3)], [entry(1, 1), entry(2, 2), entry(3, 3)]),
        (1, 1, [entry(2, 3), entry(3, 4)], [entry(1, 1), entry(2, 3), entry(3, 4)]),
        (0, 0, [entry(1, 1)], [entry(1, 1), entry(2, 2)]),
        (0, 0, [entry(1, 3)], [entry(1, 3)]),
    ] as [(UInt64, UInt64, [Entry], [Entry])])
    func followerAppendsAndTruncatesConflicts(index: UInt64, logTerm: UInt64, ents: [Entry], expected: [Entry]) throws {
        let storage = makeStorage(voters: [1, 2, 3])
        try storage.append([entry(1, 1), entry(2, 2)])
        var r = newTestRaft(1, peers: [1, 2, 3], storage: storage)
        r.becomeFollower(term: 2, lead: 2)
        try r.step(msg(.msgApp, from: 2, to: 1, term: 2, logTerm: logTerm, index: index, entries: ents))
        #expect(r.logEntries == expected)
    }

    // §5.3 (Figure 7): the leader brings any follower's log in line with its
    // own, whatever the follower has missed or has extra.
    @Test(arguments: 0..<6)
    func leaderSyncsFollowerLog(caseIndex: Int) throws {
        let leaderTerms: [UInt64] = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
        let followerLogs: [[UInt64]] = [
            [1, 1, 1, 4, 4, 5, 5, 6, 6],  // (a) missing one
            [1, 1, 1, 4],  // (b) missing many
            [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],  // (c) extra uncommitted
            [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],  // (d) extra from a later term
            [1, 1, 1, 4, 4, 4, 4],  // (e) conflicting tail
            [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],  // (f) long conflicting tail
        ]
        func log(_ terms: [UInt64]) -> [Entry] { terms.enumerated().map { entry(UInt64($0.offset + 1), $0.element) } }
        let leaderStorage = makeStorage(voters: [1, 2, 3])
        try leaderStorage.append(log(leaderTerms))
        leaderStorage.setHardState(HardState(term: 8, vote: 0, commit: 0))
        var lead = newTestRaft(1, peers: [1, 2, 3], storage: leaderStorage)
        let followerStorage = makeStorage(voters: [1, 2, 3])
        try followerStorage.append(log(followerLogs[caseIndex]))
        followerStorage.setHardState(HardState(term: 7, vote: 0, commit: 0))
        let follower = newTestRaft(2, peers: [1, 2, 3], storage: followerStorage)
        lead.term = 8
        var nw = TestNetwork([1, 2, 3], nodes: [1: lead, 2: follower])
        // Node 3 only votes: it grants the leader its vote and drops the rest.
        nw.send(hup(1))
        nw.send(propMsg(1, ""))
        #expect(nw[1].role == .leader)
        #expect(nw[2].logEntries.map(\.term) == nw[1].logEntries.map(\.term))
        #expect(nw[2].log.committed == nw[1].log.committed)
    }

    // Fast back-off: a follower with a long divergent tail is repaired in a
    // handful of round trips, not one per entry.
    @Test func conflictBackoffSkipsWholeTerms() throws {
        let leaderStorage = makeStorage(voters: [1, 2, 3])
        try leaderStorage.append((1...100).map { entry($0, $0 <= 5 ? 1 : 3) })
        leaderStorage.setHardState(HardState(term: 3, vote: 1, commit: 5))
        let followerStorage = makeStorage(voters: [1, 2, 3])
        try followerStorage.append((1...100).map { entry($0, $0 <= 5 ? 1 : 2) })
        followerStorage.setHardState(HardState(term: 2, vote: 0, commit: 5))
        let nw0 = TestNetwork([1, 2, 3], nodes: [
            1: newTestRaft(1, peers: [1, 2, 3], storage: leaderStorage),
            2: newTestRaft(2, peers: [1, 2, 3], storage: followerStorage),
        ])
        var nw = nw0
        nw.send(hup(1))
        #expect(nw[1].role == .leader)
        let rejects = nw.delivered.filter { $0.type == .msgAppResp && $0.reject && $0.from == 2 }
        #expect(rejects.count <= 2, "took \(rejects.count) rejections")
        #expect(nw[2].logEntries.map(\.term) == nw[1].logEntries.map(\.term))
    }
}

extension RaftCore {
    mutating func loadCommit(_ c: UInt64) { log.commit(to: c) }
}

@Suite struct PaperSafetyTests {
    // §5.4.1: "the voter denies its vote if its own log is more up-to-date
    // than that of the candidate."
    @Test(arguments: [
        // candidate (index, logTerm), voter log ends at (2, 2)
        (UInt64(2), UInt64(1), true), (3, 1, true), (1, 2, true),
        (2, 2, false), (3, 2, false), (1, 3, false),
    ] as [(UInt64, UInt64, Bool)])
    func voterRejectsLessUpToDateCandidate(index: UInt64, logTerm: UInt64, reject: Bool) throws {
        let storage = makeStorage(voters: [1, 2, 3])
        try storage.append([entry(1, 1), entry(2, 2)])
        var r = newTestRaft(1, peers: [1, 2, 3], storage: storage)
        try r.step(msg(.msgVote, from: 2, to: 1, term: 3, logTerm: logTerm, index: index))
        let resp = try #require(r.readMessages().first)
        #expect(resp.type == .msgVoteResp)
        #expect(resp.reject == reject)
    }

    // §5.4.1: a candidate whose log lacks committed entries cannot win.
    @Test func staleCandidateCannotWin() throws {
        var nw = TestNetwork([1, 2, 3])
        nw.send(hup(1))
        nw.isolate(3)
        nw.send(propMsg(1, "committed"))
        #expect(nw[1].log.committed == 2)
        nw.recover()
        // Node 3 missed the entry; its election must fail.
        nw.peers[1]!.becomeFollower(term: nw[1].term, lead: noNode)
        nw.send(hup(3))
        #expect(nw[3].role != .leader)
        nw.send(hup(2))
        #expect(nw[2].role == .leader)
        #expect(nw[2].logEntries.contains { $0.data == Data("committed".utf8) })
    }

    // §5.4.2: "Raft never commits log entries from previous terms by
    // counting replicas." (The Figure 8 situation.)
    @Test func leaderOnlyCommitsCurrentTermByCounting() throws {
        let storage = makeStorage(voters: [1, 2, 3])
        try storage.append([entry(1, 1), entry(2, 2)])
        storage.setHardState(HardState(term: 2, vote: 0, commit: 0))
        var r = newTestRaft(1, peers: [1, 2, 3], storage: storage)
        r.becomeCandidate()  // term 3
        r.becomeLeader()  // appends empty entry 3 at term 3
        _ = r.readMessages()
        // A majority acknowledges the old entry 2 only: must not commit.
        try r.step(msg(.msgAppResp, from: 2, to: 1, term: 3, index: 2))
        #expect(r.log.committed == 0)
        // Once the current-term entry reaches a majority, everything commits.
        try r.step(msg(.msgAppResp, from: 2, to: 1, term: 3, index: 3))
        #expect(r.log.committed == 3)
    }

    // §5.4.3 (leader completeness), through a network: after leader changes,
    // every committed entry is in the new leader's log.
    @Test func committedEntriesSurviveLeaderChanges() throws {
        var nw = TestNetwork([1, 2, 3, 4, 5])
        nw.send(hup(1))
        for i in 0..<3 { nw.send(propMsg(1, "a\(i)")) }
        let committed = nw[1].log.committed
        nw.isolate(1)
        nw.send(hup(2))
        #expect(nw[2].role == .leader)
        for index in 1...committed {
            #expect(nw[2].log.termOrZero(index) == nw[1].log.termOrZero(index))
        }
    }
}
