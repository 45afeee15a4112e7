import Backend
import EtcdProto
import Foundation

@testable import MVCC

/// A fresh directory under /tmp, removed when the test ends.
final class TemporaryDirectory {
    let path: String

    init() {
        var template = Array("/tmp/mvcc-test-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil)
        path = String(cString: made!)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    var db: String { path + "/db" }

    func openStore(_ config: StoreConfig = StoreConfig(), backend: BackendConfig = BackendConfig()) throws -> KVStore {
        try KVStore(backend: Backend(path: db, config: backend), config: config)
    }
}

func d(_ s: String) -> Data { Data(s.utf8) }

func putRequest(_ key: String, _ value: String, lease: Int64 = 0, prevKv: Bool = false) -> Etcdserverpb_PutRequest {
    var r = Etcdserverpb_PutRequest()
    r.key = d(key)
    r.value = d(value)
    r.lease = lease
    r.prevKv = prevKv
    return r
}

func rangeRequest(_ key: String, _ end: String = "", revision: Int64 = 0) -> Etcdserverpb_RangeRequest {
    var r = Etcdserverpb_RangeRequest()
    r.key = d(key)
    r.rangeEnd = d(end)
    r.revision = revision
    return r
}

func deleteRequest(_ key: String, _ end: String = "", prevKv: Bool = false) -> Etcdserverpb_DeleteRangeRequest {
    var r = Etcdserverpb_DeleteRangeRequest()
    r.key = d(key)
    r.rangeEnd = d(end)
    r.prevKv = prevKv
    return r
}

extension Etcdserverpb_RequestOp {
    static func put(_ r: Etcdserverpb_PutRequest) -> Self { var op = Self(); op.request = .requestPut(r); return op }
    static func range(_ r: Etcdserverpb_RangeRequest) -> Self { var op = Self(); op.request = .requestRange(r); return op }
    static func delete(_ r: Etcdserverpb_DeleteRangeRequest) -> Self { var op = Self(); op.request = .requestDeleteRange(r); return op }
    static func txn(_ r: Etcdserverpb_TxnRequest) -> Self { var op = Self(); op.request = .requestTxn(r); return op }
}

func compare(
    _ key: String, _ target: Etcdserverpb_Compare.CompareTarget, _ result: Etcdserverpb_Compare.CompareResult,
    _ union: Etcdserverpb_Compare.OneOf_TargetUnion, rangeEnd: String = ""
) -> Etcdserverpb_Compare {
    var c = Etcdserverpb_Compare()
    c.key = d(key)
    c.target = target
    c.result = result
    c.targetUnion = union
    c.rangeEnd = d(rangeEnd)
    return c
}

/// A seeded generator (SplitMix64) so every run of a test is the same.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
