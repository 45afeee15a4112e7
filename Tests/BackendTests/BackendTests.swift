import Foundation
import Testing

@testable import Backend

/// A fresh directory under /tmp, removed when the test ends.
final class TemporaryDirectory {
    let path: String

    init() {
        var template = Array("/tmp/backend-test-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil)
        path = String(cString: made!)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    var db: String { path + "/db" }
}

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

@Suite struct BackendTests {
    @Test func putGetDeleteAcrossCommits() throws {
        let dir = TemporaryDirectory()
        let backend = try Backend(path: dir.db)
        try backend.put(.key, key: bytes("a"), value: bytes("1"))
        try backend.put(.lease, key: bytes("a"), value: bytes("other bucket"))
        // Readers see the open batch.
        #expect(try backend.read { try $0.get(.key, bytes("a")) } == bytes("1"))
        try backend.forceCommit()
        #expect(try backend.read { try $0.get(.key, bytes("a")) } == bytes("1"))
        try backend.delete(.key, key: bytes("a"))
        try backend.delete(.key, key: bytes("missing"))
        #expect(try backend.read { try $0.get(.key, bytes("a")) } == nil)
        #expect(try backend.read { try $0.get(.lease, bytes("a")) } == bytes("other bucket"))
        try backend.close()
        let reopened = try Backend(path: dir.db)
        #expect(try reopened.read { try $0.get(.key, bytes("a")) } == nil)
        #expect(try reopened.read { try $0.get(.lease, bytes("a")) } == bytes("other bucket"))
        try reopened.close()
        #expect(throws: BackendError.closed) { try reopened.read { _ in 0 } }
    }

    @Test func readerOnAnotherThreadSeesUncommittedBatch() throws {
        let dir = TemporaryDirectory()
        let backend = try Backend(path: dir.db)
        try backend.put(.key, key: bytes("k"), value: bytes("v"))
        let result = LockedBox<[UInt8]?>(nil)
        let thread = Thread {
            result.value = try? backend.read { try $0.get(.key, bytes("k")) }
        }
        thread.start()
        while !thread.isFinished { usleep(1000) }
        #expect(result.value == bytes("v"))
        try backend.close()
    }

    @Test func scanMergesBatchWithCommittedData() throws {
        let dir = TemporaryDirectory()
        let backend = try Backend(path: dir.db)
        for k in ["a", "c", "e", "g"] { try backend.put(.key, key: bytes(k), value: bytes("old")) }
        try backend.forceCommit()
        try backend.put(.key, key: bytes("b"), value: bytes("new"))
        try backend.put(.key, key: bytes("c"), value: bytes("new"))
        try backend.delete(.key, key: bytes("e"))
        try backend.put(.key, key: bytes("h"), value: bytes("new"))
        func scan(from: String?, to: String?) throws -> [String] {
            try backend.read { tx in
                var seen: [String] = []
                try tx.forEach(.key, from: from.map(bytes), to: to.map(bytes)) { k, v in
                    seen.append(String(decoding: k, as: UTF8.self) + "=" + String(decoding: v, as: UTF8.self))
                    return true
                }
                return seen
            }
        }
        #expect(try scan(from: nil, to: nil) == ["a=old", "b=new", "c=new", "g=old", "h=new"])
        #expect(try scan(from: "b", to: "g") == ["b=new", "c=new"])
        try backend.close()
    }

    @Test func commitsByOperationCount() throws {
        let dir = TemporaryDirectory()
        let backend = try Backend(path: dir.db, config: BackendConfig(batchIntervalMilliseconds: 60_000, batchLimitOps: 3))
        try backend.put(.key, key: bytes("1"), value: [])
        try backend.put(.key, key: bytes("2"), value: [])
        #expect(try backend.commitIfDue() == false)
        try backend.put(.key, key: bytes("3"), value: [])
        #expect(backend.pendingWriteCount == 3)
        #expect(try backend.commitIfDue() == true)
        #expect(backend.pendingWriteCount == 0)
        try backend.close()
    }

    @Test func commitsByInterval() throws {
        let dir = TemporaryDirectory()
        let backend = try Backend(path: dir.db, config: BackendConfig(batchIntervalMilliseconds: 20, batchLimitOps: 1000))
        try backend.put(.key, key: bytes("1"), value: [])
        #expect(try backend.commitIfDue() == false)
        usleep(30_000)
        #expect(try backend.commitIfDue() == true)
        #expect(try backend.commitIfDue() == false)
        try backend.close()
    }

    @Test func consistentIndexCommitsWithItsData() throws {
        let dir = TemporaryDirectory()
        do {
            let backend = try Backend(path: dir.db)
            try backend.put(.key, key: bytes("x"), value: bytes("1"))
            try backend.setConsistentIndex(7, term: 2)
            try backend.forceCommit()
            try backend.put(.key, key: bytes("y"), value: bytes("2"))
            try backend.setConsistentIndex(8, term: 2)
            #expect(try backend.consistentIndex() == (8, 2))
            // Dropped without a commit: a crash before the batch committed.
        }
        let reopened = try Backend(path: dir.db)
        #expect(try reopened.consistentIndex() == (7, 2))
        #expect(try reopened.read { try $0.get(.key, bytes("x")) } == bytes("1"))
        #expect(try reopened.read { try $0.get(.key, bytes("y")) } == nil)
        #expect(try reopened.read { try $0.get(.meta, MetaKey.consistentIndex) } == [0, 0, 0, 0, 0, 0, 0, 7])
        try reopened.close()
    }

    @Test func mapGrowsUpToTheQuota() throws {
        let dir = TemporaryDirectory()
        let config = BackendConfig(initialMapSizeBytes: 1 << 20, quotaBytes: 16 << 20)
        let backend = try Backend(path: dir.db, config: config)
        let value = [UInt8](repeating: 7, count: 64 << 10)
        for i in 0..<64 {  // 4 MiB in one batch: must grow past 1 MiB
            try backend.put(.key, key: bytes("k\(i)"), value: value)
        }
        try backend.forceCommit()
        #expect(backend.mapSize > 1 << 20)
        var failure: BackendError?
        do {
            for i in 0..<1000 {
                try backend.put(.lease, key: bytes("big\(i)"), value: value)
            }
        } catch {
            failure = error
        }
        #expect(failure == .quotaExceeded(quotaBytes: 16 << 20))
        // The batch up to the failed write is intact and committable.
        #expect(try backend.read { try $0.get(.lease, bytes("big0")) } == value)
        #expect(try backend.read { try $0.get(.key, bytes("k63")) } == value)
        try? backend.forceCommit()
        try backend.close()
    }

    @Test func defragmentShrinksTheFileAndKeepsData() throws {
        let dir = TemporaryDirectory()
        let backend = try Backend(path: dir.db)
        let value = [UInt8](repeating: 1, count: 4096)
        for i in 0..<2000 { try backend.put(.key, key: bytes(String(format: "%05d", i)), value: value) }
        try backend.forceCommit()
        for i in 0..<2000 where i % 100 != 0 { try backend.delete(.key, key: bytes(String(format: "%05d", i))) }
        try backend.setConsistentIndex(42, term: 3)
        try backend.forceCommit()
        let hashBefore = try backend.hash()
        let sizeBefore = backend.sizeBytes
        let inUse = try backend.sizeInUseBytes()
        #expect(inUse < sizeBefore)
        try backend.defragment()
        #expect(backend.sizeBytes < sizeBefore / 4)
        #expect(BackendDefragTests.mode(dir.db) == 0o600)
        #expect(try backend.hash() == hashBefore)
        #expect(try backend.consistentIndex() == (42, 3))
        #expect(try backend.read { try $0.get(.key, bytes("00100")) } == value)
        try backend.put(.key, key: bytes("after"), value: value)
        try backend.close()
        let reopened = try Backend(path: dir.db)
        #expect(try reopened.read { try $0.get(.key, bytes("after")) } == value)
        try reopened.close()
    }

    /// A full scan maps every page of the file into the process; releasing
    /// the mapped pages takes them out of its resident memory (the data
    /// stays readable).
    @Test func releasingMappedPagesShrinksTheResidentMap() throws {
        let dir = TemporaryDirectory()
        let backend = try Backend(path: dir.db)
        let value = [UInt8](repeating: 3, count: 2000)
        for i in 0..<16_000 { try backend.put(.key, key: bytes(String(format: "%08d", i)), value: value) }
        try backend.forceCommit()
        let (afterScan, afterRelease) = try backend.read { tx in
            var sum = 0
            try tx.forEach(.key) { _, value in
                sum &+= Int(value[value.count - 1])
                return true
            }
            #expect(sum == 16_000 * 3)
            let scanned = residentKiB(ofMapping: dir.db)
            tx.releaseMappedPages()
            return (scanned, residentKiB(ofMapping: dir.db))
        }
        // 16,000 values of 2,000 bytes: about 31 MiB read through the map.
        #expect(afterScan > 24 << 10, "resident after the scan: \(afterScan) KiB")
        #expect(afterRelease < 4 << 10, "resident after the release: \(afterRelease) KiB")
        #expect(try backend.read { try $0.get(.key, bytes("00012345")) } == value)
        try backend.close()
    }

    /// A long run of commits gives the mapped pages back as it goes (every
    /// 16 MiB committed), so what it touched does not all stay resident.
    @Test func commitsGiveTheMappedPagesBack() throws {
        let dir = TemporaryDirectory()
        let backend = try Backend(path: dir.db)
        let value = [UInt8](repeating: 5, count: 2000)
        var peak = 0
        for i in 0..<40_000 {
            try backend.put(.key, key: bytes(String(format: "%08d", i)), value: value)
            // Read back an older value now and then, as ranges do.
            if i % 7 == 0 { _ = try backend.read { try $0.get(.key, bytes(String(format: "%08d", i / 2))) } }
            if i % 200 == 199 {
                try backend.forceCommit()
                peak = max(peak, residentKiB(ofMapping: dir.db))
            }
        }
        // About 78 MiB written and half of it read back: about 43 MiB of
        // the map stays resident when nothing is given back, about 22 MiB
        // when it is.
        #expect(peak < 32 << 10, "peak resident map: \(peak) KiB")
        #expect(try backend.read { try $0.get(.key, bytes("00000001")) } == value)
        try backend.close()
    }

    /// Resident KiB of this process's mappings of `path` (/proc/self/smaps).
    func residentKiB(ofMapping path: String) -> Int {
        // /proc files report size 0: read to the end rather than by size.
        guard let handle = FileHandle(forReadingAtPath: "/proc/self/smaps"),
              let data = try? handle.readToEnd(), let smaps = String(data: data, encoding: .utf8) else { return -1 }
        var total = 0
        var inMapping = false
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let first = fields.first, first.contains("-"), fields.count >= 5 {
                inMapping = fields.count >= 6 && fields[5] == path
            } else if inMapping, fields.first == "Rss:", fields.count >= 2 {
                total += Int(fields[1]) ?? 0
            }
        }
        return total
    }

    @Test func hashIsDeterministicAndIgnoresConsistentIndex() throws {
        let dirA = TemporaryDirectory(), dirB = TemporaryDirectory()
        let a = try Backend(path: dirA.db)
        let b = try Backend(path: dirB.db, config: BackendConfig(batchLimitOps: 1))
        for i in 0..<100 {
            try a.put(.key, key: bytes("k\(i)"), value: bytes("v\(i)"))
            try b.put(.key, key: bytes("k\(i)"), value: bytes("v\(i)"))
            try b.commitIfDue()
        }
        try a.setConsistentIndex(1, term: 1)
        try b.setConsistentIndex(99, term: 5)
        #expect(try a.hash() == b.hash())
        try b.put(.auth, key: bytes("x"), value: [])
        #expect(try a.hash() != b.hash())
        try a.close()
        try b.close()
    }

    @Test func snapshotStreamsAConsistentCopy() throws {
        let dir = TemporaryDirectory()
        let backend = try Backend(path: dir.db)
        for i in 0..<500 { try backend.put(.key, key: bytes("k\(i)"), value: [UInt8](repeating: 3, count: 1000)) }
        try backend.setConsistentIndex(500, term: 1)
        try backend.forceCommit()
        let copyPath = dir.path + "/snapshot.db"
        _ = FileManager.default.createFile(atPath: copyPath, contents: nil)
        let handle = FileHandle(forWritingAtPath: copyPath)!
        let written = try backend.snapshot { chunk in handle.write(Data(chunk)) }
        try handle.close()
        #expect(written > 500_000)
        let copy = try Backend(path: copyPath)
        #expect(try copy.hash() == backend.hash())
        #expect(try copy.consistentIndex() == (500, 1))
        try copy.close()
        try backend.close()
    }

    @Test func badFilesBecomeTypedErrors() throws {
        let dir = TemporaryDirectory()
        let garbage = dir.path + "/garbage"
        _ = FileManager.default.createFile(atPath: garbage, contents: Data(repeating: 0xAB, count: 64 << 10))
        #expect(throws: BackendError.self) { _ = try Backend(path: garbage) }
        do {
            _ = try Backend(path: dir.path + "/no/such/dir/db")
            Issue.record("opened a file in a missing directory")
        } catch {
            #expect(error == .io(operation: "mdb_env_open", path: dir.path + "/no/such/dir/db", errno: ENOENT))
            #expect(error.description.contains("No such file"))
        }
    }
}

final class LockedBox<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value
    init(_ value: Value) { stored = value }
    var value: Value {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }
}
