@testable import EtcdServer
import Testing

/// etcd's hash-comparison rules (`etcdserver/corrupt.go`), one test per rule.
@Suite struct CorruptionCheckRulesTests {
    typealias Local = CorruptionCheck.LocalHash
    typealias Peer = CorruptionCheck.PeerHash

    let leader = Local(hash: 100, revision: 50, compactRevision: 10)

    @Test func initialCheckFlagsADifferentHashOnlyAtTheSameCompactRevision() {
        let peers = [
            Peer(memberID: 2, hash: 100, compactRevision: 10, currentRevision: 60),
            Peer(memberID: 3, hash: 999, compactRevision: 10, currentRevision: 50),
            Peer(memberID: 4, hash: 999, compactRevision: 20, currentRevision: 70),
        ]
        #expect(CorruptionCheck.initialMismatches(local: leader, peers: peers) == [3])
    }

    @Test func periodicCheckPassesEqualHashesAndFollowersBehind() {
        let peers = [Peer(memberID: 2, hash: 100, compactRevision: 10, currentRevision: 45),
                     Peer(memberID: 3, hash: 7, compactRevision: 5, currentRevision: 40)]
        #expect(CorruptionCheck.periodicFaults(leaderID: 1, before: leader, after: leader, peers: peers).isEmpty)
    }

    @Test func theLeadersOwnHashMayNotChangeAtTheSameRevision() {
        var after = leader
        after.hash = 101
        #expect(CorruptionCheck.periodicFaults(leaderID: 1, before: leader, after: after, peers: []).map(\.memberID) == [1])
        after.revision = 51  // a write in between: a new hash is expected
        #expect(CorruptionCheck.periodicFaults(leaderID: 1, before: leader, after: after, peers: []).isEmpty)
    }

    @Test func aFollowerMayNotBeAheadOfTheLeader() {
        let ahead = Peer(memberID: 2, hash: 100, compactRevision: 10, currentRevision: 51)
        #expect(CorruptionCheck.periodicFaults(leaderID: 1, before: leader, after: leader, peers: [ahead]).map(\.reason)
            == ["revision from follower must be less than or equal to leader's"])
        let compactedAhead = Peer(memberID: 2, hash: 5, compactRevision: 11, currentRevision: 50)
        #expect(CorruptionCheck.periodicFaults(leaderID: 1, before: leader, after: leader, peers: [compactedAhead]).map(\.reason)
            == ["compact revision from follower must be less than or equal to leader's"])
    }

    @Test func aFollowerAtTheSameCompactRevisionMustHaveTheLeadersHash() {
        let diverged = Peer(memberID: 3, hash: 99, compactRevision: 10, currentRevision: 50)
        let faults = CorruptionCheck.periodicFaults(leaderID: 1, before: leader, after: leader, peers: [diverged])
        #expect(faults == [CorruptionCheck.Fault(memberID: 3, reason: "same compact revision then hashes must match")])
    }
}
