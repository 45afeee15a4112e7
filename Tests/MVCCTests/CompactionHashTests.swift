import Backend
import EtcdProto
import Foundation
import Testing
@testable import MVCC

/// The hash each compaction records (etcd's HashStorage), which the
/// compaction hash check compares between members.
@Suite struct CompactionHashTests {
    /// A history with overwrites, deletes and keys deleted and re-created.
    private func write(_ round: Int, to store: KVStore) throws {
        for i in 0..<12 {
            let key = "k\((round * 5 + i) % 9)"
            if (round + i) % 7 == 3 {
                _ = try store.deleteRange(deleteRequest(key))
            } else {
                _ = try store.put(putRequest(key, "r\(round)-\(i)"))
            }
        }
    }

    @Test func eachCompactionRecordsTheHashKVItsRevisionHadBefore() throws {
        let dirA = TemporaryDirectory(), dirB = TemporaryDirectory()
        let a = try dirA.openStore(StoreConfig(compactionBatchLimit: 3))
        let b = try dirB.openStore(StoreConfig(compactionBatchLimit: 1000), backend: BackendConfig(batchLimitOps: 1))
        var expected: [KeyValueHash] = []
        var previous: Int64 = -1
        for round in 0..<6 {
            try write(round, to: a)
            try write(round, to: b)
            let target = a.currentRevision - 4
            let before = try a.hashKV(target).hash
            #expect(before.compactRevision == previous)
            expected.append(KeyValueHash(hash: before.hash, compactRevision: previous, revision: target))
            _ = try a.compact(target)
            _ = try b.compact(target)
            try a.finishCompaction()
            try b.finishCompaction()
            try b.backend.commitIfDue()
            previous = target
        }
        #expect(a.compactionHashes == expected)
        #expect(b.compactionHashes == expected)
        // Asked at a recorded compaction revision, HashKV answers its hash.
        #expect(try a.hashKV(expected[5].revision).hash == expected[5])
        #expect(throws: MVCCError.compacted) { try a.hashKV(expected[5].revision - 1) }
        try a.backend.close()
        try b.backend.close()
    }

    @Test func aDivergedValueChangesTheCompactionHash() throws {
        let dirA = TemporaryDirectory(), dirB = TemporaryDirectory()
        let a = try dirA.openStore(), b = try dirB.openStore()
        for i in 0..<20 {
            _ = try a.put(putRequest("k\(i % 6)", "v\(i)"))
            _ = try b.put(putRequest("k\(i % 6)", i == 9 ? "v?" : "v\(i)"))
        }
        _ = try a.compact(15)
        _ = try b.compact(15)
        try a.finishCompaction()
        try b.finishCompaction()
        let (hashA, hashB) = (try #require(a.compactionHashes.last), try #require(b.compactionHashes.last))
        #expect(hashA.revision == 15 && hashB.revision == 15 && hashA.compactRevision == hashB.compactRevision)
        #expect(hashA.hash != hashB.hash)
        try a.backend.close()
        try b.backend.close()
    }

    @Test func anUnfinishedCompactionIsFinishedBeforeTheNextStarts() throws {
        let dir = TemporaryDirectory()
        let store = try dir.openStore(StoreConfig(compactionBatchLimit: 2))
        for i in 0..<30 { _ = try store.put(putRequest("k\(i % 4)", "v\(i)")) }
        let at10 = try store.hashKV(10).hash
        _ = try store.compact(10)
        #expect(try !store.compactionStep())
        let at20 = try store.hashKV(20).hash
        _ = try store.compact(20)
        #expect(store.compactionHashes == [at10])
        try store.finishCompaction()
        #expect(store.compactionHashes == [at10, at20])
        #expect(at20.compactRevision == 10)
        try store.backend.close()
    }

    @Test func onlyTheLastTenAreKeptAndNoneSurviveAReopen() throws {
        let dir = TemporaryDirectory()
        do {
            let store = try dir.openStore()
            for i in 0..<40 { _ = try store.put(putRequest("k\(i % 3)", "v\(i)")) }
            for revision in stride(from: 5, through: 38, by: 3) {
                _ = try store.compact(Int64(revision))
                try store.finishCompaction()
            }
            #expect(store.compactionHashes.map(\.revision) == Array(stride(from: 11, through: 38, by: 3)).map(Int64.init))
            try store.backend.close()
        }
        let store = try dir.openStore()
        #expect(store.compactionHashes.isEmpty)
        try store.backend.close()
    }

    /// The compaction keeps a tombstone at exactly its revision (for
    /// watchers) where HashKV's rule does not: the hash follows HashKV's,
    /// also when that leaves nothing alive (then nothing is left out).
    @Test func aTombstoneAtTheCompactionRevisionHashesAsHashKVDoes() throws {
        let dir = TemporaryDirectory()
        let store = try dir.openStore()
        _ = try store.put(putRequest("a", "1"))  // 2
        _ = try store.put(putRequest("a", "2"))  // 3
        _ = try store.compact(2)
        try store.finishCompaction()
        _ = try store.deleteRange(deleteRequest("a"))  // 4
        let before = try store.hashKV(4).hash
        _ = try store.compact(4)
        try store.finishCompaction()
        #expect(store.compactionHashes.last == before)
        _ = try store.put(putRequest("b", "1"))  // 5
        _ = try store.put(putRequest("c", "1"))  // 6
        _ = try store.deleteRange(deleteRequest("b"))  // 7
        let withLiveKey = try store.hashKV(7).hash
        _ = try store.compact(7)
        try store.finishCompaction()
        #expect(store.compactionHashes.last == withLiveKey)
        try store.backend.close()
    }
}
