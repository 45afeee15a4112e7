// The log (stable + unstable), quorum math, inflights and progress.
import FoundationEssentials
import Testing
@testable import Raft

@Suite struct LogTests {
    func makeLog(_ stored: [Entry], snapshotIndex: UInt64 = 0, snapshotTerm: UInt64 = 0) throws -> RaftLog {
        let s = MemoryStorage()
        if snapshotIndex > 0 {
            try s.applySnapshot(Snapshot(metadata: SnapshotMetadata(index: snapshotIndex, term: snapshotTerm)))
        }
        try s.append(stored)
        return RaftLog(storage: s, maxCommittedBytesPerReady: .max)
    }

    @Test func findConflict() throws {
        let log = try makeLog([entry(1, 1), entry(2, 2), entry(3, 3)])
        #expect(log.findConflict([]) == 0)
        #expect(log.findConflict([entry(1, 1), entry(2, 2), entry(3, 3)]) == 0)
        #expect(log.findConflict([entry(2, 2), entry(3, 3), entry(4, 4)]) == 4)
        #expect(log.findConflict([entry(2, 1), entry(3, 4)]) == 2)
        #expect(log.findConflict([entry(3, 1)]) == 3)
    }

    @Test func findConflictByTerm() throws {
        let log = try makeLog([entry(1, 1), entry(2, 1), entry(3, 3), entry(4, 3), entry(5, 5)])
        #expect(log.findConflictByTerm(index: 5, term: 4) == (index: 4, term: 3))
        #expect(log.findConflictByTerm(index: 5, term: 2) == (index: 2, term: 1))
        #expect(log.findConflictByTerm(index: 5, term: 5) == (index: 5, term: 5))
        #expect(log.findConflictByTerm(index: 5, term: 0) == (index: 0, term: 0))
        #expect(log.findConflictByTerm(index: 9, term: 5) == (index: 9, term: 0))  // beyond our log
        let compacted = try makeLog([entry(11, 4)], snapshotIndex: 10, snapshotTerm: 3)
        #expect(compacted.findConflictByTerm(index: 11, term: 2) == (index: 9, term: 0))
    }

    @Test func isUpToDate() throws {
        let log = try makeLog([entry(1, 1), entry(2, 2), entry(3, 3)])
        #expect(log.isUpToDate(lastIndex: 2, term: 4))
        #expect(log.isUpToDate(lastIndex: 3, term: 3))
        #expect(log.isUpToDate(lastIndex: 4, term: 3))
        #expect(!log.isUpToDate(lastIndex: 2, term: 3))
        #expect(!log.isUpToDate(lastIndex: 4, term: 2))
    }

    @Test func maybeAppendAndCommit() throws {
        var log = try makeLog([entry(1, 1), entry(2, 2), entry(3, 3)])
        do { let r = log.maybeAppend(index: 3, logTerm: 2, committed: 3, entries: [entry(4, 4)]); #expect(r == nil) }
        do { let r = log.maybeAppend(index: 3, logTerm: 3, committed: 4, entries: [entry(4, 4)]); #expect(r == 4) }
        #expect(log.committed == 4)
        // Commit never passes the last new entry from this message.
        do { let r = log.maybeAppend(index: 1, logTerm: 1, committed: 10, entries: []); #expect(r == 1) }
        #expect(log.committed == 4)
    }

    @Test func committedAndAppliedBounds() throws {
        var log = try makeLog([entry(1, 1), entry(2, 1)])
        log.commit(to: 2)
        log.applied(to: 1)
        #expect(log.nextCommittedEntries.map(\.index) == [2])
        log.commit(to: 1)  // never moves backwards
        #expect(log.committed == 2)
    }

    @Test func sliceAcrossStableAndUnstable() throws {
        var log = try makeLog([entry(1, 1), entry(2, 1), entry(3, 1)])
        log.append([entry(4, 2), entry(5, 2)])
        #expect(try log.slice(2, 6, maxSizeBytes: .max).map(\.index) == [2, 3, 4, 5])
        #expect(try log.slice(3, 5, maxSizeBytes: .max).map(\.index) == [3, 4])
        #expect(try log.slice(2, 6, maxSizeBytes: 0).map(\.index) == [2])  // at least one
        log.stableTo(index: 5, term: 2)
        #expect(log.unstableEntries.isEmpty)
    }

    @Test func compactedTermsThrow() throws {
        let log = try makeLog([entry(11, 4), entry(12, 4)], snapshotIndex: 10, snapshotTerm: 3)
        #expect(try log.term(10) == 3)
        #expect(try log.term(12) == 4)
        #expect(try log.term(13) == 0)
        #expect(throws: RaftError.compacted) { try log.slice(9, 11, maxSizeBytes: .max) }
        #expect(log.firstIndex == 11)
    }

    @Test func unstableStableToIgnoresReplacedEntries() {
        var u = UnstableLog(offset: 5)
        u.truncateAndAppend([entry(5, 1), entry(6, 1), entry(7, 1)])
        u.truncateAndAppend([entry(6, 2)])  // replaces 6 and 7
        #expect(u.entries.map(\.term) == [1, 2])
        u.stableTo(index: 6, term: 1)  // stale: 6 is now term 2
        #expect(u.entries.count == 2)
        u.stableTo(index: 5, term: 1)
        #expect(u.offset == 6 && u.entries == [entry(6, 2)])
        u.truncateAndAppend([entry(3, 3)])  // before offset: replaces everything
        #expect(u.offset == 3 && u.entries == [entry(3, 3)])
    }
}

@Suite struct QuorumTests {
    @Test func majorityCommittedIndex() {
        let m = MajorityConfig([1, 2, 3])
        #expect(m.committedIndex { [1: 5, 2: 3, 3: 1][$0] } == 3)
        #expect(m.committedIndex { [1: 5][$0] } == 0)
        #expect(MajorityConfig([1, 2, 3, 4]).committedIndex { [1: 5, 2: 4, 3: 3, 4: 2][$0] } == 3)
        #expect(MajorityConfig().committedIndex { _ in 0 } == .max)
    }

    @Test func jointCommittedIndexIsMinimum() {
        let j = JointConfig(incoming: MajorityConfig([1, 2, 3]), outgoing: MajorityConfig([3, 4, 5]))
        let acked: [NodeID: UInt64] = [1: 10, 2: 10, 3: 5, 4: 1, 5: 1]
        #expect(j.committedIndex { acked[$0] } == 1)
    }

    @Test func voteResults() {
        let m = MajorityConfig([1, 2, 3])
        #expect(m.voteResult([1: true, 2: true]) == .won)
        #expect(m.voteResult([1: true, 2: false]) == .pending)
        #expect(m.voteResult([1: false, 2: false]) == .lost)
        let j = JointConfig(incoming: MajorityConfig([1, 2, 3]), outgoing: MajorityConfig([4, 5, 6]))
        #expect(j.voteResult([1: true, 2: true]) == .pending)
        #expect(j.voteResult([1: true, 2: true, 4: true, 5: true]) == .won)
        #expect(j.voteResult([1: true, 2: true, 4: false, 5: false]) == .lost)
    }
}

@Suite struct ProgressTests {
    @Test func inflightsRingBuffer() {
        var ins = Inflights(capacity: 4)
        for i in UInt64(1)...4 { ins.add(i * 10) }
        #expect(ins.isFull)
        ins.freeLE(20)
        #expect(ins.count == 2)
        ins.add(50)
        ins.add(60)  // wraps around
        #expect(ins.isFull)
        ins.freeLE(55)
        #expect(ins.count == 1)
        ins.freeFirstOne()
        #expect(ins.count == 0)
    }

    @Test func maybeDecrementInProbeAndReplicate() {
        var p = Progress(next: 10, maxInflight: 8, isLearner: false)
        p.match = 3
        let d5 = p.maybeDecrement(rejected: 5, matchHint: 4)
        #expect(!d5)  // stale: not the probe we sent
        let d9 = p.maybeDecrement(rejected: 9, matchHint: 6)
        #expect(d9)
        #expect(p.next == 7)
        p.becomeReplicate()
        p.optimisticUpdate(20)
        let d2 = p.maybeDecrement(rejected: 2, matchHint: 2)
        #expect(!d2)  // below match: stale
        let d15 = p.maybeDecrement(rejected: 15, matchHint: 10)
        #expect(d15)
        #expect(p.next == p.match + 1)
    }

    @Test func pausedStates() {
        var p = Progress(next: 1, maxInflight: 1, isLearner: false)
        #expect(!p.isPaused)
        p.probeSent = true
        #expect(p.isPaused)
        p.becomeReplicate()
        #expect(!p.isPaused)
        p.inflights.add(1)
        #expect(p.isPaused)
        p.becomeSnapshot(9)
        #expect(p.isPaused)
    }
}
