import Backend
import EtcdProto
import Foundation

/// The key interval of a request, decoded as etcd does: an empty
/// `range_end` means the single `key`; `"\0"` means every key >= `key`;
/// anything else is the exclusive end.
enum KeyRange {
    case single([UInt8])
    case interval(from: [UInt8], end: [UInt8]?)

    init(key: Data, rangeEnd: Data) {
        if rangeEnd.isEmpty {
            self = .single(byteArray(key))
        } else if rangeEnd.count == 1 && rangeEnd.first == 0 {
            self = .interval(from: byteArray(key), end: nil)
        } else {
            self = .interval(from: byteArray(key), end: byteArray(rangeEnd))
        }
    }
}

extension KVStore {
    /// etcd's Range: every option of `RangeRequest`. Any thread.
    public func range(_ request: Etcdserverpb_RangeRequest) throws(MVCCError) -> Etcdserverpb_RangeResponse {
        try RequestValidation.check(request)
        lock.readLock()
        defer { lock.unlock() }
        let current = currentRev
        do {
            return try backend.read { tx in try rangeLocked(request, currentRevision: current, tx) }
        } catch {
            throw KVStore.mvccError(error)
        }
    }

    /// The revisions of the keys in `range` alive at `atRevision`: the first
    /// `limit` of them (all when 0) and how many there are.
    func revisions(_ range: KeyRange, at atRevision: Int64, limit: Int) -> (revisions: [Revision], count: Int) {
        switch range {
        case .single(let key):
            guard let found = index.get(key)?.get(at: atRevision) else { return ([], 0) }
            return ([found.modified], 1)
        case .interval(let from, let end):
            var revisions: [Revision] = []
            var count = 0
            index.forEach(from: from, end: end) { keyIndex in
                if let found = keyIndex.get(at: atRevision) {
                    count += 1
                    if limit == 0 || revisions.count < limit {
                        revisions.append(found.modified)
                    }
                }
                return true
            }
            return (revisions, count)
        }
    }

    /// The keys alive at `atRevision` in `range` with their histories.
    func liveKeys(_ range: KeyRange, at atRevision: Int64) -> [(KeyIndex, Revision)] {
        switch range {
        case .single(let key):
            guard let keyIndex = index.get(key), let found = keyIndex.get(at: atRevision) else { return [] }
            return [(keyIndex, found.modified)]
        case .interval(let from, let end):
            var result: [(KeyIndex, Revision)] = []
            index.forEach(from: from, end: end) { keyIndex in
                if let found = keyIndex.get(at: atRevision) {
                    result.append((keyIndex, found.modified))
                }
                return true
            }
            return result
        }
    }

    /// Range as etcd's applier computes it, against a store whose newest
    /// revision is `currentRevision`. Caller holds `lock`.
    func rangeLocked(
        _ request: Etcdserverpb_RangeRequest, currentRevision: Int64, _ tx: ReadTx
    ) throws -> Etcdserverpb_RangeResponse {
        var atRevision = request.revision
        if atRevision > currentRevision { throw MVCCError.futureRevision }
        if atRevision <= 0 { atRevision = currentRevision }
        if atRevision < compactRev { throw MVCCError.compacted }

        var response = Etcdserverpb_RangeResponse()
        response.header.revision = currentRevision

        // Sorting or filtering needs every match; otherwise fetch one more
        // than the limit to learn whether there are more.
        let sortsOrFilters = request.sortOrder != .none
            || request.minModRevision != 0 || request.maxModRevision != 0
            || request.minCreateRevision != 0 || request.maxCreateRevision != 0
        var fetchLimit = sortsOrFilters ? 0 : Int(clamping: request.limit)
        if fetchLimit > 0 { fetchLimit += 1 }

        let range = KeyRange(key: request.key, rangeEnd: request.rangeEnd)
        let (revisions, count) = self.revisions(range, at: atRevision, limit: request.countOnly ? 1 : fetchLimit)
        response.count = Int64(count)
        if count == 0 || request.countOnly { return response }

        var kvs: [Mvccpb_KeyValue] = []
        kvs.reserveCapacity(revisions.count)
        for revision in revisions {
            kvs.append(try fetch(revision, tx))
        }

        if request.maxModRevision != 0 { kvs.removeAll { $0.modRevision > request.maxModRevision } }
        if request.minModRevision != 0 { kvs.removeAll { $0.modRevision < request.minModRevision } }
        if request.maxCreateRevision != 0 { kvs.removeAll { $0.createRevision > request.maxCreateRevision } }
        if request.minCreateRevision != 0 { kvs.removeAll { $0.createRevision < request.minCreateRevision } }

        var order = request.sortOrder
        if request.sortTarget != .key && order == .none { order = .ascend }
        if order == .ascend || order == .descend {
            KVStore.sort(&kvs, by: request.sortTarget, descending: order == .descend)
        }

        if request.limit > 0 && kvs.count > Int(clamping: request.limit) {
            kvs.removeSubrange(Int(request.limit)...)
            response.more = true
        }
        if request.keysOnly {
            for i in kvs.indices { kvs[i].value = Data() }
        }
        response.kvs = kvs
        return response
    }

    /// Stable sort by `target`; entries that tie keep key order.
    static func sort(_ kvs: inout [Mvccpb_KeyValue], by target: Etcdserverpb_RangeRequest.SortTarget, descending: Bool) {
        func before(_ a: Mvccpb_KeyValue, _ b: Mvccpb_KeyValue) -> Bool {
            switch target {
            case .key: return compareData(a.key, b.key) < 0
            case .version: return a.version < b.version
            case .create: return a.createRevision < b.createRevision
            case .mod: return a.modRevision < b.modRevision
            case .value: return compareData(a.value, b.value) < 0
            case .UNRECOGNIZED: return false
            }
        }
        let indexed = kvs.enumerated().sorted { x, y in
            let (a, b) = (x.element, y.element)
            if descending ? before(b, a) : before(a, b) { return true }
            if descending ? before(a, b) : before(b, a) { return false }
            return x.offset < y.offset
        }
        kvs = indexed.map(\.element)
    }
}

/// Lexicographic byte order of two `Data` values.
func compareData(_ a: Data, _ b: Data) -> Int {
    a.withUnsafeBytes { ra in b.withUnsafeBytes { rb in compareBytes(ra, rb) } }
}
