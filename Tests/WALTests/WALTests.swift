import EtcdProto
import Foundation
import Testing
@testable import WAL

@Suite struct WALTests {
    let metadata = Data("node-1/cluster-7".utf8)

    @Test func createSaveReopenRoundTrip() throws {
        try withTemporaryDirectory { temp in
            let dir = temp.walDirectory
            let wal = try WAL.create(dir: dir, metadata: metadata)
            let entries = (1...50).map { makeEntry(index: $0, term: 1 + $0 / 20, dataBytes: Int($0) * 3) }
            try wal.save(hardState: makeHardState(term: 1, commit: 0), entries: Array(entries[0..<20]), mustSync: true)
            try wal.save(hardState: makeHardState(term: 3, commit: 40), entries: Array(entries[20...]), mustSync: false)
            try wal.save(hardState: Raftpb_HardState(), entries: [], mustSync: true)  // no-op
            wal.close()

            #expect(try segmentFiles(in: dir) == ["0000000000000000-0000000000000000.wal"])
            #expect(!FileManager.default.fileExists(atPath: dir + ".tmp"))

            let reopened = try WAL.open(dir: dir, at: WALSnapshot())
            let contents = try reopened.readAll()
            #expect(contents.metadata == metadata)
            #expect(sameState(contents.hardState, makeHardState(term: 3, commit: 40)))
            #expect(sameEntries(contents.entries, entries))

            // Appending continues the CRC chain across sessions.
            try reopened.save(hardState: makeHardState(term: 3, commit: 51), entries: [makeEntry(index: 51, term: 3)], mustSync: true)
            reopened.close()
            let again = try WAL.open(dir: dir, at: WALSnapshot())
            let more = try again.readAll()
            #expect(more.entries.count == 51)
            #expect(more.hardState.commit == 51)
            again.close()
        }
    }

    @Test func createRefusesAnExistingLogAndOpenNeedsOne() throws {
        try withTemporaryDirectory { temp in
            let dir = temp.walDirectory
            #expect(throws: WALError.fileNotFound(path: dir)) { try WAL.open(dir: dir, at: WALSnapshot()) }
            try WAL.create(dir: dir, metadata: metadata).close()
            #expect(WAL.exists(in: dir))
            #expect(throws: WALError.alreadyExists(path: dir)) { try WAL.create(dir: dir, metadata: metadata) }
        }
    }

    @Test func aLogIsLockedWhileOpen() throws {
        try withTemporaryDirectory { temp in
            let dir = temp.walDirectory
            let wal = try WAL.create(dir: dir, metadata: metadata)
            #expect(throws: WALError.locked(path: dir)) { try WAL.open(dir: dir, at: WALSnapshot()) }
            // Reading without intent to append takes no lock.
            #expect(try WAL.readOnly(dir: dir, at: WALSnapshot()).entries.isEmpty)
            wal.close()
            let reopened = try WAL.open(dir: dir, at: WALSnapshot())
            #expect(throws: WALError.locked(path: dir)) { try WAL.open(dir: dir, at: WALSnapshot()) }
            _ = try reopened.readAll()
            reopened.close()
        }
    }

    @Test func manySmallSegments() throws {
        try withTemporaryDirectory { temp in
            let dir = temp.walDirectory
            let segmentSize: Int64 = 2048
            let wal = try WAL.create(dir: dir, metadata: metadata, segmentSizeBytes: segmentSize, fs: noSyncFS)
            var written: [Raftpb_Entry] = []
            var index: UInt64 = 0
            for batch in 0..<60 {
                let entries = (0..<(1 + batch % 5)).map { _ -> Raftpb_Entry in
                    index += 1
                    return makeEntry(index: index, term: 1, dataBytes: 40 + Int(index % 90))
                }
                written += entries
                try wal.save(hardState: makeHardState(term: 1, commit: index), entries: entries, mustSync: batch % 2 == 0)
            }
            wal.close()

            let files = try segmentFiles(in: dir)
            #expect(files.count > 10)
            // Sequence numbers are contiguous; each segment's name carries the
            // index of the first entry in it; only the last one may be
            // preallocated beyond its records, and none overflows.
            for (sequence, file) in files.enumerated() {
                let name = try #require(SegmentName(fileName: file))
                #expect(name.sequence == UInt64(sequence))
                let bytes = try readBytes(dir + "/" + file)
                let frames = try parseFrames(bytes)
                let firstEntry = try frames.first { $0.record.type == 2 }.map { try Raftpb_Entry(serializedBytes: $0.record.data) }
                if sequence > 0 { #expect(firstEntry?.index == name.index) }
                #expect(frames.first?.record.type == WALRecordType.crc.rawValue)
                #expect(frames.dropFirst().first?.record.type == WALRecordType.metadata.rawValue)
                #expect(frames.last.map { $0.frameEnd <= Int(segmentSize) } == true)
                if sequence < files.count - 1 { #expect(bytes.count == frames.last?.frameEnd) }
            }

            let reopened = try WAL.open(dir: dir, at: WALSnapshot(), segmentSizeBytes: segmentSize, fs: noSyncFS)
            let contents = try reopened.readAll()
            #expect(sameEntries(contents.entries, written))
            #expect(contents.hardState.commit == index)
            #expect(contents.metadata == metadata)
            reopened.close()
        }
    }

    @Test func fsyncOncePerMustSyncBatchAndNeverOtherwise() throws {
        try withTemporaryDirectory { temp in
            let fs = CountingFileSystem()
            let wal = try WAL.create(dir: temp.walDirectory, metadata: metadata, fs: fs)
            // Creation: the segment, the temp directory and the parent.
            #expect(fs.snapshot.fileSyncs == 1)
            #expect(fs.snapshot.directorySyncs == 2)

            var index: UInt64 = 0
            func batch() -> [Raftpb_Entry] {
                (0..<100).map { _ in index += 1; return makeEntry(index: index, term: 1, dataBytes: 256) }
            }
            fs.reset()
            try wal.save(hardState: makeHardState(term: 1, commit: index), entries: batch(), mustSync: true)
            #expect(fs.snapshot == .init(fileSyncs: 1, directorySyncs: 0, writes: 1))
            fs.reset()
            try wal.save(hardState: makeHardState(term: 1, commit: index), entries: batch(), mustSync: false)
            #expect(fs.snapshot == .init(fileSyncs: 0, directorySyncs: 0, writes: 1))
            fs.reset()
            try wal.saveSnapshot(WALSnapshot(index: 150, term: 1))
            #expect(fs.snapshot.fileSyncs == 1)
            wal.close()
        }
    }

    @Test func segmentCutSyncsOldSegmentNewSegmentAndDirectory() throws {
        try withTemporaryDirectory { temp in
            let fs = CountingFileSystem()
            let wal = try WAL.create(dir: temp.walDirectory, metadata: metadata, segmentSizeBytes: 4096, fs: fs)
            fs.reset()
            // About 3.5 KB: fits in the first segment.
            try wal.save(hardState: makeHardState(term: 1, commit: 0), entries: (1...12).map { makeEntry(index: $0, term: 1, dataBytes: 256) }, mustSync: true)
            #expect(fs.snapshot.fileSyncs == 1)
            #expect(try segmentFiles(in: temp.walDirectory).count == 1)
            fs.reset()
            // Crosses into a second segment: old + new segment + final sync,
            // and the directory once for the rename.
            try wal.save(hardState: makeHardState(term: 1, commit: 12), entries: (13...16).map { makeEntry(index: $0, term: 1, dataBytes: 256) }, mustSync: true)
            #expect(fs.snapshot.fileSyncs == 3)
            #expect(fs.snapshot.directorySyncs == 1)
            let files = try segmentFiles(in: temp.walDirectory)
            #expect(files.count == 2)
            #expect(files.last.flatMap(SegmentName.init(fileName:))?.sequence == 1)
            wal.close()
        }
    }

    @Test func snapshotMarkersSelectWhereReadingStarts() throws {
        try withTemporaryDirectory { temp in
            let dir = temp.walDirectory
            let wal = try WAL.create(dir: dir, metadata: metadata)
            let entries = (1...30).map { makeEntry(index: $0, term: $0 <= 10 ? 1 : 2) }
            try wal.save(hardState: makeHardState(term: 2, commit: 20), entries: entries, mustSync: true)
            try wal.saveSnapshot(WALSnapshot(index: 10, term: 1))
            try wal.saveSnapshot(WALSnapshot(index: 20, term: 2))
            wal.close()

            let atTen = try WAL.open(dir: dir, at: WALSnapshot(index: 10, term: 1))
            let contents = try atTen.readAll()
            #expect(sameEntries(contents.entries, Array(entries[10...])))
            #expect(contents.hardState.commit == 20)
            atTen.close()

            let wrongTerm = try WAL.open(dir: dir, at: WALSnapshot(index: 20, term: 1))
            #expect(throws: WALError.snapshotMismatch(index: 20, expectedTerm: 1, foundTerm: 2)) { try wrongTerm.readAll() }
            let missing = try WAL.open(dir: dir, at: WALSnapshot(index: 15, term: 2))
            #expect(throws: WALError.snapshotNotFound(index: 15, term: 2)) { try missing.readAll() }

            #expect(try WAL.validSnapshots(dir: dir) == [WALSnapshot(), WALSnapshot(index: 10, term: 1), WALSnapshot(index: 20, term: 2)])
        }
    }

    @Test func laterTermRewritesReplaceTheConflictingSuffix() throws {
        try withTemporaryDirectory { temp in
            let dir = temp.walDirectory
            // Tiny segments so the rewrite lands in a later segment than the
            // entries it replaces.
            let wal = try WAL.create(dir: dir, metadata: metadata, segmentSizeBytes: 1024, fs: noSyncFS)
            let old = (1...20).map { makeEntry(index: $0, term: 1, dataBytes: 60) }
            try wal.save(hardState: makeHardState(term: 1, commit: 5), entries: old, mustSync: true)
            let rewrite = (8...11).map { makeEntry(index: $0, term: 2, dataBytes: 60) }
            try wal.save(hardState: makeHardState(term: 2, commit: 9), entries: rewrite, mustSync: true)
            wal.close()
            #expect(try segmentFiles(in: dir).count > 1)

            let reopened = try WAL.open(dir: dir, at: WALSnapshot(), segmentSizeBytes: 1024, fs: noSyncFS)
            let contents = try reopened.readAll()
            #expect(sameEntries(contents.entries, Array(old[0..<7]) + rewrite))
            #expect(contents.hardState.term == 2)
            reopened.close()
        }
    }

    @Test func anEntryAfterAHoleIsAnError() throws {
        try withTemporaryDirectory { temp in
            let dir = temp.walDirectory
            let wal = try WAL.create(dir: dir, metadata: metadata)
            try wal.save(hardState: Raftpb_HardState(), entries: [makeEntry(index: 1, term: 1), makeEntry(index: 3, term: 1)], mustSync: true)
            wal.close()
            let reopened = try WAL.open(dir: dir, at: WALSnapshot())
            #expect {
                try reopened.readAll()
            } throws: { error in
                guard case let WALError.entryGap(file, _, _, found)? = error as? WALError else { return false }
                return found == 3 && file.hasSuffix("0000000000000000-0000000000000000.wal")
            }
        }
    }

    @Test func releaseRemovesSegmentsBelowTheSnapshot() throws {
        try withTemporaryDirectory { temp in
            let dir = temp.walDirectory
            let segmentSize: Int64 = 1024
            let wal = try WAL.create(dir: dir, metadata: metadata, segmentSizeBytes: segmentSize, fs: noSyncFS)
            for index in UInt64(1)...100 {
                try wal.save(hardState: makeHardState(term: 1, commit: index), entries: [makeEntry(index: index, term: 1, dataBytes: 50)], mustSync: false)
            }
            try wal.saveSnapshot(WALSnapshot(index: 60, term: 1))
            let before = try segmentFiles(in: dir).compactMap(SegmentName.init(fileName:))
            let holding60 = try #require(before.lastIndex { $0.index <= 60 })
            #expect(holding60 > 1)

            try wal.release(below: 60)
            let after = try segmentFiles(in: dir).compactMap(SegmentName.init(fileName:))
            #expect(after == Array(before[holding60...]))
            try wal.release(below: 60)  // idempotent
            #expect(try segmentFiles(in: dir).count == after.count)
            try wal.save(hardState: makeHardState(term: 1, commit: 101), entries: [makeEntry(index: 101, term: 1)], mustSync: true)
            wal.close()

            let reopened = try WAL.open(dir: dir, at: WALSnapshot(index: 60, term: 1), segmentSizeBytes: segmentSize, fs: noSyncFS)
            let contents = try reopened.readAll()
            #expect(contents.entries.map(\.index) == Array(61...101))
            #expect(contents.hardState.commit == 101)
            reopened.close()
            #expect(throws: WALError.fileNotFound(path: dir)) { try WAL.open(dir: dir, at: WALSnapshot()) }
        }
    }

    @Test func aFailedWritePoisonsTheLog() throws {
        try withTemporaryDirectory { temp in
            let fs = CountingFileSystem()
            let wal = try WAL.create(dir: temp.walDirectory, metadata: metadata, fs: fs)
            fs.failWriteAfter.withLock { $0 = 1 }
            let injected = WALError.ioError(operation: "write", path: "injected", errno: EIO)
            #expect(throws: injected) {
                try wal.save(hardState: makeHardState(term: 1, commit: 0), entries: [makeEntry(index: 1, term: 1)], mustSync: true)
            }
            #expect(throws: injected) {
                try wal.save(hardState: makeHardState(term: 1, commit: 0), entries: [makeEntry(index: 1, term: 1)], mustSync: true)
            }
            wal.close()
        }
    }

    @Test func oversizedEntriesAreRejected() throws {
        try withTemporaryDirectory { temp in
            let wal = try WAL.create(dir: temp.walDirectory, metadata: metadata)
            var huge = makeEntry(index: 1, term: 1)
            huge.data = Data(repeating: 7, count: WAL.maxRecordBytes)
            #expect {
                try wal.save(hardState: Raftpb_HardState(), entries: [huge], mustSync: true)
            } throws: { error in
                if case WALError.recordTooLarge? = error as? WALError { return true }
                return false
            }
            // Nothing was written and the log is still usable.
            try wal.save(hardState: makeHardState(term: 1, commit: 1), entries: [makeEntry(index: 1, term: 1)], mustSync: true)
            wal.close()
            let reopened = try WAL.open(dir: temp.walDirectory, at: WALSnapshot())
            #expect(try reopened.readAll().entries.map(\.index) == [1])
            reopened.close()
        }
    }
}
