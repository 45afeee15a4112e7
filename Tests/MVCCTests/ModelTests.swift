import Backend
import EtcdProto
import Foundation
import Testing

@testable import MVCC

/// A deliberately simple reference: the whole key space at every revision.
struct ReferenceModel {
    var revision: Int64 = 1
    var compactRevision: Int64 = -1
    var states: [Int64: [Data: Mvccpb_KeyValue]] = [1: [:]]
    /// What the backend has committed (what survives a crash).
    var committedRevision: Int64 = 1
    var committedCompactRevision: Int64 = -1

    mutating func committed() {
        committedRevision = revision
        committedCompactRevision = compactRevision
    }

    /// A crash: everything after the last commit is gone.
    mutating func crash() {
        for rev in (committedRevision + 1)...max(committedRevision + 1, revision) { states[rev] = nil }
        revision = committedRevision
        compactRevision = committedCompactRevision
    }

    var current: [Data: Mvccpb_KeyValue] { states[revision]! }

    static func inRange(_ key: Data, _ start: Data, _ end: Data) -> Bool {
        if end.isEmpty { return key == start }
        if compareData(key, start) < 0 { return false }
        if end == Data([0]) { return true }
        return compareData(key, end) < 0
    }

    static func range(_ state: [Data: Mvccpb_KeyValue], _ start: Data, _ end: Data) -> [Mvccpb_KeyValue] {
        state.values.filter { inRange($0.key, start, end) }.sorted { compareData($0.key, $1.key) < 0 }
    }

    func range(_ r: Etcdserverpb_RangeRequest, in state: [Data: Mvccpb_KeyValue]? = nil, headerRevision: Int64? = nil) throws(MVCCError) -> Etcdserverpb_RangeResponse {
        let head = headerRevision ?? revision
        var at = r.revision
        if at > head { throw .futureRevision }
        if at <= 0 { at = head }
        if at < compactRevision { throw .compacted }
        let view = (at == head && state != nil) ? state! : states[at]!
        var kvs = ReferenceModel.range(view, r.key, r.rangeEnd)
        var response = Etcdserverpb_RangeResponse()
        response.header.revision = head
        response.count = Int64(kvs.count)
        if r.countOnly { return response }
        // etcd quirk: a sort target without a sort order sorts ascending, but
        // the fetch is still limited (to limit+1 in key order) first.
        let fetchesAll = r.sortOrder != .none || r.minModRevision != 0 || r.maxModRevision != 0
            || r.minCreateRevision != 0 || r.maxCreateRevision != 0
        if !fetchesAll && r.limit > 0 { kvs = Array(kvs.prefix(Int(r.limit) + 1)) }
        if r.maxModRevision != 0 { kvs.removeAll { $0.modRevision > r.maxModRevision } }
        if r.minModRevision != 0 { kvs.removeAll { $0.modRevision < r.minModRevision } }
        if r.maxCreateRevision != 0 { kvs.removeAll { $0.createRevision > r.maxCreateRevision } }
        if r.minCreateRevision != 0 { kvs.removeAll { $0.createRevision < r.minCreateRevision } }
        var order = r.sortOrder
        if r.sortTarget != .key && order == .none { order = .ascend }
        if order != .none {
            func key(_ kv: Mvccpb_KeyValue) -> (Int64, Data) {
                switch r.sortTarget {
                case .version: return (kv.version, Data())
                case .create: return (kv.createRevision, Data())
                case .mod: return (kv.modRevision, Data())
                case .value: return (0, kv.value)
                default: return (0, kv.key)
                }
            }
            // Stable: ties stay in key order.
            kvs = kvs.enumerated().sorted { x, y in
                let (a, b) = (key(x.element), key(y.element))
                let c = a.0 != b.0 ? (a.0 < b.0 ? -1 : 1) : compareData(a.1, b.1)
                if c != 0 { return order == .descend ? c > 0 : c < 0 }
                return x.offset < y.offset
            }.map(\.element)
        }
        if r.limit > 0 && kvs.count > r.limit {
            kvs = Array(kvs.prefix(Int(r.limit)))
            response.more = true
        }
        if r.keysOnly { for i in kvs.indices { kvs[i].value = Data() } }
        response.kvs = kvs
        return response
    }

    /// Applies writes at revision+1 to `working`.
    static func put(_ working: inout [Data: Mvccpb_KeyValue], _ p: Etcdserverpb_PutRequest, at rev: Int64) throws(MVCCError) -> Etcdserverpb_PutResponse {
        let old = working[p.key]
        if (p.ignoreValue || p.ignoreLease) && old == nil { throw .keyNotFound }
        var kv = Mvccpb_KeyValue()
        kv.key = p.key
        kv.value = p.ignoreValue ? old!.value : p.value
        kv.lease = p.ignoreLease ? old!.lease : p.lease
        kv.createRevision = old?.createRevision ?? rev
        kv.modRevision = rev
        kv.version = (old?.version ?? 0) + 1
        working[p.key] = kv
        var response = Etcdserverpb_PutResponse()
        if p.prevKv, let old { response.prevKv = old }
        response.header.revision = rev
        return response
    }

    static func delete(_ working: inout [Data: Mvccpb_KeyValue], _ r: Etcdserverpb_DeleteRangeRequest) -> (Etcdserverpb_DeleteRangeResponse, Int) {
        let victims = range(working, r.key, r.rangeEnd)
        var response = Etcdserverpb_DeleteRangeResponse()
        for kv in victims { working[kv.key] = nil }
        if r.prevKv { response.prevKvs = victims }
        response.deleted = Int64(victims.count)
        return (response, victims.count)
    }

    mutating func commit(_ working: [Data: Mvccpb_KeyValue], changed: Bool) {
        guard changed else { return }
        revision += 1
        states[revision] = working
    }
}

@Suite struct ModelTests {
    static let keys: [Data] = ["a", "b", "ba", "bb", "c", "d", "e", "f"].map { Data($0.utf8) } + [Data([0x00]), Data([0xFF]), Data([0x62, 0x00])]

    struct Harness {
        var rng: SeededRandom
        var model = ReferenceModel()
        let dir = TemporaryDirectory()
        let mirrorDir = TemporaryDirectory()
        var store: KVStore
        /// Same requests, different batch and compaction timing.
        var mirror: KVStore
        /// Crashes that lost writes (the crash path did something).
        var lossyCrashes = 0

        init(seed: UInt64) throws {
            rng = SeededRandom(seed: seed)
            store = try dir.openStore(StoreConfig(compactionBatchLimit: 3), backend: BackendConfig(batchLimitOps: 50))
            mirror = try mirrorDir.openStore(StoreConfig(compactionBatchLimit: 1000), backend: BackendConfig(batchLimitOps: 7))
        }

        mutating func key() -> Data { ModelTests.keys.randomElement(using: &rng)! }
        mutating func value() -> Data { Data((0..<Int.random(in: 0..<6, using: &rng)).map { _ in UInt8.random(in: 97...100, using: &rng) }) }

        mutating func rangeEnd(for key: Data) -> Data {
            switch Int.random(in: 0..<5, using: &rng) {
            case 0, 1: return Data()
            case 2: return Data([0])
            case 3: var e = key; e[e.count - 1] &+= 1; return e  // prefix
            default: return self.key()
            }
        }

        mutating func randomRange() -> Etcdserverpb_RangeRequest {
            var r = Etcdserverpb_RangeRequest()
            r.key = key()
            r.rangeEnd = rangeEnd(for: r.key)
            if Int.random(in: 0..<3, using: &rng) == 0 { r.limit = Int64.random(in: 0...3, using: &rng) }
            if Int.random(in: 0..<3, using: &rng) == 0 {
                r.revision = Int64.random(in: max(1, model.compactRevision - 2)...(model.revision + 1), using: &rng)
            }
            if Int.random(in: 0..<3, using: &rng) == 0 {
                r.sortOrder = [.none, .ascend, .descend].randomElement(using: &rng)!
                r.sortTarget = [.key, .version, .create, .mod, .value].randomElement(using: &rng)!
            }
            r.keysOnly = Int.random(in: 0..<6, using: &rng) == 0
            r.countOnly = Int.random(in: 0..<8, using: &rng) == 0
            if Int.random(in: 0..<5, using: &rng) == 0 { r.minModRevision = Int64.random(in: 0...model.revision, using: &rng) }
            if Int.random(in: 0..<5, using: &rng) == 0 { r.maxModRevision = Int64.random(in: 0...model.revision, using: &rng) }
            if Int.random(in: 0..<5, using: &rng) == 0 { r.minCreateRevision = Int64.random(in: 0...model.revision, using: &rng) }
            if Int.random(in: 0..<5, using: &rng) == 0 { r.maxCreateRevision = Int64.random(in: 0...model.revision, using: &rng) }
            return r
        }

        mutating func randomPut(_ key: Data) -> Etcdserverpb_PutRequest {
            var p = Etcdserverpb_PutRequest()
            p.key = key
            p.value = value()
            p.prevKv = Bool.random(using: &rng)
            switch Int.random(in: 0..<8, using: &rng) {
            case 0: p.ignoreValue = true; p.value = Data()
            case 1: p.ignoreLease = true
            default: p.lease = Int64.random(in: 0...2, using: &rng)
            }
            return p
        }

        mutating func randomCompare() -> Etcdserverpb_Compare {
            var c = Etcdserverpb_Compare()
            c.key = key()
            if Int.random(in: 0..<4, using: &rng) == 0 { c.rangeEnd = rangeEnd(for: c.key) }
            c.result = [.equal, .notEqual, .greater, .less].randomElement(using: &rng)!
            let rev = Int64.random(in: 0...model.revision, using: &rng)
            switch Int.random(in: 0..<5, using: &rng) {
            case 0: c.target = .value; c.targetUnion = .value(value())
            case 1: c.target = .version; c.targetUnion = .version(Int64.random(in: 0...3, using: &rng))
            case 2: c.target = .create; c.targetUnion = .createRevision(rev)
            case 3: c.target = .mod; c.targetUnion = .modRevision(rev)
            default: c.target = .lease; c.targetUnion = .lease(Int64.random(in: 0...2, using: &rng))
            }
            return c
        }

        /// Txn ops writing distinct single keys (valid) or, rarely, one key twice.
        mutating func randomOps(depth: Int, used: inout Set<Data>) -> [Etcdserverpb_RequestOp] {
            var ops: [Etcdserverpb_RequestOp] = []
            for _ in 0..<Int.random(in: 0...3, using: &rng) {
                switch Int.random(in: 0..<6, using: &rng) {
                case 0, 1:
                    let k = key()
                    if used.contains(k) && Int.random(in: 0..<4, using: &rng) != 0 { continue }
                    used.insert(k)
                    ops.append(.put(randomPut(k)))
                case 2:
                    let k = key()
                    if used.contains(k) { continue }
                    used.insert(k)
                    var del = Etcdserverpb_DeleteRangeRequest()
                    del.key = k
                    del.prevKv = Bool.random(using: &rng)
                    ops.append(.delete(del))
                case 3 where depth < 2:
                    var inner = Etcdserverpb_TxnRequest()
                    inner.compare = [randomCompare()]
                    var thenUsed = used, elseUsed = used
                    inner.success = randomOps(depth: depth + 1, used: &thenUsed)
                    inner.failure = randomOps(depth: depth + 1, used: &elseUsed)
                    used.formUnion(thenUsed)
                    used.formUnion(elseUsed)
                    ops.append(.txn(inner))
                default:
                    var r = randomRange()
                    if r.revision > model.revision || r.revision < model.compactRevision { r.revision = 0 }
                    ops.append(.range(r))
                }
            }
            return ops
        }

        // The model's txn: validated by construction except duplicates, which
        // the model detects itself (any key put or deleted twice on one path).
        func modelTxn(_ t: Etcdserverpb_TxnRequest) throws(MVCCError) -> Etcdserverpb_TxnResponse {
            func written(_ ops: [Etcdserverpb_RequestOp]) -> [Data] {
                ops.flatMap { op -> [Data] in
                    switch op.request {
                    case .requestPut(let p)?: return [p.key]
                    case .requestDeleteRange(let d)?: return [d.key]
                    case .requestTxn(let n)?: return Array(Set(written(n.success) + written(n.failure)))
                    default: return []
                    }
                }
            }
            func putsTwice(_ ops: [Etcdserverpb_RequestOp]) -> Bool {
                let keys = written(ops)
                if Set(keys).count != keys.count { return true }
                return ops.contains { op in
                    if case .requestTxn(let n)? = op.request { return putsTwice(n.success) || putsTwice(n.failure) }
                    return false
                }
            }
            if putsTwice(t.success) || putsTwice(t.failure) { throw .duplicateKey }
            let before = model.current
            func holds(_ c: Etcdserverpb_Compare) -> Bool {
                let kvs = ReferenceModel.range(before, c.key, c.rangeEnd)
                if kvs.isEmpty { return c.target == .value ? false : KVStore.compare(c, Mvccpb_KeyValue()) }
                return kvs.allSatisfy { KVStore.compare(c, $0) }
            }
            func check(_ t: Etcdserverpb_TxnRequest) throws(MVCCError) {
                let ops = t.compare.allSatisfy(holds) ? t.success : t.failure
                for op in ops {
                    switch op.request {
                    case .requestPut(let p)? where (p.ignoreLease || p.ignoreValue) && before[p.key] == nil: throw .keyNotFound
                    case .requestTxn(let n)?: try check(n)
                    default: break
                    }
                }
            }
            try check(t)
            var working = before
            var changes = 0
            func run(_ t: Etcdserverpb_TxnRequest) throws(MVCCError) -> Etcdserverpb_TxnResponse {
                var response = Etcdserverpb_TxnResponse()
                response.header = Etcdserverpb_ResponseHeader()
                response.succeeded = t.compare.allSatisfy(holds)
                for op in response.succeeded ? t.success : t.failure {
                    var out = Etcdserverpb_ResponseOp()
                    let rev = model.revision + 1
                    switch op.request {
                    case .requestPut(let p)?:
                        out.response = .responsePut(try ReferenceModel.put(&working, p, at: rev))
                        changes += 1
                    case .requestDeleteRange(let d)?:
                        var (r, n) = ReferenceModel.delete(&working, d)
                        changes += n
                        r.header.revision = changes > 0 ? rev : model.revision
                        out.response = .responseDeleteRange(r)
                    case .requestRange(let r)?:
                        let head = changes > 0 ? rev : model.revision
                        var view = model
                        view.states[head] = working
                        out.response = .responseRange(try view.range(r, in: working, headerRevision: head))
                    case .requestTxn(let n)?:
                        out.response = .responseTxn(try run(n))
                    case nil:
                        break
                    }
                    response.responses.append(out)
                }
                return response
            }
            var response = try run(t)
            response.header.revision = changes > 0 ? model.revision + 1 : model.revision
            return response
        }

        mutating func step() throws {
            let choice = Int.random(in: 0..<100, using: &rng)
            switch choice {
            case 0..<30:
                let p = randomPut(key())
                var working = model.current
                let expected = Result { () throws(MVCCError) in try ReferenceModel.put(&working, p, at: model.revision + 1) }
                let got = Result { () throws(MVCCError) in try store.put(p).response }
                let gotMirror = Result { () throws(MVCCError) in try mirror.put(p).response }
                try #require(got == expected, "put \(p)")
                #expect(gotMirror == expected)
                if case .success = expected { model.commit(working, changed: true) }
            case 30..<40:
                var r = Etcdserverpb_DeleteRangeRequest()
                r.key = key()
                r.rangeEnd = rangeEnd(for: r.key)
                r.prevKv = Bool.random(using: &rng)
                var working = model.current
                var (expected, n) = ReferenceModel.delete(&working, r)
                expected.header.revision = n > 0 ? model.revision + 1 : model.revision
                let got = try store.deleteRange(r)
                _ = try mirror.deleteRange(r)
                try #require(got.response == expected, "delete \(r)")
                #expect(got.events.count == n)
                model.commit(working, changed: n > 0)
            case 40..<55:
                var t = Etcdserverpb_TxnRequest()
                t.compare = (0..<Int.random(in: 0...2, using: &rng)).map { _ in randomCompare() }
                var usedThen = Set<Data>(), usedElse = Set<Data>()
                t.success = randomOps(depth: 0, used: &usedThen)
                t.failure = randomOps(depth: 0, used: &usedElse)
                let expected = Result { () throws(MVCCError) in try modelTxn(t) }
                let got = Result { () throws(MVCCError) in try store.txn(t).response }
                _ = try? mirror.txn(t)
                try #require(got == expected, "txn \(t)")
                if case .success(let response) = expected {
                    // Rebuild the model's state by replaying the writes of the taken path.
                    var working = model.current
                    var changed = false
                    func replay(_ t: Etcdserverpb_TxnRequest, _ response: Etcdserverpb_TxnResponse) {
                        for (op, out) in zip(response.succeeded ? t.success : t.failure, response.responses) {
                            switch (op.request, out.response) {
                            case (.requestPut(let p)?, _):
                                _ = try? ReferenceModel.put(&working, p, at: model.revision + 1)
                                changed = true
                            case (.requestDeleteRange(let d)?, _):
                                if ReferenceModel.delete(&working, d).1 > 0 { changed = true }
                            case (.requestTxn(let n)?, .responseTxn(let nr)?):
                                replay(n, nr)
                            default:
                                break
                            }
                        }
                    }
                    replay(t, response)
                    model.commit(working, changed: changed)
                }
            case 55..<80:
                let r = randomRange()
                let expected = Result { () throws(MVCCError) in try model.range(r) }
                let got = Result { () throws(MVCCError) in try store.range(r) }
                try #require(got == expected, "range \(r)")
            case 80..<83:
                let target = Int64.random(in: max(1, model.compactRevision - 1)...(model.revision + 1), using: &rng)
                let got = Result { () throws(MVCCError) in try store.compact(target).header.revision }
                _ = try? mirror.compact(target)
                if target <= model.compactRevision {
                    #expect(got == .failure(.compacted))
                } else if target > model.revision {
                    #expect(got == .failure(.futureRevision))
                } else {
                    #expect(got == .success(model.revision))
                    model.compactRevision = target
                }
            case 83..<90:
                _ = try store.compactionStep()
                if try store.backend.commitIfDue() { model.committed() }
            case 90..<93:
                try mirror.finishCompaction()
                try mirror.backend.forceCommit()
            case 93..<95:
                // Restart the store cleanly or after a crash, and compare.
                let crash = Bool.random(using: &rng)
                if crash {
                    if model.committedRevision < model.revision { lossyCrashes += 1 }
                    store.backend.abandon()
                    model.crash()
                } else {
                    try store.backend.close()
                    model.committed()
                }
                store = try dir.openStore(StoreConfig(compactionBatchLimit: 3), backend: BackendConfig(batchLimitOps: 50))
                if crash {
                    // The mirror restarts from the surviving state too.
                    mirror.backend.abandon()
                    try FileManager.default.removeItem(atPath: mirrorDir.db)
                    try store.backend.copy(to: mirrorDir.db)
                    mirror = try mirrorDir.openStore(StoreConfig(compactionBatchLimit: 1000), backend: BackendConfig(batchLimitOps: 7))
                }
                #expect(store.currentRevision == model.revision)
                #expect(store.compactRevision == model.compactRevision)
            default:
                let a = try store.hashKV(0).hash
                let b = try mirror.hashKV(0).hash
                // etcd hashes every entry at or below the compaction revision
                // when no key is alive at the hash revision (its `keep` map is
                // empty); only then does physical compaction progress show.
                var keep = Set<Revision>()
                store.index.forEach { $0.keep(a.revision, into: &keep) }
                let settled = !store.hasPendingCompaction && !mirror.hasPendingCompaction
                if !keep.isEmpty || settled { #expect(a == b) }
                #expect(a.revision == model.revision)
            }
        }
    }

    @Test(arguments: [1, 2, 3] as [UInt64])
    func storeMatchesReferenceModel(seed: UInt64) throws {
        var harness = try Harness(seed: seed)
        for _ in 0..<3000 {
            try harness.step()
        }
        #expect(harness.lossyCrashes > 0)
        // Every revision still readable matches the model exactly.
        var all = Etcdserverpb_RangeRequest()
        all.key = Data([0])
        all.rangeEnd = Data([0])
        for rev in max(1, harness.model.compactRevision)...harness.model.revision {
            all.revision = rev
            #expect(try harness.store.range(all) == harness.model.range(all))
        }
        try harness.store.backend.close()
        try harness.mirror.backend.close()
    }
}
