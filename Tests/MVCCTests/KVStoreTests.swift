import Backend
import EtcdProto
import Foundation
import Testing

@testable import MVCC

@Suite struct KVStoreTests {
    @Test func putRangeDeleteFollowEtcdRevisions() throws {
        let dir = TemporaryDirectory()
        let store = try dir.openStore()
        #expect(store.currentRevision == 1)
        let first = try store.put(putRequest("foo", "bar", lease: 5))
        #expect(first.revision == 2)
        #expect(first.response.header.revision == 2)
        #expect(first.events.count == 1 && first.events[0].type == .put && !first.events[0].hasPrevKv)
        let second = try store.put(putRequest("foo", "baz", prevKv: true))
        #expect(second.response.prevKv.value == d("bar"))
        #expect(second.events[0].prevKv.value == d("bar"))
        let r = try store.range(rangeRequest("foo"))
        #expect(r.header.revision == 3)
        #expect(r.count == 1)
        let kv = r.kvs[0]
        #expect(kv.key == d("foo") && kv.value == d("baz"))
        #expect(kv.createRevision == 2 && kv.modRevision == 3 && kv.version == 2 && kv.lease == 0)
        // Historical read.
        #expect(try store.range(rangeRequest("foo", revision: 2)).kvs[0].value == d("bar"))
        #expect(throws: MVCCError.futureRevision) { try store.range(rangeRequest("foo", revision: 4)) }

        let deleted = try store.deleteRange(deleteRequest("foo", prevKv: true))
        #expect(deleted.response.deleted == 1)
        #expect(deleted.response.prevKvs.map(\.value) == [d("baz")])
        #expect(deleted.revision == 4)
        #expect(deleted.events[0].type == .delete && deleted.events[0].kv.modRevision == 4)
        #expect(try store.range(rangeRequest("foo")).count == 0)
        // Deleting nothing does not advance the revision.
        let none = try store.deleteRange(deleteRequest("foo"))
        #expect(none.response.deleted == 0 && none.revision == 4 && none.response.header.revision == 4)
        // Recreated key starts a new generation.
        _ = try store.put(putRequest("foo", "again"))
        let recreated = try store.range(rangeRequest("foo")).kvs[0]
        #expect(recreated.createRevision == 5 && recreated.version == 1)
        try store.backend.close()
    }

    @Test func rangeOptions() throws {
        let dir = TemporaryDirectory()
        let store = try dir.openStore()
        for (k, v) in [("a", "3"), ("b", "1"), ("c", "2"), ("d", "5"), ("e", "4")] { _ = try store.put(putRequest(k, v)) }
        _ = try store.put(putRequest("b", "6"))  // b: version 2, mod 7
        // Range, prefix-style, from-key, all keys.
        #expect(try store.range(rangeRequest("b", "d")).kvs.map(\.key) == [d("b"), d("c")])
        #expect(try store.range(rangeRequest("c", "\0")).kvs.map(\.key) == [d("c"), d("d"), d("e")])
        #expect(try store.range(rangeRequest("\0", "\0")).count == 5)
        // Limit, more and count.
        var limited = rangeRequest("a", "z")
        limited.limit = 2
        var r = try store.range(limited)
        #expect(r.kvs.map(\.key) == [d("a"), d("b")] && r.more && r.count == 5)
        limited.limit = 5
        r = try store.range(limited)
        #expect(r.kvs.count == 5 && !r.more)
        // Sort by value descending with a limit.
        var sorted = rangeRequest("a", "z")
        sorted.sortTarget = .value
        sorted.sortOrder = .descend
        sorted.limit = 2
        r = try store.range(sorted)
        #expect(r.kvs.map(\.value) == [d("6"), d("5")] && r.more && r.count == 5)
        // Sort target without order means ascending.
        var byMod = rangeRequest("a", "z")
        byMod.sortTarget = .mod
        #expect(try store.range(byMod).kvs.map(\.key) == [d("a"), d("c"), d("d"), d("e"), d("b")])
        // Filters: count is taken before filtering.
        var filtered = rangeRequest("a", "z")
        filtered.minModRevision = 4
        filtered.maxModRevision = 6
        r = try store.range(filtered)
        #expect(r.kvs.map(\.key) == [d("c"), d("d"), d("e")] && r.count == 5)
        var created = rangeRequest("a", "z")
        created.maxCreateRevision = 3
        #expect(try store.range(created).kvs.map(\.key) == [d("a"), d("b")])
        // keys_only and count_only.
        var keysOnly = rangeRequest("a", "z")
        keysOnly.keysOnly = true
        #expect(try store.range(keysOnly).kvs.allSatisfy { $0.value.isEmpty })
        var countOnly = rangeRequest("a", "z")
        countOnly.countOnly = true
        r = try store.range(countOnly)
        #expect(r.kvs.isEmpty && r.count == 5 && !r.more)
        #expect(throws: MVCCError.emptyKey) { try store.range(rangeRequest("")) }
        try store.backend.close()
    }

    @Test func txnComparesBranchesAndNesting() throws {
        let dir = TemporaryDirectory()
        let store = try dir.openStore()
        _ = try store.put(putRequest("k1", "v1"))
        _ = try store.put(putRequest("k2", "v2", lease: 9))
        var txn = Etcdserverpb_TxnRequest()
        txn.compare = [
            compare("k1", .value, .equal, .value(d("v1"))),
            compare("k2", .lease, .equal, .lease(9)),
            compare("k", .version, .greater, .version(0), rangeEnd: "l"),
            compare("missing", .create, .equal, .createRevision(0)),
        ]
        var inner = Etcdserverpb_TxnRequest()
        inner.compare = [compare("k1", .mod, .less, .modRevision(2))]
        inner.success = [.put(putRequest("wrong", "x"))]
        inner.failure = [.put(putRequest("k3", "v3")), .range(rangeRequest("k1", "k9"))]
        txn.success = [.put(putRequest("k1", "new")), .range(rangeRequest("k1")), .txn(inner)]
        txn.failure = [.delete(deleteRequest("k1"))]
        let result = try store.txn(txn)
        #expect(result.response.succeeded)
        #expect(result.revision == 4 && result.response.header.revision == 4)
        #expect(result.events.map(\.kv.key) == [d("k1"), d("k3")])
        #expect(result.events.map(\.kv.modRevision) == [4, 4])
        guard case .responseRange(let seen)? = result.response.responses[1].response,
            case .responseTxn(let nested)? = result.response.responses[2].response,
            case .responseRange(let nestedRange)? = nested.responses[1].response
        else {
            Issue.record("unexpected response shape")
            return
        }
        // Reads inside the txn see its earlier writes.
        #expect(seen.kvs[0].value == d("new") && seen.header.revision == 4)
        #expect(!nested.succeeded)
        #expect(nestedRange.kvs.map(\.key) == [d("k1"), d("k2"), d("k3")])
        // Value compares on a missing key fail.
        var failing = Etcdserverpb_TxnRequest()
        failing.compare = [compare("missing", .value, .equal, .value(Data()))]
        failing.success = [.put(putRequest("s", ""))]
        failing.failure = [.range(rangeRequest("k1"))]
        let other = try store.txn(failing)
        #expect(!other.response.succeeded && other.revision == 4 && other.events.isEmpty)
        failing.success = [.range(rangeRequest("s"))]
        let readOnly = try store.readOnlyTxn(failing)
        #expect(!readOnly.succeeded && readOnly.header.revision == 4)
        try store.backend.close()
    }

    @Test func txnErrors() throws {
        let dir = TemporaryDirectory()
        let store = try dir.openStore(StoreConfig(maxTxnOps: 4))
        _ = try store.put(putRequest("a", "1"))
        var duplicate = Etcdserverpb_TxnRequest()
        duplicate.success = [.put(putRequest("x", "1")), .put(putRequest("x", "2"))]
        #expect(throws: MVCCError.duplicateKey) { try store.txn(duplicate) }
        var putInDeleted = Etcdserverpb_TxnRequest()
        putInDeleted.success = [.delete(deleteRequest("a", "c")), .put(putRequest("b", "1"))]
        #expect(throws: MVCCError.duplicateKey) { try store.txn(putInDeleted) }
        var nestedDuplicate = Etcdserverpb_TxnRequest()
        var inner = Etcdserverpb_TxnRequest()
        inner.success = [.put(putRequest("x", "1"))]
        inner.failure = [.put(putRequest("x", "2"))]  // then/else of one txn: fine
        nestedDuplicate.success = [.txn(inner), .put(putRequest("y", "1"))]
        #expect(try store.txn(nestedDuplicate).revision == 3)
        nestedDuplicate.success.append(.put(putRequest("x", "3")))
        #expect(throws: MVCCError.duplicateKey) { try store.txn(nestedDuplicate) }
        var tooMany = Etcdserverpb_TxnRequest()
        tooMany.success = (0..<5).map { .put(putRequest("k\($0)", "")) }
        #expect(throws: MVCCError.tooManyOperations) { try store.txn(tooMany) }
        var emptyKey = Etcdserverpb_TxnRequest()
        emptyKey.compare = [compare("", .version, .equal, .version(0))]
        #expect(throws: MVCCError.emptyKey) { try store.txn(emptyKey) }
        var ignoreMissing = Etcdserverpb_TxnRequest()
        var put = putRequest("nope", "")
        put.ignoreValue = true
        ignoreMissing.success = [.put(putRequest("ok", "1")), .put(put)]
        #expect(throws: MVCCError.keyNotFound) { try store.txn(ignoreMissing) }
        #expect(throws: MVCCError.keyNotFound) { try store.put(put) }
        var future = Etcdserverpb_TxnRequest()
        future.success = [.range(rangeRequest("a", revision: 99))]
        #expect(throws: MVCCError.futureRevision) { try store.txn(future) }
        // Nothing of the failed requests was applied.
        #expect(store.currentRevision == 3)
        #expect(try store.range(rangeRequest("ok")).count == 0)
        var valueProvided = putRequest("a", "v")
        valueProvided.ignoreValue = true
        #expect(throws: MVCCError.valueProvided) { try store.put(valueProvided) }
        #expect(MVCCError.compacted.message == "etcdserver: mvcc: required revision has been compacted")
        #expect(MVCCError.futureRevision.message == "etcdserver: mvcc: required revision is a future revision")
        #expect(MVCCError.duplicateKey.message == "etcdserver: duplicate key given in txn request")
        #expect(MVCCError.keyNotFound.message == "etcdserver: key not found")
        #expect(MVCCError.emptyKey.message == "etcdserver: key is not provided")
        #expect(MVCCError.tooManyOperations.message == "etcdserver: too many operations in txn request")
        try store.backend.close()
    }

    @Test func ignoreValueAndLeaseKeepTheStoredOnes() throws {
        let dir = TemporaryDirectory()
        let store = try dir.openStore()
        _ = try store.put(putRequest("k", "v", lease: 7))
        var keepValue = putRequest("k", "")
        keepValue.ignoreValue = true
        keepValue.lease = 8
        _ = try store.put(keepValue)
        var keepLease = putRequest("k", "w")
        keepLease.ignoreLease = true
        _ = try store.put(keepLease)
        let kv = try store.range(rangeRequest("k")).kvs[0]
        #expect(kv.value == d("w") && kv.lease == 8 && kv.version == 3)
        try store.backend.close()
    }

    @Test func compactionSemantics() throws {
        let dir = TemporaryDirectory()
        let store = try dir.openStore(StoreConfig(compactionBatchLimit: 2))
        _ = try store.put(putRequest("a", "1"))  // 2
        _ = try store.put(putRequest("a", "2"))  // 3
        _ = try store.put(putRequest("b", "1"))  // 4
        _ = try store.deleteRange(deleteRequest("b"))  // 5
        _ = try store.put(putRequest("a", "3"))  // 6
        _ = try store.put(putRequest("c", "1"))  // 7
        #expect(throws: MVCCError.futureRevision) { try store.compact(8) }
        let hashAt5 = try store.hashKV(5).hash
        let response = try store.compact(5)
        #expect(response.header.revision == 7)
        #expect(throws: MVCCError.compacted) { try store.compact(5) }
        #expect(throws: MVCCError.compacted) { try store.range(rangeRequest("a", revision: 4)) }
        // At the compaction revision itself reads still work.
        #expect(try store.range(rangeRequest("a", revision: 5)).kvs[0].value == d("2"))
        #expect(try store.range(rangeRequest("b", revision: 5)).count == 0)
        #expect(try store.range(rangeRequest("a", "z")).kvs.map(\.value) == [d("3"), d("1")])
        #expect(store.hasPendingCompaction)
        let hashBefore = try store.hashKV(0).hash
        try store.finishCompaction()
        #expect(!store.hasPendingCompaction)
        #expect(try store.hashKV(0).hash == hashBefore)
        // Only a@3 (kept), b's tombstone at exactly 5 (kept for watchers
        // from 5), a@6 and c@7 remain in the backend.
        let stored = try store.backend.read { tx in
            var keys: [Revision] = []
            try tx.forEach(.key) { k, _ in keys.append(RevisionKey.decode(k)!.revision); return true }
            return keys
        }
        #expect(stored == [Revision(main: 3), Revision(main: 5), Revision(main: 6), Revision(main: 7)])
        // The compaction's own hash still answers at its revision.
        #expect(try store.hashKV(5).hash == KeyValueHash(hash: hashAt5.hash, compactRevision: -1, revision: 5))
        #expect(throws: MVCCError.compacted) { try store.hashKV(4) }
        try store.backend.close()
        let reopened = try dir.openStore()
        #expect(throws: MVCCError.compacted) { try reopened.hashKV(5) }
        #expect(reopened.compactRevision == 5 && reopened.currentRevision == 7)
        #expect(!reopened.hasPendingCompaction)
        #expect(throws: MVCCError.compacted) { try reopened.range(rangeRequest("a", revision: 4)) }
        #expect(try reopened.range(rangeRequest("a", revision: 5)).kvs[0].value == d("2"))
        try reopened.backend.close()
    }

    @Test func unfinishedCompactionResumesAfterRestart() throws {
        let dir = TemporaryDirectory()
        do {
            let store = try dir.openStore(StoreConfig(compactionBatchLimit: 3))
            for i in 0..<20 { _ = try store.put(putRequest("k\(i % 4)", "v\(i)")) }
            _ = try store.compact(15)
            #expect(try !store.compactionStep())
            try store.backend.close()
        }
        let store = try dir.openStore()
        #expect(store.compactRevision == 15 && store.currentRevision == 21)
        #expect(store.hasPendingCompaction)
        try store.finishCompaction()
        // Its first run may have removed entries: it records no hash rather than a wrong one.
        #expect(store.compactionHashes.isEmpty)
        let entries = try store.backend.read { try $0.committedCount(.key) } + store.backend.pendingWriteCount
        #expect(entries > 0)
        #expect(try store.range(rangeRequest("k0", "k9", revision: 15)).count == 4)
        try store.backend.close()
        let again = try dir.openStore()
        #expect(!again.hasPendingCompaction && again.compactRevision == 15)
        try again.backend.close()
    }

    @Test func restartRestoresRevisionsIndexAndLeases() throws {
        let dir = TemporaryDirectory()
        var expected: Etcdserverpb_RangeResponse
        do {
            let store = try dir.openStore()
            _ = try store.put(putRequest("a", "1", lease: 3))
            _ = try store.put(putRequest("b", "1", lease: 4))
            _ = try store.put(putRequest("a", "2", lease: 3))
            _ = try store.deleteRange(deleteRequest("b"))
            _ = try store.put(putRequest("c", "1"))
            try store.backend.setConsistentIndex(11, term: 2)
            expected = try store.range(rangeRequest("\0", "\0"))
            try store.backend.close()
        }
        let store = try dir.openStore()
        #expect(store.currentRevision == 6)
        #expect(try store.range(rangeRequest("\0", "\0")) == expected)
        #expect(try store.range(rangeRequest("b", revision: 3)).kvs[0].lease == 4)
        #expect(store.restoredLeases == [d("a"): 3])
        #expect(try store.consistentIndex() == (11, 2))
        let next = try store.put(putRequest("a", "3"))
        #expect(next.revision == 7)
        #expect(try store.range(rangeRequest("a")).kvs[0].version == 3)
        try store.backend.close()
    }

    @Test func bigValuesAndEveryByteInKeys() throws {
        let dir = TemporaryDirectory()
        let store = try dir.openStore()
        let big = Data((0..<(1536 * 1024)).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        var request = Etcdserverpb_PutRequest()
        request.key = d("big")
        request.value = big
        _ = try store.put(request)
        for byte in 0...255 {
            var r = Etcdserverpb_PutRequest()
            r.key = Data([UInt8(byte), 0x00, UInt8(255 - byte)])
            r.value = Data([UInt8(byte)])
            _ = try store.put(r)
        }
        try store.backend.forceCommit()
        try store.backend.close()
        let reopened = try dir.openStore()
        #expect(try reopened.range(rangeRequest("big")).kvs[0].value == big)
        var all = Etcdserverpb_RangeRequest()
        all.key = Data([0])
        all.rangeEnd = Data([0])
        let everything = try reopened.range(all)
        #expect(everything.count == 257)
        let keys = everything.kvs.map { Array($0.key) }
        #expect(keys == keys.sorted { compareBytes($0, $1) < 0 })
        var single = Etcdserverpb_RangeRequest()
        single.key = Data([0x00, 0x00, 0xFF])
        #expect(try reopened.range(single).kvs[0].value == Data([0]))
        var prefix = Etcdserverpb_RangeRequest()
        prefix.key = Data([0xFF])
        prefix.rangeEnd = Data([0xFF, 0x01])
        #expect(try reopened.range(prefix).kvs.map(\.value) == [Data([0xFF])])
        try reopened.backend.close()
    }

    @Test func keyValueCodecMatchesProtobuf() throws {
        var rng = SeededRandom(seed: 7)
        for _ in 0..<200 {
            var kv = Mvccpb_KeyValue()
            kv.key = Data((0..<Int.random(in: 0..<40, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
            kv.value = Data((0..<Int.random(in: 0..<300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
            kv.createRevision = Int64.random(in: -5...Int64.max / 2, using: &rng)
            kv.modRevision = Bool.random(using: &rng) ? 0 : Int64.random(in: 0...1_000_000, using: &rng)
            kv.version = Int64.random(in: 0...100, using: &rng)
            kv.lease = Bool.random(using: &rng) ? 0 : Int64.random(in: Int64.min...Int64.max, using: &rng)
            let ours = KeyValueCodec.encode(kv)
            let theirs: [UInt8] = try kv.serializedBytes()
            #expect(ours == theirs)
            #expect(try ours.withUnsafeBytes { try KeyValueCodec.decode($0) } == kv)
        }
    }

    @Test func hashKVIsIndependentOfCommitAndCompactionTiming() throws {
        let dirA = TemporaryDirectory(), dirB = TemporaryDirectory()
        let a = try dirA.openStore(StoreConfig(compactionBatchLimit: 1))
        let b = try dirB.openStore(StoreConfig(compactionBatchLimit: 1000), backend: BackendConfig(batchLimitOps: 1))
        for i in 0..<50 {
            _ = try a.put(putRequest("k\(i % 7)", "v\(i)"))
            _ = try b.put(putRequest("k\(i % 7)", "v\(i)"))
            try b.backend.commitIfDue()
        }
        _ = try a.compact(30)
        _ = try b.compact(30)
        try b.finishCompaction()
        _ = try a.compactionStep()
        #expect(try a.hashKV(0).hash == b.hashKV(0).hash)
        #expect(try a.hashKV(40).hash == b.hashKV(40).hash)
        #expect(try a.hashKV(40).hash != a.hashKV(41).hash)
        let h = try a.hashKV(40).hash
        #expect(h.compactRevision == 30 && h.revision == 40)
        try a.backend.close()
        try b.backend.close()
    }
}

@Suite struct ConcurrencyTests {
    /// A reader thread ranges while the writer puts and commits small
    /// batches: every read must resolve (committed or still in the batch)
    /// and be consistent with its header revision.
    @Test func readersSeeWholeWritesWhileTheWriterCommits() throws {
        let dir = TemporaryDirectory()
        let store = try dir.openStore(backend: BackendConfig(batchLimitOps: 5, initialMapSizeBytes: 1 << 20))
        let stop = Flag()
        let problems = Flag()
        let reads = Counter()
        let reader = Thread {
            var request = Etcdserverpb_RangeRequest()
            request.key = d("k")
            request.rangeEnd = d("l")
            while !stop.isSet {
                do {
                    let r = try store.range(request)
                    // Keys k0..k3 are written together in one txn per round.
                    let values = Set(r.kvs.map(\.value))
                    if values.count > 1 || r.kvs.contains(where: { $0.modRevision > r.header.revision }) {
                        problems.set()
                    }
                    reads.increment()
                } catch {
                    problems.set()
                }
            }
        }
        reader.start()
        let big = String(repeating: "x", count: 2000)
        for round in 0..<600 {
            var txn = Etcdserverpb_TxnRequest()
            txn.success = (0..<4).map { .put(putRequest("k\($0)", "\(round)" + big)) }
            _ = try store.txn(txn)
            try store.backend.commitIfDue()
            if round % 100 == 99 {
                _ = try store.compact(store.currentRevision - 1)
                try store.finishCompaction()
            }
        }
        stop.set()
        while !reader.isFinished { usleep(1000) }
        #expect(!problems.isSet)
        #expect(reads.value > 0)
        // The map grew (1 MiB start) while readers were active.
        #expect(store.backend.mapSize > 1 << 20)
        try store.backend.close()
    }
}

final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    var value: Int { lock.withLock { count } }
    func increment() { lock.withLock { count += 1 } }
}

@Suite struct FailureTests {
    @Test func quotaExceededStopsWritesUntilReopened() throws {
        let dir = TemporaryDirectory()
        let backendConfig = BackendConfig(initialMapSizeBytes: 1 << 20, quotaBytes: 4 << 20)
        var store = try dir.openStore(backend: backendConfig)
        var request = putRequest("k", "")
        request.value = Data(repeating: 1, count: 256 << 10)
        _ = try store.put(request)
        try store.backend.forceCommit()
        var failure: MVCCError?
        for i in 0..<100 {
            request.key = d("k\(i)")
            do { _ = try store.put(request) } catch { failure = error; break }
        }
        #expect(failure == .backend(.quotaExceeded(quotaBytes: 4 << 20)))
        #expect(failure?.message == "etcdserver: mvcc: database space exceeded")
        // Further writes are refused; reads still work.
        #expect(throws: MVCCError.backend(.quotaExceeded(quotaBytes: 4 << 20))) { try store.put(putRequest("small", "v")) }
        #expect(try store.range(rangeRequest("k")).count == 1)
        // Reopening recovers the committed state (the WAL replays the rest).
        store.backend.abandon()
        store = try dir.openStore(backend: backendConfig)
        #expect(store.currentRevision == 2)
        #expect(try store.put(putRequest("small", "v")).revision == 3)
        try store.backend.close()
    }
}
