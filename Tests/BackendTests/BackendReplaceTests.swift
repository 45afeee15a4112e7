import Foundation
import Testing

@testable import Backend

/// Writes `backend`'s snapshot stream into a new file at `path`.
func writeSnapshot(of backend: Backend, to path: String) throws {
    #expect(FileManager.default.createFile(atPath: path, contents: nil))
    let handle = FileHandle(forWritingAtPath: path)!
    try backend.snapshot { chunk in handle.write(Data(chunk)) }
    try handle.close()
}

/// Every entry of every bucket, as "bucket/key=value".
func dump(_ backend: Backend) throws -> [String] {
    try backend.read { tx in
        var out: [String] = []
        for bucket in Bucket.allCases {
            try tx.forEach(bucket) { k, v in
                out.append("\(bucket.rawValue)/\(String(decoding: k, as: UTF8.self))=\(String(decoding: v, as: UTF8.self))")
                return true
            }
        }
        return out
    }
}

@Suite struct BackendReplaceTests {
    @Test func replaceInstallsAnotherBackendsSnapshot() throws {
        let dirA = TemporaryDirectory(), dirB = TemporaryDirectory()
        let a = try Backend(path: dirA.db)
        for i in 0..<300 { try a.put(.key, key: bytes("a\(i)"), value: bytes("from A \(i)")) }
        try a.put(.lease, key: bytes("lease"), value: bytes("A"))
        try a.setConsistentIndex(77, term: 4)
        try a.forceCommit()
        let expected = try dump(a)
        let file = dirB.path + "/received"
        try writeSnapshot(of: a, to: file)

        let b = try Backend(path: dirB.db, config: BackendConfig(batchLimitOps: 1_000_000))
        for i in 0..<100 { try b.put(.key, key: bytes("b\(i)"), value: bytes("from B")) }
        try b.put(.auth, key: bytes("only B"), value: [])
        try b.setConsistentIndex(5, term: 1)
        try b.forceCommit()
        try b.put(.key, key: bytes("uncommitted"), value: bytes("lost"))
        try b.put(.key, key: bytes("a1"), value: bytes("lost"))
        try b.delete(.key, key: bytes("b1"))
        #expect(b.pendingWriteCount == 3)

        try b.replace(withFileAt: file)
        #expect(!FileManager.default.fileExists(atPath: file))
        #expect(b.pendingWriteCount == 0)
        #expect(try dump(b) == expected)
        #expect(try b.hash() == a.hash())
        #expect(try b.consistentIndex() == (77, 4))
        #expect(try b.read { try $0.get(.key, bytes("uncommitted")) } == nil)
        #expect(try !b.commitIfDue())  // nothing left to commit

        try b.put(.key, key: bytes("after"), value: bytes("1"))
        try b.delete(.key, key: bytes("a0"))
        try b.setConsistentIndex(78, term: 4)
        try b.forceCommit()
        try b.put(.key, key: bytes("after2"), value: bytes("2"))
        try b.close()
        let reopened = try Backend(path: dirB.db)
        // The meta bucket holds the new consistent index, checked below.
        let want = expected.filter { !$0.hasPrefix("key/a0=") && !$0.hasPrefix("meta/") }
            + ["key/after=1", "key/after2=2"]
        #expect(try dump(reopened).filter { !$0.hasPrefix("meta/") }.sorted() == want.sorted())
        #expect(try reopened.consistentIndex() == (78, 4))
        try reopened.close()
        try a.close()
    }

    @Test func replaceWithABadFileThrowsAndKeepsTheBackend() throws {
        let dir = TemporaryDirectory()
        let backend = try Backend(path: dir.db)
        try backend.put(.key, key: bytes("k"), value: bytes("committed"))
        try backend.forceCommit()
        try backend.put(.key, key: bytes("p"), value: bytes("pending"))
        let garbage = dir.path + "/garbage"
        _ = FileManager.default.createFile(atPath: garbage, contents: Data(repeating: 0xAB, count: 64 << 10))
        let empty = dir.path + "/empty"
        _ = FileManager.default.createFile(atPath: empty, contents: Data())
        #expect {
            try backend.replace(withFileAt: garbage)
        } throws: { error in
            if case .corrupted? = error as? BackendError { return true }
            return false
        }
        #expect(throws: BackendError.io(operation: "mdb_env_open", path: dir.path + "/missing", errno: ENOENT)) {
            try backend.replace(withFileAt: dir.path + "/missing")
        }
        for source in [garbage, empty, dir.path + "/missing"] {
            #expect(throws: BackendError.self) { try backend.replace(withFileAt: source) }
        }
        #expect(FileManager.default.fileExists(atPath: garbage))
        #expect(try backend.read { try $0.get(.key, bytes("k")) } == bytes("committed"))
        #expect(try backend.read { try $0.get(.key, bytes("p")) } == bytes("pending"))
        #expect(backend.pendingWriteCount == 1)
        try backend.put(.key, key: bytes("q"), value: bytes("later"))
        try backend.forceCommit()
        try backend.close()
        let reopened = try Backend(path: dir.db)
        #expect(try dump(reopened) == ["key/k=committed", "key/p=pending", "key/q=later"])
        try reopened.close()
    }

    @Test func readersSeeTheOldOrTheNewDataDuringReplace() throws {
        let dir = TemporaryDirectory()
        let backend = try Backend(path: dir.db, config: BackendConfig(batchLimitOps: 1_000_000))
        let keys = (0..<50).map { bytes("k\($0)") }
        // Committed data plus an open batch, all with one generation's value.
        func fill(_ generation: String, into target: Backend) throws {
            for key in keys.prefix(25) { try target.put(.key, key: key, value: bytes(generation)) }
            try target.forceCommit()
            for key in keys.dropFirst(25) { try target.put(.key, key: key, value: bytes(generation)) }
        }
        try fill("g0", into: backend)
        let stop = LockedBox(false)
        let seen = LockedBox<Set<String>>([])
        let mixed = LockedBox(0)
        let errors = LockedBox(0)
        let reader = Thread {
            while !stop.value {
                do {
                    let values = try backend.read { tx in try keys.map { try tx.get(.key, $0) } }
                    let distinct = Set(values.map { $0.map { String(decoding: $0, as: UTF8.self) } ?? "nil" })
                    if distinct.count == 1 {
                        seen.value.formUnion(distinct)
                    } else {
                        mixed.value += 1
                    }
                } catch {
                    errors.value += 1
                }
            }
        }
        reader.start()
        for generation in 1...8 {
            let sourceDir = TemporaryDirectory()
            let source = try Backend(path: sourceDir.db)
            for key in keys { try source.put(.key, key: key, value: bytes("g\(generation)")) }
            try source.forceCommit()
            let file = dir.path + "/received\(generation)"
            try writeSnapshot(of: source, to: file)
            try source.close()
            usleep(2000)
            try backend.replace(withFileAt: file)
            usleep(2000)
            // Leave an open batch again for the next swap.
            for key in keys.dropFirst(25) { try backend.put(.key, key: key, value: bytes("g\(generation)")) }
        }
        let deadline = Date().addingTimeInterval(10)
        while !seen.value.contains("g8") && Date() < deadline { usleep(1000) }
        stop.value = true
        while !reader.isFinished { usleep(1000) }
        #expect(mixed.value == 0)
        #expect(errors.value == 0)
        #expect(seen.value.isSubset(of: Set((0...8).map { "g\($0)" })))
        #expect(seen.value.contains("g8"))
        #expect(try backend.read { try $0.get(.key, keys[0]) } == bytes("g8"))
        try backend.close()
    }
}
