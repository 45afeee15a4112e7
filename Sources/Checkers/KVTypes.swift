// Plain value types describing etcd KV requests and responses for the checkers.
// Deliberately independent of any protobuf types: adapters convert.

/// A byte string (etcd keys and values), ordered bytewise like etcd orders keys.
public struct KVBytes: Hashable, Comparable, Sendable, ExpressibleByStringInterpolation, CustomStringConvertible {
    public var bytes: [UInt8]

    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public init(_ string: String) { self.bytes = Array(string.utf8) }
    public init(stringLiteral value: String) { self.init(value) }

    public var isEmpty: Bool { bytes.isEmpty }

    public static func < (a: KVBytes, b: KVBytes) -> Bool {
        a.bytes.lexicographicallyPrecedes(b.bytes)
    }

    /// The bytes as text when they are printable UTF-8, else as hex.
    public var description: String {
        if bytes.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) {
            return String(decoding: bytes, as: UTF8.self)
        }
        let hex = bytes.map { b -> String in
            let s = String(b, radix: 16)
            return s.count == 1 ? "0" + s : s
        }.joined()
        return "0x" + hex
    }
}

/// A key range with etcd's encoding: an empty `rangeEnd` means the single key `key`;
/// `rangeEnd == [0]` means every key `>= key`; otherwise the half-open `[key, rangeEnd)`.
public struct KVRange: Hashable, Sendable, CustomStringConvertible {
    public var key: KVBytes
    public var rangeEnd: KVBytes

    public init(key: KVBytes, rangeEnd: KVBytes = KVBytes([])) {
        self.key = key
        self.rangeEnd = rangeEnd
    }

    public static func single(_ key: KVBytes) -> KVRange { KVRange(key: key) }
    /// `[from, to)`.
    public static func range(_ from: KVBytes, _ to: KVBytes) -> KVRange { KVRange(key: from, rangeEnd: to) }
    /// Every key `>= from`.
    public static func fromKey(_ from: KVBytes) -> KVRange { KVRange(key: from, rangeEnd: KVBytes([0])) }
    /// Every key.
    public static var all: KVRange { KVRange(key: KVBytes([0]), rangeEnd: KVBytes([0])) }
    /// Every key starting with `prefix` (etcd's `WithPrefix`).
    public static func prefix(_ prefix: KVBytes) -> KVRange {
        var end = prefix.bytes
        while let last = end.last {
            if last < 0xFF {
                end[end.count - 1] = last + 1
                return KVRange(key: prefix, rangeEnd: KVBytes(end))
            }
            end.removeLast()
        }
        return KVRange(key: prefix, rangeEnd: KVBytes([0]))
    }

    public var isSingleKey: Bool { rangeEnd.isEmpty }

    public func contains(_ k: KVBytes) -> Bool {
        if rangeEnd.isEmpty { return k == key }
        if k < key { return false }
        if rangeEnd.bytes == [0] { return true }
        return k < rangeEnd
    }

    public var description: String {
        if rangeEnd.isEmpty { return "\(key)" }
        if rangeEnd.bytes == [0] { return "[\(key), +∞)" }
        return "[\(key), \(rangeEnd))"
    }
}

/// A key-value pair with its revisions, as etcd reports it. `createRevision` and
/// `version` may be 0 when the recorder did not capture them: 0 is then not checked.
public struct KVRecord: Hashable, Sendable, CustomStringConvertible {
    public var key: KVBytes
    public var value: KVBytes
    public var createRevision: Int64
    public var modRevision: Int64
    public var version: Int64

    public init(key: KVBytes, value: KVBytes, createRevision: Int64 = 0, modRevision: Int64, version: Int64 = 0) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.version = version
    }

    /// Same key, value and mod revision; create revision and version agree unless one
    /// side does not know them (0).
    public func agrees(with other: KVRecord) -> Bool {
        key == other.key && value == other.value && modRevision == other.modRevision
            && (createRevision == 0 || other.createRevision == 0 || createRevision == other.createRevision)
            && (version == 0 || other.version == 0 || version == other.version)
    }

    public var description: String {
        var s = "\(key)=\(value)@mod\(modRevision)"
        if createRevision != 0 { s += ",create\(createRevision)" }
        if version != 0 { s += ",v\(version)" }
        return s
    }
}

/// One comparison of a transaction's guard (single key).
public struct KVCompare: Hashable, Sendable, CustomStringConvertible {
    public enum Relation: Hashable, Sendable { case equal, notEqual, greater, less }
    public enum Target: Hashable, Sendable {
        case value(KVBytes)
        case version(Int64)
        case createRevision(Int64)
        case modRevision(Int64)
    }

    public var key: KVBytes
    public var relation: Relation
    public var target: Target

    public init(key: KVBytes, _ relation: Relation, _ target: Target) {
        self.key = key
        self.relation = relation
        self.target = target
    }

    public static func valueEquals(_ key: KVBytes, _ value: KVBytes) -> KVCompare { .init(key: key, .equal, .value(value)) }
    public static func modRevisionEquals(_ key: KVBytes, _ rev: Int64) -> KVCompare { .init(key: key, .equal, .modRevision(rev)) }
    /// `version(key) == 0`.
    public static func absent(_ key: KVBytes) -> KVCompare { .init(key: key, .equal, .version(0)) }
    /// `version(key) > 0`.
    public static func exists(_ key: KVBytes) -> KVCompare { .init(key: key, .greater, .version(0)) }

    /// Evaluates on the key's current record (nil = absent), with etcd's rules: a value
    /// comparison on an absent key is false; other targets compare against 0.
    /// Returns nil when a needed field is unknown (0 in a record that exists).
    func evaluate(_ kv: KVRecord?) -> Bool? {
        func rel<T: Comparable>(_ a: T, _ b: T) -> Bool {
            switch relation {
            case .equal: return a == b
            case .notEqual: return a != b
            case .greater: return a > b
            case .less: return a < b
            }
        }
        switch target {
        case .value(let v):
            guard let kv else { return false }
            return rel(kv.value, v)
        case .version(let v):
            guard let kv else { return rel(Int64(0), v) }
            if kv.version == 0 { return nil }
            return rel(kv.version, v)
        case .createRevision(let v):
            guard let kv else { return rel(Int64(0), v) }
            if kv.createRevision == 0 { return nil }
            return rel(kv.createRevision, v)
        case .modRevision(let v):
            guard let kv else { return rel(Int64(0), v) }
            return rel(kv.modRevision, v)
        }
    }

    public var description: String {
        let r: String
        switch relation {
        case .equal: r = "=="
        case .notEqual: r = "!="
        case .greater: r = ">"
        case .less: r = "<"
        }
        switch target {
        case .value(let v): return "value(\(key)) \(r) \(v)"
        case .version(let v): return "version(\(key)) \(r) \(v)"
        case .createRevision(let v): return "create(\(key)) \(r) \(v)"
        case .modRevision(let v): return "mod(\(key)) \(r) \(v)"
        }
    }
}

/// A KV request. `get` is a single-key range.
public indirect enum KVInput: Hashable, Sendable, CustomStringConvertible {
    case put(key: KVBytes, value: KVBytes, prevKV: Bool = false)
    case range(KVRange)
    case delete(KVRange, prevKV: Bool = false)
    /// Nested transactions are allowed; as in etcd, every guard along the executed path
    /// is evaluated against the state before the transaction.
    case txn(compares: [KVCompare], success: [KVInput], failure: [KVInput])

    public static func get(_ key: KVBytes) -> KVInput { .range(.single(key)) }

    /// Whether some execution of this request could change the store.
    public var mayWrite: Bool {
        switch self {
        case .put, .delete: return true
        case .range: return false
        case .txn(_, let s, let f): return s.contains { $0.mayWrite } || f.contains { $0.mayWrite }
        }
    }

    /// Every single key the request names (ranges that are not single keys excluded).
    var namedKeys: [KVBytes] {
        switch self {
        case .put(let k, _, _): return [k]
        case .range(let r), .delete(let r, _): return r.isSingleKey ? [r.key] : []
        case .txn(let c, let s, let f): return c.map(\.key) + s.flatMap(\.namedKeys) + f.flatMap(\.namedKeys)
        }
    }

    /// Every multi-key range the request reads or deletes.
    var ranges: [KVRange] {
        switch self {
        case .put: return []
        case .range(let r), .delete(let r, _): return r.isSingleKey ? [] : [r]
        case .txn(_, let s, let f): return s.flatMap(\.ranges) + f.flatMap(\.ranges)
        }
    }

    public var description: String {
        switch self {
        case .put(let k, let v, let p): return "put(\(k)=\(v)\(p ? ", prevKV" : ""))"
        case .range(let r): return r.isSingleKey ? "get(\(r.key))" : "range(\(r))"
        case .delete(let r, let p): return "delete(\(r)\(p ? ", prevKV" : ""))"
        case .txn(let c, let s, let f):
            return "txn(if \(c.map(\.description).joined(separator: " && ")) then [\(s.map(\.description).joined(separator: ", "))] else [\(f.map(\.description).joined(separator: ", "))])"
        }
    }
}

/// The per-request part of a response (no header).
public indirect enum KVResult: Hashable, Sendable, CustomStringConvertible {
    /// `prevKV` is only checked when the request asked for it.
    case put(prevKV: KVRecord?)
    /// Records sorted by key.
    case range(kvs: [KVRecord])
    /// `prevKVs` (sorted by key) are only checked when the request asked for them.
    case delete(deleted: Int, prevKVs: [KVRecord])
    case txn(succeeded: Bool, results: [KVResult])

    public var description: String {
        switch self {
        case .put(let p): return p.map { "prev=\($0)" } ?? "ok"
        case .range(let kvs): return "[" + kvs.map(\.description).joined(separator: ", ") + "]"
        case .delete(let n, let p): return "deleted \(n)" + (p.isEmpty ? "" : " prev=[" + p.map(\.description).joined(separator: ", ") + "]")
        case .txn(let ok, let r): return "\(ok ? "succeeded" : "failed") [" + r.map(\.description).joined(separator: "; ") + "]"
        }
    }
}

/// A response: the header revision and the result.
public struct KVOutput: Hashable, Sendable, CustomStringConvertible {
    /// The response header's revision (for a write: the revision it created; for a
    /// read or a write that changed nothing: the store's current revision).
    public var revision: Int64
    public var result: KVResult

    public init(revision: Int64, result: KVResult) {
        self.revision = revision
        self.result = result
    }

    public static func put(revision: Int64, prevKV: KVRecord? = nil) -> KVOutput {
        .init(revision: revision, result: .put(prevKV: prevKV))
    }
    public static func range(revision: Int64, kvs: [KVRecord]) -> KVOutput {
        .init(revision: revision, result: .range(kvs: kvs))
    }
    public static func delete(revision: Int64, deleted: Int, prevKVs: [KVRecord] = []) -> KVOutput {
        .init(revision: revision, result: .delete(deleted: deleted, prevKVs: prevKVs))
    }
    public static func txn(revision: Int64, succeeded: Bool, results: [KVResult]) -> KVOutput {
        .init(revision: revision, result: .txn(succeeded: succeeded, results: results))
    }

    public var description: String { "\(result) @rev\(revision)" }
}

extension KVResult {
    /// Whether this (claimed) result of `input` changed the store: a put, or a delete
    /// that deleted something, on the executed path. nil if the result's shape does not
    /// fit the request.
    func claimsWrite(for input: KVInput) -> Bool? {
        switch (input, self) {
        case (.put, .put): return true
        case (.range, .range): return false
        case (.delete, .delete(let n, _)): return n > 0
        case (.txn(_, let s, let f), .txn(let ok, let results)):
            let branch = ok ? s : f
            guard branch.count == results.count else { return nil }
            var wrote = false
            for (i, r) in zip(branch, results) {
                guard let w = r.claimsWrite(for: i) else { return nil }
                wrote = wrote || w
            }
            return wrote
        default: return nil
        }
    }
}
