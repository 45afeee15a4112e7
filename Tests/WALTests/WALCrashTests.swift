import EtcdProto
import Foundation
import Testing
import SimulatedDisk
@testable import WAL

/// Crash consistency against `SimulatedFileSystem`: a seeded workload is
/// cut short by a crash at some file-system call, the disk is rebuilt the
/// way a real one might be after power loss, and the log must reopen with
/// every acknowledged write intact and nothing that was never written.
@Suite struct WALCrashTests {
    static let dir = "/data/member/wal"

    /// What the workload has had acknowledged (the call returned after an
    /// fsync) and what it attempted.
    struct History {
        var written: [Raftpb_Entry] = []
        var states: [Raftpb_HardState] = [Raftpb_HardState()]
        var ackedIndex: UInt64 = 0
        var ackedCommit: UInt64 = 0
        var snapshot = WALSnapshot()
        var created = false
    }

    /// Batches of entries with mustSync chosen at random, snapshot markers
    /// and segment releases, on tiny segments. Stops at the first error.
    static func runWorkload(seed: UInt64, fs: SimulatedFileSystem) -> History {
        var generator = SplitMix64(seed: seed)
        var history = History()
        let segmentSize = Int64(512 + generator.next() % 1536)
        do {
            let wal = try WAL.create(dir: dir, metadata: Data("seed \(seed)".utf8), segmentSizeBytes: segmentSize, fs: fs)
            history.created = true
            for _ in 0..<24 {
                let snapshotIndex = UInt64(history.written.count) - min(UInt64(history.written.count), generator.next() % 2)
                if generator.next() % 8 == 0, snapshotIndex > history.snapshot.index {
                    let index = snapshotIndex
                    let marker = WALSnapshot(index: index, term: 1)
                    try wal.saveSnapshot(marker)
                    // From here on the server would restart from this
                    // snapshot (its file is written before the marker).
                    history.snapshot = marker
                    history.ackedIndex = UInt64(history.written.count)
                    history.ackedCommit = history.states.last!.commit
                    try wal.release(below: index)
                    continue
                }
                let count = 1 + Int(generator.next() % 4)
                let first = UInt64(history.written.count) + 1
                let entries = (first..<(first + UInt64(count))).map {
                    makeEntry(index: $0, term: 1, dataBytes: 1 + Int(generator.next() % 200))
                }
                let state = makeHardState(term: 1, commit: first + UInt64(count) - 1)
                let mustSync = generator.next() % 3 != 0
                history.written += entries
                history.states.append(state)
                try wal.save(hardState: state, entries: entries, mustSync: mustSync)
                if mustSync {
                    history.ackedIndex = UInt64(history.written.count)
                    history.ackedCommit = state.commit
                }
            }
            wal.close()
        } catch {
            #expect(error == SimulatedFileSystem.crashError)
        }
        return history
    }

    /// Reopens after a crash and checks the recovered log against the
    /// history, then that it takes and keeps a new write.
    static func checkRecovery(_ history: History, fs: SimulatedFileSystem, context: String) throws {
        guard WAL.exists(in: dir, fs: fs) else {
            // Creation never completed, so nothing can have been acknowledged.
            #expect(history.ackedIndex == 0, "\(context)")
            return
        }
        let start = history.snapshot
        let wal = try WAL.open(dir: dir, at: start, segmentSizeBytes: 1024, fs: fs)
        let contents = try wal.readAll()
        let recovered = contents.entries
        // Contiguous after the snapshot, exactly as written, and covering
        // everything acknowledged.
        #expect(recovered.first.map { $0.index == start.index + 1 } ?? true, "\(context)")
        #expect(UInt64(recovered.count) + start.index >= history.ackedIndex, "\(context): lost acknowledged entries")
        let expected = Array(history.written.dropFirst(Int(start.index)).prefix(recovered.count))
        #expect(sameEntries(recovered, expected), "\(context): entries differ from what was written")
        #expect(history.states.contains { sameState($0, contents.hardState) }, "\(context): unknown hard state")
        #expect(contents.hardState.commit >= history.ackedCommit, "\(context): lost acknowledged hard state")

        let next = makeEntry(index: start.index + UInt64(recovered.count) + 1, term: 2)
        try wal.save(hardState: makeHardState(term: 2, commit: next.index), entries: [next], mustSync: true)
        wal.close()
        let again = try WAL.open(dir: dir, at: start, segmentSizeBytes: 1024, fs: fs)
        #expect(sameEntries(try again.readAll().entries, recovered + [next]), "\(context): append after recovery")
        again.close()
    }

    @Test func recoversFromACrashAtEveryFileSystemCall() throws {
        for seed in UInt64(0)..<4 {
            let total = { () -> Int in
                let fs = SimulatedFileSystem()
                _ = Self.runWorkload(seed: seed, fs: fs)
                return fs.mutations
            }()
            #expect(total > 50)
            for crashPoint in 1...total {
                let fs = SimulatedFileSystem()
                fs.crash(atMutation: crashPoint)
                let history = Self.runWorkload(seed: seed, fs: fs)
                var generator = SplitMix64(seed: seed &* 7919 &+ UInt64(crashPoint))
                fs.recoverFromCrash(using: &generator)
                let context = "seed \(seed), crash at call \(crashPoint)"
                #expect(throws: Never.self, "\(context)") {
                    try Self.checkRecovery(history, fs: fs, context: context)
                }
            }
        }
    }

    @Test func recoversFromCrashesUnderManySeeds() throws {
        for seed in UInt64(100)..<160 {
            var picker = SplitMix64(seed: seed)
            let probe = SimulatedFileSystem()
            _ = Self.runWorkload(seed: seed, fs: probe)
            for _ in 0..<6 {
                let crashPoint = 1 + Int(picker.next() % UInt64(probe.mutations))
                let fs = SimulatedFileSystem()
                fs.crash(atMutation: crashPoint)
                let history = Self.runWorkload(seed: seed, fs: fs)
                fs.recoverFromCrash(using: &picker)
                let context = "seed \(seed), crash at call \(crashPoint)"
                #expect(throws: Never.self, "\(context)") {
                    try Self.checkRecovery(history, fs: fs, context: context)
                }
            }
        }
    }
}
