// Log compaction and snapshots: sending, restoring, status reports.
import FoundationEssentials
import Testing
@testable import Raft

/// Leader 1 whose storage is compacted to a snapshot at index 11.
func leaderWithSnapshot() throws -> (RaftCore, MemoryStorage) {
    let storage = makeStorage(voters: [1, 2])
    try storage.applySnapshot(Snapshot(data: Data("state".utf8), metadata: SnapshotMetadata(confState: ConfState(voters: [1, 2]), index: 11, term: 11)))
    var r = newTestRaft(1, peers: [1, 2], storage: storage)
    r.becomeCandidate()
    r.becomeLeader()
    _ = r.readMessages()
    return (r, storage)
}

@Suite struct SnapshotTests {
    // A follower whose next entry is compacted away gets the snapshot.
    @Test func leaderSendsSnapshotToLaggingFollower() throws {
        var (r, _) = try leaderWithSnapshot()
        r.tracker[2]!.next = 5  // needs entries before the snapshot
        r.tracker[2]!.recentActive = true
        r.sendAppend(to: 2)
        let m = try #require(r.readMessages().first)
        #expect(m.type == .msgSnap)
        #expect(m.snapshot?.metadata.index == 11)
        #expect(r.tracker[2]!.state == .snapshot)
        #expect(r.tracker[2]!.pendingSnapshot == 11)
        // Paused while the snapshot is in flight.
        try r.step(propMsg(1, "x"))
        #expect(r.readMessages().filter { $0.to == 2 }.isEmpty)
    }

    // A successful report moves the follower to probe, waiting for a
    // heartbeat response before sending.
    @Test func snapshotSucceededReport() throws {
        var (r, _) = try leaderWithSnapshot()
        r.tracker[2]!.becomeSnapshot(11)
        try r.step(Message(type: .msgSnapStatus, from: 2, reject: false))
        #expect(r.tracker[2]!.state == .probe)
        #expect(r.tracker[2]!.next == 12)
        #expect(r.tracker[2]!.probeSent)
    }

    // A failed report forgets the pending snapshot so it is sent again.
    @Test func snapshotFailedReport() throws {
        var (r, _) = try leaderWithSnapshot()
        r.tracker[2]!.becomeSnapshot(11)
        try r.step(Message(type: .msgSnapStatus, from: 2, reject: true))
        #expect(r.tracker[2]!.state == .probe)
        #expect(r.tracker[2]!.pendingSnapshot == 0)
        #expect(r.tracker[2]!.next == 1)
    }

    // An acknowledgement at or past the snapshot resumes replication.
    @Test func snapshotAckResumesReplication() throws {
        var (r, _) = try leaderWithSnapshot()
        r.tracker[2]!.becomeSnapshot(11)
        try r.step(msg(.msgAppResp, from: 2, to: 1, term: r.term, index: 11))
        #expect(r.tracker[2]!.state == .replicate)
        #expect(r.tracker[2]!.match == 11)
    }

    // The follower restores the snapshot: log, commit and membership.
    @Test func followerRestoresSnapshot() throws {
        var r = newTestRaft(2, peers: [1, 2])
        let snap = Snapshot(metadata: SnapshotMetadata(confState: ConfState(voters: [1, 2, 3]), index: 11, term: 11))
        try r.step(Message(type: .msgSnap, to: 2, from: 1, term: 11, snapshot: snap))
        #expect(r.log.lastIndex == 11)
        #expect(r.log.committed == 11)
        #expect(r.tracker.voterIDs == [1, 2, 3])
        #expect(r.log.hasPendingSnapshot)
        let resp = try #require(r.readMessages().first)
        #expect(resp.type == .msgAppResp && resp.index == 11)
    }

    // A snapshot older than the commit index is ignored.
    @Test func staleSnapshotIgnored() throws {
        var r = newTestRaft(2, peers: [1, 2])
        try r.step(msg(.msgApp, from: 1, to: 2, term: 2, logTerm: 0, index: 0, entries: (1...5).map { entry($0, 2) }, commit: 5))
        _ = r.readMessages()
        let snap = Snapshot(metadata: SnapshotMetadata(confState: ConfState(voters: [1, 2]), index: 3, term: 2))
        try r.step(Message(type: .msgSnap, to: 2, from: 1, term: 2, snapshot: snap))
        #expect(!r.log.hasPendingSnapshot)
        #expect(r.log.lastIndex == 5)
        #expect(r.readMessages().first?.index == 5)
    }

    // A snapshot matching our log only fast-forwards the commit index.
    @Test func snapshotMatchingLogFastForwardsCommit() throws {
        var r = newTestRaft(2, peers: [1, 2])
        try r.step(msg(.msgApp, from: 1, to: 2, term: 2, logTerm: 0, index: 0, entries: (1...5).map { entry($0, 2) }, commit: 1))
        let snap = Snapshot(metadata: SnapshotMetadata(confState: ConfState(voters: [1, 2]), index: 4, term: 2))
        try r.step(Message(type: .msgSnap, to: 2, from: 1, term: 2, snapshot: snap))
        #expect(!r.log.hasPendingSnapshot)
        #expect(r.log.committed == 4)
        #expect(r.log.lastIndex == 5)
    }

    // End to end: compact the leader, bring a fresh node in through RawNode.
    @Test func laggingFollowerCatchesUpThroughSnapshot() throws {
        let cluster = SimulatedCluster(voters: [1, 2, 3], seed: 5)
        cluster.crash(3)
        for _ in 0..<30 {
            cluster.tickAll()
            cluster.stabilize()
        }
        let leader = try #require(cluster.currentLeader)
        for i in 0..<20 { _ = cluster.propose(leader, Data("v\(i)".utf8)) }
        cluster.stabilize()
        for id: NodeID in [1, 2] {
            let n = cluster.node(id)
            try n.storage.createSnapshot(index: n.appliedIndex, confState: n.confState, data: Data("snap".utf8))
            try n.storage.compact(n.appliedIndex)
        }
        cluster.restart(3)
        for _ in 0..<10 {
            cluster.tickAll()
            cluster.stabilize()
        }
        let n3 = cluster.node(3)
        #expect(n3.storage.currentSnapshot.data == Data("snap".utf8))
        #expect(n3.appliedIndex == cluster.node(leader).appliedIndex)
        #expect(cluster.violations.isEmpty)
    }

    @Test func memoryStorageCompactionAndErrors() throws {
        let s = MemoryStorage()
        try s.append((1...5).map { entry($0, 1) })
        #expect(try s.lastIndex() == 5)
        try s.createSnapshot(index: 3, confState: ConfState(voters: [1]), data: Data())
        try s.compact(3)
        #expect(try s.firstIndex() == 4)
        #expect(throws: RaftError.compacted) { try s.term(2) }
        #expect(try s.term(3) == 1)
        #expect(throws: RaftError.unavailable) { try s.term(6) }
        #expect(throws: RaftError.compacted) { try s.entries(3, 5, maxSizeBytes: .max) }
        #expect(try s.entries(4, 6, maxSizeBytes: .max).map(\.index) == [4, 5])
        #expect(throws: RaftError.snapshotOutOfDate) {
            try s.applySnapshot(Snapshot(metadata: SnapshotMetadata(index: 2, term: 1)))
        }
        // Overlapping append replaces the tail.
        try s.append([entry(5, 2), entry(6, 2)])
        #expect(try s.term(5) == 2)
        #expect(try s.lastIndex() == 6)
    }
}
