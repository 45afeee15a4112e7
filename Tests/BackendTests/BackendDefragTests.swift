import Foundation
import Locks
import Testing

@testable import Backend

/// Online defragmentation: the file shrinks while writes and reads go on,
/// and no write made during the copy is lost.
@Suite struct BackendDefragTests {
    /// A backend with `count` 4 KiB values of which all but every 50th
    /// are deleted again: mostly free pages.
    func fragmented(_ dir: TemporaryDirectory, count: Int = 3000, config: BackendConfig = BackendConfig()) throws
        -> (Backend, [String: [UInt8]])
    {
        let backend = try Backend(path: dir.db, config: config)
        let value = [UInt8](repeating: 7, count: 4096)
        var expected: [String: [UInt8]] = [:]
        for i in 0..<count { try backend.put(.key, key: bytes(String(format: "k%05d", i)), value: value) }
        try backend.forceCommit()
        for i in 0..<count {
            let key = String(format: "k%05d", i)
            if i % 50 == 0 { expected[key] = value } else { try backend.delete(.key, key: bytes(key)) }
        }
        try backend.setConsistentIndex(10, term: 2)
        try backend.forceCommit()
        return (backend, expected)
    }

    /// The file's permission bits: a defragmented file is as private as the original.
    static func mode(_ path: String) -> mode_t {
        var info = stat()
        return stat(path, &info) == 0 ? info.st_mode & 0o777 : 0
    }

    func keyBucket(_ backend: Backend) throws -> [String: [UInt8]] {
        try backend.read { tx in
            var out: [String: [UInt8]] = [:]
            try tx.forEach(.key) { k, v in
                out[String(decoding: k, as: UTF8.self)] = Array(v)
                return true
            }
            return out
        }
    }

    @Test func writesDuringTheCopyAndTheCatchUpSurviveTheSwap() throws {
        let dir = TemporaryDirectory()
        let (backend, initial) = try fragmented(dir)
        var expected = initial
        let sizeBefore = backend.sizeBytes
        // A key the writer below never touches.
        let stable = bytes("stable")
        let stableValue = bytes("unchanged")
        try backend.put(.key, key: stable, value: stableValue)
        try backend.forceCommit()
        expected["stable"] = stableValue

        // A reader on another thread throughout: always sees the stable key.
        let stop = Atomic<Bool>(false)
        let readerFailures = Atomic<Int>(0)
        let readerRounds = Atomic<Int>(0)
        let reader = Thread {
            while !stop.load(ordering: .relaxed) {
                let value = try? backend.read { try $0.get(.key, stable) }
                if value != stableValue { readerFailures.add(1, ordering: .relaxed) }
                readerRounds.add(1, ordering: .relaxed)
            }
        }
        reader.start()

        try backend.startOnlineDefragment()
        #expect(backend.isDefragmenting)
        var outcome: Result<Void, BackendError>?
        var round = 0
        let deadline = Date().addingTimeInterval(60)
        // The writer carries on: new keys, overwrites and deletions of keys
        // the copy holds, one committed batch per round.
        while outcome == nil, Date() < deadline {
            let key = String(format: "new%06d", round)
            let value = bytes("value \(round)")
            try backend.put(.key, key: bytes(key), value: value)
            expected[key] = value
            let old = String(format: "k%05d", (round * 50 + 100) % 3000)
            if round % 2 == 0 {
                try backend.delete(.key, key: bytes(old))
                expected[old] = nil
            } else {
                try backend.put(.key, key: bytes(old), value: bytes("overwritten \(round)"))
                expected[old] = bytes("overwritten \(round)")
            }
            try backend.setConsistentIndex(UInt64(100 + round), term: 3)
            try backend.forceCommit()
            // One write left in the open batch: the swap must commit it too.
            try backend.put(.key, key: bytes("open batch"), value: bytes("\(round)"))
            expected["open batch"] = bytes("\(round)")
            outcome = backend.finishOnlineDefragmentIfReady()
            round += 1
        }
        stop.store(true, ordering: .relaxed)
        while !reader.isFinished { usleep(1_000) }
        let result = try #require(outcome)
        #expect(throws: Never.self) { try result.get() }
        #expect(!backend.isDefragmenting)
        #expect(round > 1)
        #expect(readerFailures.load(ordering: .relaxed) == 0)
        #expect(readerRounds.load(ordering: .relaxed) > 0)
        #expect(backend.sizeBytes < sizeBefore / 4)
        #expect(try keyBucket(backend) == expected)
        #expect(try backend.consistentIndex() == (UInt64(100 + round - 1), 3))
        #expect(!FileManager.default.fileExists(atPath: dir.db + ".defrag"))
        #expect(Self.mode(dir.db) == 0o600)
        // Still a working backend, and the result is what is on disk.
        try backend.put(.key, key: bytes("after"), value: bytes("1"))
        expected["after"] = bytes("1")
        try backend.close()
        let reopened = try Backend(path: dir.db)
        #expect(try keyBucket(reopened) == expected)
        #expect(!FileManager.default.fileExists(atPath: dir.db + ".retired"))
        try reopened.close()
    }

    @Test func tooManyWritesDuringTheCopyAbortAndChangeNothing() throws {
        let dir = TemporaryDirectory()
        var config = BackendConfig()
        config.defragJournalLimitBytes = 1024
        var (backend, expected) = try fragmented(dir, config: config)
        let sizeBefore = backend.sizeBytes
        try backend.startOnlineDefragment()
        // One batch bigger than the whole journal allows.
        for i in 0..<10 {
            try backend.put(.key, key: bytes("big\(i)"), value: [UInt8](repeating: 1, count: 1024))
            expected["big\(i)"] = [UInt8](repeating: 1, count: 1024)
        }
        try backend.forceCommit()
        var outcome: Result<Void, BackendError>?
        let deadline = Date().addingTimeInterval(60)
        while outcome == nil, Date() < deadline {
            outcome = backend.finishOnlineDefragmentIfReady()
            if outcome == nil { usleep(1_000) }
        }
        let result = try #require(outcome)
        guard case .failure(.defragmentationAborted) = result else {
            Issue.record("expected an aborted defragmentation, got \(result)")
            return
        }
        #expect(!backend.isDefragmenting)
        #expect(backend.sizeBytes >= sizeBefore)
        #expect(try keyBucket(backend) == expected)
        #expect(!FileManager.default.fileExists(atPath: dir.db + ".defrag"))
        try backend.close()
        backend = try Backend(path: dir.db)
        #expect(try keyBucket(backend) == expected)
        try backend.close()
    }

    @Test func closingDuringADefragmentationKeepsTheData() throws {
        let dir = TemporaryDirectory()
        var (backend, expected) = try fragmented(dir)
        try backend.startOnlineDefragment()
        try backend.put(.key, key: bytes("late"), value: bytes("1"))
        expected["late"] = bytes("1")
        try backend.close()
        #expect(!FileManager.default.fileExists(atPath: dir.db + ".defrag"))
        backend = try Backend(path: dir.db)
        #expect(try keyBucket(backend) == expected)
        try backend.close()
    }
}
