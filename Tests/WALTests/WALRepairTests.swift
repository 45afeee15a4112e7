import EtcdProto
import Foundation
import Testing
@testable import WAL

/// Crash and corruption handling: a torn tail in the last segment is cut
/// off; anything else is an error naming file and offset.
@Suite struct WALRepairTests {
    let metadata = Data("repair".utf8)

    /// Writes a log of small batches and returns its segment files.
    private func writeLog(_ dir: String, segmentSizeBytes: Int64, batches: Int) throws -> [String] {
        let wal = try WAL.create(dir: dir, metadata: metadata, segmentSizeBytes: segmentSizeBytes, fs: noSyncFS)
        var index: UInt64 = 0
        for batch in 0..<batches {
            let entries = (0..<(1 + batch % 3)).map { i -> Raftpb_Entry in
                index += 1
                return makeEntry(index: index, term: 1, dataBytes: 5 + (batch * 37 + i * 11) % 120)
            }
            try wal.save(hardState: makeHardState(term: 1, commit: index), entries: entries, mustSync: false)
        }
        wal.close()
        return try segmentFiles(in: dir)
    }

    /// Damages the last segment at every byte offset of its last records,
    /// either by cutting the file there or by zeroing everything from there
    /// on, and checks that reopening recovers exactly the records whose
    /// bytes survived — then that the repaired log takes appends.
    private func crashAtEveryOffset(zeroFill: Bool, segmentSizeBytes: Int64, batches: Int) throws {
        try withTemporaryDirectory { temp in
            let dir = temp.walDirectory
            let files = try writeLog(dir, segmentSizeBytes: segmentSizeBytes, batches: batches)
            let lastPath = dir + "/" + files.last!
            let original = try readBytes(lastPath)
            let frames = try parseFrames(original)
            var earlier: [Walpb_Record] = []
            for file in files.dropLast() { earlier += try parseFrames(readBytes(dir + "/" + file)).map(\.record) }
            #expect(frames.count >= 8)

            let firstDamaged = frames[frames.count - 4].start
            for cut in firstDamaged...frames.last!.frameEnd {
                var damaged = original
                if zeroFill {
                    for i in cut..<damaged.count { damaged[i] = 0 }
                } else {
                    damaged.removeSubrange(cut...)
                }
                try writeBytes(damaged, to: lastPath)
                // Records whose bytes all survived: cut after their payload,
                // or (zero fill) only zeros were overwritten.
                let intact = frames.prefix { frame in
                    frame.payloadEnd <= cut || (zeroFill && original[cut..<frame.payloadEnd].allSatisfy { $0 == 0 })
                }
                let expected = try expectedContents(earlier + intact.map(\.record))

                // The read-only reader sees the same and changes nothing.
                let peek = try WAL.readOnly(dir: dir, at: WALSnapshot(), fs: noSyncFS)
                #expect(sameEntries(peek.entries, expected.entries), "read-only, cut at \(cut)")
                #expect(try readBytes(lastPath) == damaged)

                let wal = try WAL.open(dir: dir, at: WALSnapshot(), segmentSizeBytes: segmentSizeBytes, fs: noSyncFS)
                let contents = try wal.readAll()
                #expect(sameEntries(contents.entries, expected.entries), "cut at \(cut)")
                #expect(sameState(contents.hardState, expected.state), "cut at \(cut)")

                // The repaired log appends and reads back (checked on a
                // sample of offsets to keep the suite fast).
                if cut % 7 == 0 {
                    let next = makeEntry(index: UInt64(expected.entries.count + 1), term: 2, dataBytes: 33)
                    try wal.save(hardState: makeHardState(term: 2, commit: next.index), entries: [next], mustSync: true)
                    wal.close()
                    let again = try WAL.open(dir: dir, at: WALSnapshot(), segmentSizeBytes: segmentSizeBytes, fs: noSyncFS)
                    let reread = try again.readAll()
                    #expect(sameEntries(reread.entries, expected.entries + [next]), "append after cut at \(cut)")
                    again.close()
                    // The append may have cut a new segment; drop it.
                    for file in try segmentFiles(in: dir) where !files.contains(file) {
                        try PosixFileSystem().removeItem(atPath: dir + "/" + file)
                    }
                } else {
                    wal.close()
                }
            }
        }
    }

    @Test func truncatedTailIsCutAtTheLastCompleteRecord() throws {
        try crashAtEveryOffset(zeroFill: false, segmentSizeBytes: 16 * 1024, batches: 8)
    }

    @Test func zeroFilledTailIsCutAtTheLastCompleteRecord() throws {
        try crashAtEveryOffset(zeroFill: true, segmentSizeBytes: 16 * 1024, batches: 8)
    }

    @Test func tornTailInALaterSegment() throws {
        try crashAtEveryOffset(zeroFill: true, segmentSizeBytes: 1024, batches: 30)
        try crashAtEveryOffset(zeroFill: false, segmentSizeBytes: 1024, batches: 30)
    }

    /// Flips one bit in a record of `file`, then expects opening to fail at
    /// that record.
    private func expectCorruption(fileIndex: (Int) -> Int, frameIndex: (Int) -> Int, segmentSizeBytes: Int64) throws {
        try withTemporaryDirectory { temp in
            let dir = temp.walDirectory
            let files = try writeLog(dir, segmentSizeBytes: segmentSizeBytes, batches: 40)
            let path = dir + "/" + files[fileIndex(files.count)]
            var bytes = try readBytes(path)
            let frames = try parseFrames(bytes)
            let frame = frames[frameIndex(frames.count)]
            bytes[frame.payloadEnd - 1] ^= 0x40
            try writeBytes(bytes, to: path)

            let wal = try WAL.open(dir: dir, at: WALSnapshot(), segmentSizeBytes: segmentSizeBytes, fs: noSyncFS)
            #expect(throws: WALError.crcMismatch(file: path, offset: Int64(frame.start))) { try wal.readAll() }
        }
    }

    @Test func corruptionInAnEarlierSegmentIsReported() throws {
        try expectCorruption(fileIndex: { _ in 1 }, frameIndex: { $0 / 2 }, segmentSizeBytes: 1024)
        // Even the last record of an earlier segment is not a "tail".
        try expectCorruption(fileIndex: { _ in 0 }, frameIndex: { $0 - 1 }, segmentSizeBytes: 1024)
    }

    @Test func corruptionInTheMiddleOfTheLastSegmentIsReported() throws {
        try expectCorruption(fileIndex: { $0 - 1 }, frameIndex: { $0 / 2 }, segmentSizeBytes: 64 * 1024)
    }

    @Test func aBitFlipInTheLastRecordIsNotMistakenForATornWrite() throws {
        try expectCorruption(fileIndex: { $0 - 1 }, frameIndex: { $0 - 1 }, segmentSizeBytes: 64 * 1024)
    }

    @Test func unparsableRecordsAndStrayBytesAreReportedWithFileAndOffset() throws {
        try withTemporaryDirectory { temp in
            let dir = temp.walDirectory
            let files = try writeLog(dir, segmentSizeBytes: 64 * 1024, batches: 10)
            let path = dir + "/" + files[0]
            let original = try readBytes(path)
            let frames = try parseFrames(original)

            // A record whose payload is not protobuf, followed by more data.
            var bytes = original
            let victim = frames[5]
            for i in (victim.start + 8)..<victim.payloadEnd { bytes[i] = 0xFF }
            try writeBytes(bytes, to: path)
            let first = try WAL.open(dir: dir, at: WALSnapshot(), fs: noSyncFS)
            #expect(throws: WALError.corruptRecord(file: path, offset: Int64(victim.start), reason: "record is not a valid walpb.Record")) {
                try first.readAll()
            }

            // A zeroed length word in the middle: more records follow it.
            bytes = original
            for i in victim.start..<(victim.start + 8) { bytes[i] = 0 }
            try writeBytes(bytes, to: path)
            let second = try WAL.open(dir: dir, at: WALSnapshot(), fs: noSyncFS)
            #expect(throws: WALError.corruptRecord(file: path, offset: Int64(victim.start), reason: "zero length word followed by non-zero bytes")) {
                try second.readAll()
            }

            // A length word claiming more than any record may hold.
            bytes = original
            bytes[victim.start + 6] = 0x7F
            try writeBytes(bytes, to: path)
            let third = try WAL.open(dir: dir, at: WALSnapshot(), fs: noSyncFS)
            #expect { try third.readAll() } throws: { error in
                guard case let WALError.corruptRecord(file, offset, _)? = error as? WALError else { return false }
                return file == path && offset == Int64(victim.start)
            }
        }
    }

    @Test func randomGarbageNeverCrashesTheReader() throws {
        try withTemporaryDirectory { temp in
            let dir = temp.walDirectory
            let files = try writeLog(dir, segmentSizeBytes: 8 * 1024, batches: 6)
            let path = dir + "/" + files.last!
            let original = try readBytes(path)
            let frames = try parseFrames(original)
            var generator = SplitMix64(seed: 2024)
            for _ in 0..<300 {
                var bytes = original
                // Scribble over a random range after the header.
                let start = frames[3].start + Int(generator.next() % UInt64(frames.last!.frameEnd - frames[3].start))
                let length = 1 + Int(generator.next() % 64)
                for i in start..<min(start + length, bytes.count) { bytes[i] = UInt8(truncatingIfNeeded: generator.next()) }
                try writeBytes(bytes, to: path)
                let wal = try WAL.open(dir: dir, at: WALSnapshot(), segmentSizeBytes: 8 * 1024, fs: noSyncFS)
                do {
                    _ = try wal.readAll()
                } catch {
                    #expect(error is WALError)
                }
                wal.close()
            }
        }
    }

    @Test func leftoverTempFilesAreIgnored() throws {
        try withTemporaryDirectory { temp in
            let dir = temp.walDirectory
            _ = try writeLog(dir, segmentSizeBytes: 1024, batches: 10)
            // A crash during a cut leaves the half-built next segment behind.
            try writeBytes([1, 2, 3], to: dir + "/" + WAL.segmentTempName)
            let wal = try WAL.open(dir: dir, at: WALSnapshot(), segmentSizeBytes: 1024)
            let count = UInt64(try wal.readAll().entries.count)
            #expect(count == 19)
            try wal.save(hardState: makeHardState(term: 1, commit: count + 20), entries: ((count + 1)...(count + 20)).map { makeEntry(index: $0, term: 1, dataBytes: 60) }, mustSync: true)
            wal.close()
            let again = try WAL.open(dir: dir, at: WALSnapshot(), segmentSizeBytes: 1024)
            #expect(try again.readAll().entries.count == Int(count) + 20)
            again.close()
        }
    }
}
