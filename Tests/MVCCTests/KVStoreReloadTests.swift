import Backend
import EtcdProto
import Foundation
import Testing

@testable import MVCC

/// Commits `source`'s batch and writes its backend snapshot into a new file
/// in `dir`, as a follower receives it; returns the file's path.
func receiveSnapshot(of source: KVStore, in dir: TemporaryDirectory) throws -> String {
    try source.backend.forceCommit()
    let path = dir.path + "/received-\(UUID().uuidString)"
    _ = FileManager.default.createFile(atPath: path, contents: nil)
    let handle = FileHandle(forWritingAtPath: path)!
    try source.backend.snapshot { chunk in handle.write(Data(chunk)) }
    try handle.close()
    return path
}

@Suite struct KVStoreReloadTests {
    @Test func reloadTakesOnTheReplacedBackendsData() throws {
        let dirX = TemporaryDirectory(), dirS = TemporaryDirectory()
        let x = try dirX.openStore(StoreConfig(compactionBatchLimit: 2))
        for i in 0..<9 { _ = try x.put(putRequest("x\(i % 3)", "v\(i)", lease: 7)) }
        #expect(x.currentRevision == 10)
        _ = try x.compact(8)
        #expect(x.hasPendingCompaction)
        x.failure = .diskFull(path: dirX.db)

        let s = try dirS.openStore()
        for i in 0..<48 { _ = try s.put(putRequest("s\(i % 7)", "w\(i)", lease: i % 2 == 0 ? 0 : 9)) }
        _ = try s.deleteRange(deleteRequest("s3"))
        _ = try s.compact(30)
        try s.finishCompaction()
        try s.backend.setConsistentIndex(123, term: 6)
        #expect(s.currentRevision == 50)

        try x.backend.replace(withFileAt: try receiveSnapshot(of: s, in: dirX))
        try x.reload()
        #expect(x.currentRevision == 50)
        #expect(x.compactRevision == 30)
        #expect(!x.hasPendingCompaction)
        #expect(try x.consistentIndex() == (123, 6))
        #expect(x.restoredLeases == [d("s1"): 9, d("s5"): 9, d("s6"): 9])
        for revision: Int64 in [0, 30, 40, 49] {
            #expect(try x.range(rangeRequest("\0", "\0", revision: revision)) == s.range(rangeRequest("\0", "\0", revision: revision)))
        }
        #expect(try x.range(rangeRequest("x0")).count == 0)
        #expect(throws: MVCCError.compacted) { try x.range(rangeRequest("s1", revision: 29)) }
        #expect(try x.hashKV(0) == s.hashKV(0))
        #expect(try x.hashKV(40) == s.hashKV(40))

        let next = try x.put(putRequest("s1", "after"))
        #expect(next.revision == 51)
        #expect(try x.range(rangeRequest("s1")).kvs[0].version == s.range(rangeRequest("s1")).kvs[0].version + 1)
        _ = try s.put(putRequest("s1", "after"))
        #expect(try x.hashKV(0).hash == s.hashKV(0).hash)
        try x.backend.close()
        try s.backend.close()
    }

    @Test func reloadResumesTheNewDatasUnfinishedCompaction() throws {
        let dirX = TemporaryDirectory(), dirS = TemporaryDirectory()
        let x = try dirX.openStore()
        for i in 0..<9 { _ = try x.put(putRequest("k\(i % 3)", "x\(i)")) }

        let s = try dirS.openStore(StoreConfig(compactionBatchLimit: 3))
        for i in 0..<29 { _ = try s.put(putRequest("k\(i % 4)", "s\(i)")) }
        _ = try s.compact(20)
        #expect(try !s.compactionStep())
        let file = try receiveSnapshot(of: s, in: dirX)

        try x.reload { try x.backend.replace(withFileAt: file) }
        #expect(x.currentRevision == 30 && x.compactRevision == 20)
        #expect(x.hasPendingCompaction)
        try x.finishCompaction()
        try s.finishCompaction()
        #expect(try x.hashKV(0) == s.hashKV(0))
        #expect(try x.range(rangeRequest("k0", "k9", revision: 20)) == s.range(rangeRequest("k0", "k9", revision: 20)))
        try x.backend.close()
        try s.backend.close()
    }

    @Test func failedInstallChangesNothing() throws {
        let dir = TemporaryDirectory()
        let x = try dir.openStore()
        for i in 0..<5 { _ = try x.put(putRequest("k\(i)", "v")) }
        let before = try x.range(rangeRequest("\0", "\0"))
        let garbage = dir.path + "/garbage"
        _ = FileManager.default.createFile(atPath: garbage, contents: Data(repeating: 7, count: 8192))
        #expect(throws: MVCCError.self) {
            try x.reload { try x.backend.replace(withFileAt: garbage) }
        }
        #expect(try x.range(rangeRequest("\0", "\0")) == before)
        #expect(try x.put(putRequest("k9", "v")).revision == 7)
        try x.backend.close()
    }
}
