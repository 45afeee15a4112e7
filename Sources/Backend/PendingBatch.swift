import Locks

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A write of the open batch as readers see it.
enum PendingValue: Sendable {
    case put([UInt8])
    case deleted
}

/// The writes of one batch (last write per key), kept beside the LMDB write
/// transaction for two jobs: readers on other threads see the batch before it
/// is committed, and after a failed write (map full) the batch is replayed
/// into a new transaction. The writer adds; readers look up.
final class PendingBatch: Sendable {
    private let buckets: Mutex<[[ByteKey: PendingValue]]>
    /// Whether any write was recorded; lets readers skip the lock.
    private let recorded = Atomic<Bool>(false)

    /// `expectedKeys`: room reserved in bucket `key`, which takes most writes.
    init(expectedKeys: Int = 0) {
        var tables = Array(repeating: [ByteKey: PendingValue](), count: Bucket.allCases.count)
        tables[Bucket.key.ordinal].reserveCapacity(expectedKeys)
        buckets = Mutex(tables)
    }

    /// One batch holding what `batches` (newest first) hold together: per
    /// key, the newest batch's write. A copy: later writes to `batches` do
    /// not reach it.
    init(merging batches: [PendingBatch]) {
        var tables = Array(repeating: [ByteKey: PendingValue](), count: Bucket.allCases.count)
        for batch in batches.reversed() {
            batch.buckets.withLock { source in
                for (ordinal, table) in source.enumerated() {
                    tables[ordinal].merge(table) { _, newer in newer }
                }
            }
        }
        buckets = Mutex(tables)
        recorded.store(tables.contains { !$0.isEmpty }, ordering: .relaxed)
    }

    func record(_ bucket: Bucket, _ key: [UInt8], _ value: PendingValue) {
        buckets.withLock { $0[bucket.ordinal][ByteKey(key)] = value }
        recorded.store(true, ordering: .releasing)
    }

    var isEmpty: Bool {
        !recorded.load(ordering: .acquiring)
    }

    func lookup(_ bucket: Bucket, _ key: [UInt8]) -> PendingValue? {
        buckets.withLock { tables in
            let table = tables[bucket.ordinal]
            return table.isEmpty ? nil : table[ByteKey(key)]
        }
    }

    /// The batch's entries of `bucket` with `from <= key < to` (nil bounds
    /// are open), sorted by key.
    func sortedEntries(_ bucket: Bucket, from: [UInt8]?, to: [UInt8]?) -> [([UInt8], PendingValue)] {
        let entries: [([UInt8], PendingValue)] = buckets.withLock { tables in
            tables[bucket.ordinal].compactMap { entry, value in
                let key = entry.bytes
                if let from, compareBytes(key, from) < 0 { return nil }
                if let to, compareBytes(key, to) >= 0 { return nil }
                return (key, value)
            }
        }
        return entries.sorted { compareBytes($0.0, $1.0) < 0 }
    }

    /// Calls `body` for every entry (bucket ordinal, key, value) until it
    /// returns non-zero; returns that code or 0.
    func forEachEntry(_ body: (Int, [UInt8], PendingValue) -> Int32) -> Int32 {
        buckets.withLock { tables in
            for (ordinal, table) in tables.enumerated() {
                for (key, value) in table {
                    let rc = body(ordinal, key.bytes, value)
                    if rc != 0 { return rc }
                }
            }
            return 0
        }
    }
}

/// Lexicographic byte order (LMDB's default key order, Go's bytes.Compare).
@inlinable
public func compareBytes(_ a: [UInt8], _ b: [UInt8]) -> Int {
    a.withUnsafeBytes { ra in
        b.withUnsafeBytes { rb in compareBytes(ra, rb) }
    }
}

@inlinable
public func compareBytes(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Int {
    let common = min(a.count, b.count)
    if common > 0 {
        let c = memcmpBytes(a.baseAddress!, b.baseAddress!, common)
        if c != 0 { return c < 0 ? -1 : 1 }
    }
    return a.count == b.count ? 0 : (a.count < b.count ? -1 : 1)
}

@usableFromInline
func memcmpBytes(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ count: Int) -> Int32 {
    memcmp(a, b, count)
}
