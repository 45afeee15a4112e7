@testable import EtcdServer
import Testing

/// etcd 3.6's compaction hash check rules (`checkPeerHashes`,
/// `uncheckedRevisions`), one test per rule.
@Suite struct CompactionHashRulesTests {
    typealias Peer = CorruptionCheck.PeerHash
    typealias Verdict = CorruptionCheck.CompactionVerdict

    let leader = CorruptionCheck.CompactionHash(hash: 100, revision: 50, compactRevision: 30)

    func peer(_ id: UInt64, _ hash: UInt32, compactRevision: Int64 = 30) -> (id: UInt64, answer: Peer?) {
        (id, Peer(memberID: id, hash: hash, compactRevision: compactRevision, currentRevision: 60))
    }

    func verdict(_ peers: [(id: UInt64, answer: Peer?)]) -> Verdict {
        CorruptionCheck.compactionVerdict(leaderID: 1, leader: leader, peers: peers)
    }

    @Test func everyPeerWithTheLeadersHashIsConsistent() {
        #expect(verdict([peer(2, 100), peer(3, 100)]) == .consistent(peersChecked: 2))
    }

    @Test func peersWithoutAnAnswerOrAtAnotherCompactionAreSkipped() {
        #expect(verdict([peer(2, 100), (3, nil)]) == .incomplete(peersChecked: 1))
        // A different hash for another previous compaction is no evidence.
        #expect(verdict([peer(2, 100), peer(3, 7, compactRevision: 20)]) == .incomplete(peersChecked: 1))
        #expect(verdict([(2, nil), (3, nil)]) == .incomplete(peersChecked: 0))
    }

    @Test func theMembersOutsideAMajorityAreAlarmed() {
        let oneDiverged = verdict([peer(2, 100), peer(3, 7), peer(4, 100), peer(5, 100)])
        #expect(oneDiverged == .mismatch(alarms: [3], minority: [(hash: 7, members: [3])]))
        // Three of five agree against the leader: the leader is the odd one.
        let leaderDiverged = verdict([peer(2, 7), peer(3, 7), peer(4, 7), (5, nil)])
        #expect(leaderDiverged == .mismatch(alarms: [1], minority: [(hash: 100, members: [1])]))
    }

    @Test func withoutAMajorityTheWholeClusterIsAlarmed() {
        // Three members, three hashes: nobody knows which is right.
        #expect(verdict([peer(2, 7), peer(3, 8)])
            == .mismatch(alarms: [0], minority: [(hash: 100, members: [1]), (hash: 7, members: [2]), (hash: 8, members: [3])]))
        // A skipped peer still counts towards the quorum size (3 of 5).
        #expect(verdict([peer(2, 7), peer(3, 7), (4, nil), (5, nil)])
            == .mismatch(alarms: [0], minority: [(hash: 100, members: [1]), (hash: 7, members: [2, 3])]))
    }

    @Test func onlyHashesNewerThanTheLastCheckedAreTakenNewestFirst() {
        let hashes = [30, 40, 50, 60].map { CorruptionCheck.CompactionHash(hash: UInt32($0), revision: Int64($0), compactRevision: Int64($0 - 10)) }
        #expect(CorruptionCheck.unchecked(hashes, after: 0).map(\.revision) == [60, 50, 40, 30])
        #expect(CorruptionCheck.unchecked(hashes, after: 40).map(\.revision) == [60, 50])
        #expect(CorruptionCheck.unchecked(hashes, after: 60).isEmpty)
    }
}
