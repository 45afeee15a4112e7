// A tiny sequential reference implementation of etcd's KV semantics (current revision
// only). Used by the KV model for unknown-outcome operations, by the committed-history
// builder, and by simulations that need a correct store to generate histories from.

/// The kind of a watch / history event.
public enum KVEventType: Hashable, Sendable {
    case put
    case delete
}

/// One change produced by a write, as a watch delivers it. For a delete, `kv` carries
/// the key and `modRevision` = the deleting revision (other fields empty / 0), as etcd.
public struct KVEvent: Hashable, Sendable, CustomStringConvertible {
    public var type: KVEventType
    public var kv: KVRecord
    public var prevKV: KVRecord?

    public init(type: KVEventType, kv: KVRecord, prevKV: KVRecord? = nil) {
        self.type = type
        self.kv = kv
        self.prevKV = prevKV
    }

    public static func put(_ kv: KVRecord, prevKV: KVRecord? = nil) -> KVEvent {
        KVEvent(type: .put, kv: kv, prevKV: prevKV)
    }

    public static func delete(_ key: KVBytes, revision: Int64, prevKV: KVRecord? = nil) -> KVEvent {
        KVEvent(type: .delete, kv: KVRecord(key: key, value: KVBytes([]), modRevision: revision), prevKV: prevKV)
    }

    public var revision: Int64 { kv.modRevision }

    public var description: String {
        switch type {
        case .put: return "PUT \(kv)" + (prevKV.map { " prev=\($0)" } ?? "")
        case .delete: return "DELETE \(kv.key)@mod\(kv.modRevision)" + (prevKV.map { " prev=\($0)" } ?? "")
        }
    }
}

/// A sequential, in-memory KV store with etcd's revision rules: the revision starts at
/// 1; a request that changes something (a put, or a delete that deletes at least one
/// key -- anywhere in an executed transaction branch) creates exactly one new revision.
public struct ReferenceKVStore: Hashable, Sendable, CustomStringConvertible {
    public private(set) var revision: Int64
    /// Live records, sorted by key.
    public private(set) var records: [KVRecord]

    public init(revision: Int64 = 1, records: [KVRecord] = []) {
        self.revision = revision
        self.records = records.sorted { $0.key < $1.key }
    }

    /// Index of `key` in `records`, or where it would be inserted.
    private func lowerBound(_ key: KVBytes) -> Int {
        var lo = 0, hi = records.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if records[mid].key < key { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    public func get(_ key: KVBytes) -> KVRecord? {
        let i = lowerBound(key)
        return i < records.count && records[i].key == key ? records[i] : nil
    }

    public func range(_ r: KVRange) -> [KVRecord] {
        if r.isSingleKey { return get(r.key).map { [$0] } ?? [] }
        var out: [KVRecord] = []
        var i = lowerBound(r.key)
        while i < records.count, r.contains(records[i].key) {
            out.append(records[i])
            i += 1
        }
        return out
    }

    /// Executes a request and returns the response.
    @discardableResult
    public mutating func apply(_ input: KVInput) -> KVOutput {
        applyRecordingEvents(input).output
    }

    /// Executes a request; also returns the events it produced, in write order.
    public mutating func applyRecordingEvents(_ input: KVInput) -> (output: KVOutput, events: [KVEvent]) {
        let before = self
        var events: [KVEvent] = []
        let result = execute(input, before: before, writeRevision: revision + 1, events: &events)
        if !events.isEmpty { revision += 1 }
        return (KVOutput(revision: revision, result: result), events)
    }

    private mutating func execute(_ input: KVInput, before: ReferenceKVStore, writeRevision rev: Int64,
                                  events: inout [KVEvent]) -> KVResult {
        switch input {
        case .put(let key, let value, let wantPrev):
            let i = lowerBound(key)
            let prev = i < records.count && records[i].key == key ? records[i] : nil
            let kv: KVRecord
            if let prev {
                kv = KVRecord(key: key, value: value, createRevision: prev.createRevision, modRevision: rev,
                              version: prev.version + 1)
                records[i] = kv
            } else {
                kv = KVRecord(key: key, value: value, createRevision: rev, modRevision: rev, version: 1)
                records.insert(kv, at: i)
            }
            events.append(.put(kv, prevKV: prev))
            return .put(prevKV: wantPrev ? prev : nil)
        case .range(let r):
            return .range(kvs: range(r))
        case .delete(let r, let wantPrev):
            let gone = range(r)
            for kv in gone {
                records.remove(at: lowerBound(kv.key))
                events.append(.delete(kv.key, revision: rev, prevKV: kv))
            }
            return .delete(deleted: gone.count, prevKVs: wantPrev ? gone : [])
        case .txn(let compares, let success, let failure):
            let ok = compares.allSatisfy { $0.evaluate(before.get($0.key)) == true }
            var results: [KVResult] = []
            for op in ok ? success : failure {
                results.append(execute(op, before: before, writeRevision: rev, events: &events))
            }
            return .txn(succeeded: ok, results: results)
        }
    }

    public var description: String {
        "rev \(revision) {" + records.map(\.description).joined(separator: ", ") + "}"
    }
}
