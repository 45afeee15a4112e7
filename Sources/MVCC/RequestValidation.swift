import Backend
import EtcdProto
import Foundation

/// The request checks etcd's API layer makes before a request is proposed.
/// The store runs them again when applying (they are deterministic, so every
/// member agrees); the API layer should call them first to fail fast.
public enum RequestValidation {
    public static func check(_ request: Etcdserverpb_RangeRequest) throws(MVCCError) {
        if request.key.isEmpty { throw .emptyKey }
    }

    public static func check(_ request: Etcdserverpb_PutRequest) throws(MVCCError) {
        if request.key.isEmpty { throw .emptyKey }
        if request.ignoreValue && !request.value.isEmpty { throw .valueProvided }
        if request.ignoreLease && request.lease != 0 { throw .leaseProvided }
    }

    public static func check(_ request: Etcdserverpb_DeleteRangeRequest) throws(MVCCError) {
        if request.key.isEmpty { throw .emptyKey }
    }

    /// Operation count, empty keys and duplicate writes of a txn (nested txns
    /// included), in etcd's order of checks.
    public static func check(_ request: Etcdserverpb_TxnRequest, maxOperations: Int) throws(MVCCError) {
        try checkShape(request, maxOperations: maxOperations)
        _ = try writtenKeys(request.success)
        _ = try writtenKeys(request.failure)
    }

    private static func checkShape(_ request: Etcdserverpb_TxnRequest, maxOperations: Int) throws(MVCCError) {
        let operations = max(request.compare.count, request.success.count, request.failure.count)
        if operations > maxOperations { throw .tooManyOperations }
        for compare in request.compare where compare.key.isEmpty { throw .emptyKey }
        for op in request.success + request.failure {
            switch op.request {
            case .requestRange(let r)?: try check(r)
            case .requestPut(let r)?: try check(r)
            case .requestDeleteRange(let r)?: try check(r)
            case .requestTxn(let r)?: try checkShape(r, maxOperations: maxOperations - operations)
            case nil: throw .keyNotFound
            }
        }
    }

    /// A deleted interval: `[start, end)`, or the single key `start` when
    /// `end` is nil.
    private struct Deletion {
        var start: [UInt8]
        var end: [UInt8]?

        func contains(_ key: [UInt8]) -> Bool {
            guard let end else { return compareBytes(key, start) == 0 }
            return compareBytes(key, start) >= 0 && compareBytes(key, end) < 0
        }
    }

    /// The keys put and the intervals deleted by `ops` (and nested txns);
    /// throws when one key is written twice on a path that can run together.
    private static func writtenKeys(_ ops: [Etcdserverpb_RequestOp]) throws(MVCCError) -> (puts: Set<[UInt8]>, deletions: [Deletion]) {
        var deletions: [Deletion] = []
        for op in ops {
            guard case .requestDeleteRange(let d)? = op.request else { continue }
            // Like etcd, the interval is taken literally: a range_end of
            // "\0" makes an empty interval here.
            let end: [UInt8]? = d.rangeEnd.isEmpty ? nil : Array(d.rangeEnd)
            deletions.append(Deletion(start: Array(d.key), end: end))
        }
        var puts = Set<[UInt8]>()
        func deleted(_ key: [UInt8]) -> Bool { deletions.contains { $0.contains(key) } }
        for op in ops {
            guard case .requestTxn(let nested)? = op.request else { continue }
            let then = try writtenKeys(nested.success)
            let otherwise = try writtenKeys(nested.failure)
            for key in then.puts {
                if puts.contains(key) || deleted(key) { throw .duplicateKey }
                puts.insert(key)
            }
            for key in otherwise.puts {
                if puts.contains(key) && !then.puts.contains(key) { throw .duplicateKey }
                if deleted(key) { throw .duplicateKey }
                puts.insert(key)
            }
            deletions += then.deletions + otherwise.deletions
        }
        for op in ops {
            guard case .requestPut(let p)? = op.request else { continue }
            let key = Array(p.key)
            if puts.contains(key) || deleted(key) { throw .duplicateKey }
            puts.insert(key)
        }
        return (puts, deletions)
    }
}
