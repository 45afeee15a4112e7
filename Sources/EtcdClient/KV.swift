import EtcdProto
import Foundation
import GRPCCore

public typealias KeyValue = Mvccpb_KeyValue
public typealias RangeResponse = Etcdserverpb_RangeResponse
public typealias PutResponse = Etcdserverpb_PutResponse
public typealias DeleteResponse = Etcdserverpb_DeleteRangeResponse
public typealias TxnResponse = Etcdserverpb_TxnResponse
public typealias CompactResponse = Etcdserverpb_CompactionResponse
public typealias ResponseHeader = Etcdserverpb_ResponseHeader

/// Which keys a range call covers besides `key` itself.
public enum KeyRange: Sendable, Equatable {
    /// Only `key`.
    case single
    /// Every key starting with `key` (all keys when `key` is empty).
    case prefix
    /// Every key greater than or equal to `key` (all keys when `key` is empty).
    case fromKey
    /// `[key, end)`.
    case end(Data)

    /// The range end for `key`, in etcd's encoding (and the key etcd wants with it).
    func resolve(_ key: Data) -> (key: Data, rangeEnd: Data) {
        switch self {
        case .single: return (key, Data())
        case .prefix: return key.isEmpty ? (Data([0]), Data([0])) : (key, Self.prefixEnd(key))
        case .fromKey: return (key.isEmpty ? Data([0]) : key, Data([0]))
        case let .end(end): return (key, end)
        }
    }

    /// The smallest key greater than every key with this prefix (`\0` when there is none).
    public static func prefixEnd(_ prefix: Data) -> Data {
        var bytes = [UInt8](prefix)
        while let last = bytes.last {
            if last < 0xff {
                bytes[bytes.count - 1] = last + 1
                return Data(bytes)
            }
            bytes.removeLast()
        }
        return Data([0])
    }
}

/// Options of ``EtcdClient/get(_:options:)``: every field of etcd's RangeRequest.
public struct GetOptions: Sendable {
    public var range: KeyRange = .single
    public var limit: Int64 = 0
    /// Read at this revision (0: the latest).
    public var revision: Int64 = 0
    public var sortOrder: Etcdserverpb_RangeRequest.SortOrder = .none
    public var sortTarget: Etcdserverpb_RangeRequest.SortTarget = .key
    /// Serve from the local member without a quorum round (may be stale).
    public var serializable = false
    public var keysOnly = false
    public var countOnly = false
    public var minModRevision: Int64 = 0
    public var maxModRevision: Int64 = 0
    public var minCreateRevision: Int64 = 0
    public var maxCreateRevision: Int64 = 0

    public init(range: KeyRange = .single, limit: Int64 = 0, revision: Int64 = 0,
                sortOrder: Etcdserverpb_RangeRequest.SortOrder = .none, sortTarget: Etcdserverpb_RangeRequest.SortTarget = .key,
                serializable: Bool = false, keysOnly: Bool = false, countOnly: Bool = false) {
        self.range = range
        self.limit = limit
        self.revision = revision
        self.sortOrder = sortOrder
        self.sortTarget = sortTarget
        self.serializable = serializable
        self.keysOnly = keysOnly
        self.countOnly = countOnly
    }

    /// Prefix range.
    public static var prefix: GetOptions { GetOptions(range: .prefix) }

    func request(_ key: Data) -> Etcdserverpb_RangeRequest {
        var r = Etcdserverpb_RangeRequest()
        (r.key, r.rangeEnd) = range.resolve(key)
        r.limit = limit
        r.revision = revision
        r.sortOrder = sortOrder
        r.sortTarget = sortTarget
        r.serializable = serializable
        r.keysOnly = keysOnly
        r.countOnly = countOnly
        r.minModRevision = minModRevision
        r.maxModRevision = maxModRevision
        r.minCreateRevision = minCreateRevision
        r.maxCreateRevision = maxCreateRevision
        return r
    }
}

/// Options of ``EtcdClient/put(_:_:options:)``.
public struct PutOptions: Sendable {
    public var lease: Int64 = 0
    public var prevKV = false
    public var ignoreValue = false
    public var ignoreLease = false
    public init(lease: Int64 = 0, prevKV: Bool = false, ignoreValue: Bool = false, ignoreLease: Bool = false) {
        self.lease = lease
        self.prevKV = prevKV
        self.ignoreValue = ignoreValue
        self.ignoreLease = ignoreLease
    }

    func request(_ key: Data, _ value: Data) -> Etcdserverpb_PutRequest {
        var r = Etcdserverpb_PutRequest()
        r.key = key
        r.value = value
        r.lease = lease
        r.prevKv = prevKV
        r.ignoreValue = ignoreValue
        r.ignoreLease = ignoreLease
        return r
    }
}

/// Options of ``EtcdClient/delete(_:options:)``.
public struct DeleteOptions: Sendable {
    public var range: KeyRange = .single
    public var prevKV = false
    public init(range: KeyRange = .single, prevKV: Bool = false) {
        self.range = range
        self.prevKV = prevKV
    }

    func request(_ key: Data) -> Etcdserverpb_DeleteRangeRequest {
        var r = Etcdserverpb_DeleteRangeRequest()
        (r.key, r.rangeEnd) = range.resolve(key)
        r.prevKv = prevKV
        return r
    }
}

/// A comparison in a transaction's guard.
public struct Compare: Sendable {
    public var raw: Etcdserverpb_Compare

    /// Comparison operators.
    public enum Operator: String, Sendable { case equal = "=", notEqual = "!=", less = "<", greater = ">" }

    private static func make(_ key: some EtcdBytes, _ op: Operator, _ target: Etcdserverpb_Compare.CompareTarget,
                             _ set: (inout Etcdserverpb_Compare) -> Void) -> Compare {
        var c = Etcdserverpb_Compare()
        c.key = key.etcdBytes
        c.target = target
        switch op {
        case .equal: c.result = .equal
        case .notEqual: c.result = .notEqual
        case .less: c.result = .less
        case .greater: c.result = .greater
        }
        set(&c)
        return Compare(raw: c)
    }

    public static func value(_ key: some EtcdBytes, _ op: Operator, _ value: some EtcdBytes) -> Compare {
        make(key, op, .value) { $0.value = value.etcdBytes }
    }
    public static func version(_ key: some EtcdBytes, _ op: Operator, _ version: Int64) -> Compare {
        make(key, op, .version) { $0.version = version }
    }
    public static func createRevision(_ key: some EtcdBytes, _ op: Operator, _ revision: Int64) -> Compare {
        make(key, op, .create) { $0.createRevision = revision }
    }
    public static func modRevision(_ key: some EtcdBytes, _ op: Operator, _ revision: Int64) -> Compare {
        make(key, op, .mod) { $0.modRevision = revision }
    }
    public static func lease(_ key: some EtcdBytes, _ op: Operator, _ lease: Int64) -> Compare {
        make(key, op, .lease) { $0.lease = lease }
    }

    /// Applies the comparison to every key in `[key, end)` (or the prefix).
    public func over(_ range: KeyRange) -> Compare {
        var copy = self
        (copy.raw.key, copy.raw.rangeEnd) = range.resolve(raw.key)
        return copy
    }
}

/// An operation inside a transaction.
public struct Op: Sendable {
    public var raw: Etcdserverpb_RequestOp

    public static func get(_ key: some EtcdBytes, options: GetOptions = GetOptions()) -> Op {
        var op = Etcdserverpb_RequestOp()
        op.requestRange = options.request(key.etcdBytes)
        return Op(raw: op)
    }
    public static func put(_ key: some EtcdBytes, _ value: some EtcdBytes, options: PutOptions = PutOptions()) -> Op {
        var op = Etcdserverpb_RequestOp()
        op.requestPut = options.request(key.etcdBytes, value.etcdBytes)
        return Op(raw: op)
    }
    public static func delete(_ key: some EtcdBytes, options: DeleteOptions = DeleteOptions()) -> Op {
        var op = Etcdserverpb_RequestOp()
        op.requestDeleteRange = options.request(key.etcdBytes)
        return Op(raw: op)
    }
    public static func txn(_ txn: Txn) -> Op {
        var op = Etcdserverpb_RequestOp()
        op.requestTxn = txn.request
        return Op(raw: op)
    }
}

/// A transaction: `if compares then success else failure`.
///
/// ```swift
/// let response = try await client.txn(
///     Txn().when(.version("k", .equal, 0))
///          .then(.put("k", "v1"))
///          .orElse(.get("k")))
/// ```
public struct Txn: Sendable {
    public var compares: [Compare] = []
    public var success: [Op] = []
    public var failure: [Op] = []
    public init() {}

    public func when(_ compares: Compare...) -> Txn { var t = self; t.compares += compares; return t }
    public func when(_ compares: [Compare]) -> Txn { var t = self; t.compares += compares; return t }
    public func then(_ ops: Op...) -> Txn { var t = self; t.success += ops; return t }
    public func then(_ ops: [Op]) -> Txn { var t = self; t.success += ops; return t }
    public func orElse(_ ops: Op...) -> Txn { var t = self; t.failure += ops; return t }
    public func orElse(_ ops: [Op]) -> Txn { var t = self; t.failure += ops; return t }

    /// The protobuf request.
    public var request: Etcdserverpb_TxnRequest {
        var r = Etcdserverpb_TxnRequest()
        r.compare = compares.map(\.raw)
        r.success = success.map(\.raw)
        r.failure = failure.map(\.raw)
        return r
    }

    var isReadOnly: Bool {
        func readOnly(_ ops: [Etcdserverpb_RequestOp]) -> Bool {
            ops.allSatisfy { op in
                switch op.request {
                case .requestRange: return true
                case let .requestTxn(t): return readOnly(t.success) && readOnly(t.failure)
                default: return false
                }
            }
        }
        let r = request
        return readOnly(r.success) && readOnly(r.failure)
    }
}

extension EtcdClient {
    // MARK: KV

    /// Reads a key or a range of keys.
    public func get(_ key: some EtcdBytes, options: GetOptions = GetOptions()) async throws -> RangeResponse {
        try await range(options.request(key.etcdBytes))
    }

    /// Sends a raw RangeRequest (retried on another endpoint when needed: reads are safe).
    public func range(_ request: Etcdserverpb_RangeRequest, timeout: Duration?? = nil) async throws -> RangeResponse {
        try await unary("/etcdserverpb.KV/Range", request, .idempotent, timeout: timeout)
    }

    /// Writes a key.
    @discardableResult
    public func put(_ key: some EtcdBytes, _ value: some EtcdBytes, options: PutOptions = PutOptions()) async throws -> PutResponse {
        try await put(options.request(key.etcdBytes, value.etcdBytes))
    }

    /// Sends a raw PutRequest.
    @discardableResult
    public func put(_ request: Etcdserverpb_PutRequest, timeout: Duration?? = nil) async throws -> PutResponse {
        try await unary("/etcdserverpb.KV/Put", request, .mutating, timeout: timeout)
    }

    /// Deletes a key or a range of keys.
    @discardableResult
    public func delete(_ key: some EtcdBytes, options: DeleteOptions = DeleteOptions()) async throws -> DeleteResponse {
        try await deleteRange(options.request(key.etcdBytes))
    }

    /// Sends a raw DeleteRangeRequest.
    @discardableResult
    public func deleteRange(_ request: Etcdserverpb_DeleteRangeRequest, timeout: Duration?? = nil) async throws -> DeleteResponse {
        try await unary("/etcdserverpb.KV/DeleteRange", request, .mutating, timeout: timeout)
    }

    /// Commits a transaction (retried elsewhere only when it is read-only).
    @discardableResult
    public func txn(_ txn: Txn, timeout: Duration?? = nil) async throws -> TxnResponse {
        try await self.txn(txn.request, readOnly: txn.isReadOnly, timeout: timeout)
    }

    /// Sends a raw TxnRequest.
    @discardableResult
    public func txn(_ request: Etcdserverpb_TxnRequest, readOnly: Bool = false, timeout: Duration?? = nil) async throws -> TxnResponse {
        try await unary("/etcdserverpb.KV/Txn", request, readOnly ? .idempotent : .mutating, timeout: timeout)
    }

    /// Compacts the key-value history up to `revision`.
    /// - Parameter physical: wait until the compaction is physically applied.
    @discardableResult
    public func compact(revision: Int64, physical: Bool = false, timeout: Duration?? = nil) async throws -> CompactResponse {
        var r = Etcdserverpb_CompactionRequest()
        r.revision = revision
        r.physical = physical
        return try await unary("/etcdserverpb.KV/Compact", r, .idempotent, timeout: timeout)
    }
}
