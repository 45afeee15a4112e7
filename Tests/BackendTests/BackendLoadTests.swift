import Foundation
import Testing

@testable import Backend

/// `Backend.load`: bulk writes straight into LMDB, appended when keys come
/// in order, committed in chunks, the map grown before each chunk.
@Suite struct BackendLoadTests {
    static func key(_ i: Int) -> [UInt8] { Array(String(format: "k%08d", i).utf8) }

    /// Every pair of `bucket` in key order.
    static func pairs(_ backend: Backend, _ bucket: Bucket) throws -> [([UInt8], [UInt8])] {
        try backend.read { tx in
            var all: [([UInt8], [UInt8])] = []
            try tx.forEach(bucket) { key, value in
                all.append((Array(key), Array(value)))
                return true
            }
            return all
        }
    }

    @Test func sortedKeysAreAppendedAndOthersStillStored() throws {
        let dir = TemporaryDirectory()
        let backend = try Backend(path: dir.db)
        try backend.put(.lease, key: bytes("before"), value: bytes("batch"))
        try backend.load { loader in
            for i in 0..<1000 {
                try Self.key(i).withUnsafeBytes { k in try bytes("v\(i)").withUnsafeBytes { v in try loader.put(.key, key: k, value: v) } }
            }
            // Below the last key, and a key again: stored as ordinary puts.
            try bytes("a-first").withUnsafeBytes { k in try bytes("early").withUnsafeBytes { v in try loader.put(.key, key: k, value: v) } }
            try Self.key(5).withUnsafeBytes { k in try bytes("again").withUnsafeBytes { v in try loader.put(.key, key: k, value: v) } }
            try bytes("l").withUnsafeBytes { k in try bytes("lease").withUnsafeBytes { v in try loader.put(.lease, key: k, value: v) } }
            #expect(loader.count == 1003)
        }
        let stored = try Self.pairs(backend, .key)
        #expect(stored.count == 1001)
        #expect(stored.first.map { $0.0 } == bytes("a-first"))
        #expect(stored.first { $0.0 == Self.key(5) }?.1 == bytes("again"))
        #expect(stored.first { $0.0 == Self.key(999) }?.1 == bytes("v999"))
        #expect(try Self.pairs(backend, .lease).map { $0.0 } == [bytes("before"), bytes("l")])
        try backend.close()
        // Committed: a reopened backend has it all.
        let reopened = try Backend(path: dir.db)
        #expect(try Self.pairs(reopened, .key).count == 1001)
        try reopened.close()
    }

    /// A map of 1 MiB, chunks of 1 MiB, about 40 MiB of small pairs, pairs
    /// with values on overflow pages, and a pair larger than a chunk: the map
    /// grows before each chunk and no write runs out of it.
    @Test func theMapGrowsBeforeEachChunk() throws {
        let dir = TemporaryDirectory()
        let backend = try Backend(path: dir.db, config: BackendConfig(initialMapSizeBytes: 1 << 20, quotaBytes: 1 << 30))
        let small = [UInt8](repeating: 7, count: 24)
        let large = [UInt8](repeating: 9, count: 5000)
        let huge = [UInt8](repeating: 1, count: 3 << 20)
        try backend.load(chunkBytes: 1 << 20) { loader in
            for i in 0..<400_000 {
                try Self.key(i).withUnsafeBytes { k in try small.withUnsafeBytes { v in try loader.put(.key, key: k, value: v) } }
            }
            for i in 0..<2000 {
                try Self.key(i).withUnsafeBytes { k in try large.withUnsafeBytes { v in try loader.put(.lease, key: k, value: v) } }
            }
            try bytes("huge").withUnsafeBytes { k in try huge.withUnsafeBytes { v in try loader.put(.alarm, key: k, value: v) } }
        }
        #expect(backend.mapSize > 40 << 20)
        let stored = try Self.pairs(backend, .key)
        #expect(stored.count == 400_000)
        #expect(stored.allSatisfy { $0.1 == small })
        #expect(try Self.pairs(backend, .lease).count == 2000)
        #expect(try backend.read { try $0.get(.alarm, bytes("huge")) } == huge)
        try backend.close()
    }

    @Test func loadingPastTheQuotaFailsAndKeepsEarlierChunks() throws {
        let dir = TemporaryDirectory()
        let backend = try Backend(path: dir.db, config: BackendConfig(initialMapSizeBytes: 1 << 20, quotaBytes: 8 << 20))
        let value = [UInt8](repeating: 3, count: 1000)
        var loaded = 0
        #expect(throws: BackendError.quotaExceeded(quotaBytes: 8 << 20)) {
            try backend.load(chunkBytes: 256 << 10) { loader in
                for i in 0..<20_000 {
                    try Self.key(i).withUnsafeBytes { k in try value.withUnsafeBytes { v in try loader.put(.key, key: k, value: v) } }
                    loaded += 1
                }
            }
        }
        #expect(loaded < 20_000)
        let kept = try Self.pairs(backend, .key).count
        #expect(kept > 0 && kept <= loaded)
        // The backend is usable afterwards.
        try backend.put(.meta, key: bytes("after"), value: bytes("1"))
        try backend.forceCommit()
        #expect(try backend.read { try $0.get(.meta, bytes("after")) } == bytes("1"))
        try backend.close()
    }
}
