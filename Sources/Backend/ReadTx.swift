import CLMDB
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A view of the backend inside `Backend.read` or `Backend.withWriteView`.
/// Valid only inside that closure; do not keep it.
public struct ReadTx {
    /// The read transaction, or nil for the writer's view, which asks the
    /// backend for its write transaction on every use (a map resize may
    /// replace it between calls).
    let readTxn: OpaquePointer?
    let writer: Backend?
    let dbis: [MDB_dbi]
    /// Uncommitted batches to consult before LMDB, newest first (empty for
    /// the writer's own view, whose transaction already holds them).
    let pending: [PendingBatch]
    let path: String
    let maxReaders: Int

    init(txn: OpaquePointer, dbis: [MDB_dbi], pending: [PendingBatch], path: String, maxReaders: Int) {
        self.readTxn = txn
        self.writer = nil
        self.dbis = dbis
        self.pending = pending
        self.path = path
        self.maxReaders = maxReaders
    }

    init(writer: Backend, dbis: [MDB_dbi], path: String, maxReaders: Int) {
        self.readTxn = nil
        self.writer = writer
        self.dbis = dbis
        self.pending = []
        self.path = path
        self.maxReaders = maxReaders
    }

    /// This view with the open batch copied as it is now: LMDB's side is a
    /// snapshot already, and with this the batch's side no longer moves
    /// either, so every pass over the view sees the same data (the bbolt
    /// copy takes two). The writer's own view is returned as it is.
    public func frozen() -> ReadTx {
        guard let readTxn, !pending.isEmpty else { return self }
        return ReadTx(txn: readTxn, dbis: dbis, pending: [PendingBatch(merging: pending)], path: path, maxReaders: maxReaders)
    }

    private func txn() throws(BackendError) -> OpaquePointer {
        if let readTxn { return readTxn }
        return try writer!.openWriteTxnForView()
    }

    private func error(_ rc: Int32, _ operation: String) -> BackendError {
        backendError(rc, operation: operation, path: path, maxReaders: maxReaders)
    }

    /// The value stored under `key`, copied out.
    public func get(_ bucket: Bucket, _ key: [UInt8]) throws -> [UInt8]? {
        try withValue(bucket, key) { Array($0) }
    }

    /// Calls `body` with the bytes stored under `key` (valid only during the
    /// call) and returns its result, or nil when the key is missing.
    public func withValue<R>(
        _ bucket: Bucket, _ key: [UInt8], _ body: (UnsafeRawBufferPointer) throws -> R
    ) throws -> R? {
        try key.withUnsafeBytes { try withValue(bucket, keyBytes: $0, body) }
    }

    /// `withValue` with the key given as a buffer (no array needed).
    public func withValue<R>(
        _ bucket: Bucket, keyBytes key: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) throws -> R
    ) throws -> R? {
        if !pending.isEmpty {
            let owned = [UInt8](key)
            for batch in pending {
                switch batch.lookup(bucket, owned) {
                case .put(let bytes)?: return try bytes.withUnsafeBytes { try body($0) }
                case .deleted?: return nil
                case nil: continue
                }
            }
        }
        var value = MDB_val()
        let txn = try txn()
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        let rc = mdb_get(txn, dbis[bucket.ordinal], &k, &value)
        if rc == MDB_NOTFOUND { return nil }
        guard rc == 0 else { throw error(rc, "mdb_get") }
        return try body(UnsafeRawBufferPointer(start: value.mv_data, count: value.mv_size))
    }

    /// Visits the entries of `bucket` with `from <= key < to` in key order
    /// (nil bounds are open) until `body` returns false. The buffers are
    /// valid only during the call.
    public func forEach(
        _ bucket: Bucket, from: [UInt8]? = nil, to: [UInt8]? = nil,
        _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Bool
    ) throws {
        // Merge the uncommitted entries (newest batch wins) with LMDB's.
        var overlay: [([UInt8], PendingValue)] = []
        for batch in pending.reversed() {
            overlay = ReadTx.merge(older: overlay, newer: batch.sortedEntries(bucket, from: from, to: to))
        }
        var next = 0
        func emitOverlay(upTo key: UnsafeRawBufferPointer?) throws -> (keepGoing: Bool, shadowed: Bool) {
            while next < overlay.count {
                let (okey, ovalue) = overlay[next]
                let order = key.map { k in okey.withUnsafeBytes { compareBytes($0, k) } } ?? -1
                if order > 0 { return (true, false) }
                next += 1
                if case .put(let bytes) = ovalue {
                    if order == 0 {
                        let go = try okey.withUnsafeBytes { k in try bytes.withUnsafeBytes { try body(k, $0) } }
                        return (go, true)
                    }
                    let go = try okey.withUnsafeBytes { k in try bytes.withUnsafeBytes { try body(k, $0) } }
                    if !go { return (false, false) }
                } else if order == 0 {
                    return (true, true)
                }
            }
            return (true, false)
        }

        var cursor: OpaquePointer?
        var rc = mdb_cursor_open(try txn(), dbis[bucket.ordinal], &cursor)
        guard rc == 0, let cursor else { throw error(rc, "mdb_cursor_open") }
        defer { mdb_cursor_close(cursor) }
        var key = MDB_val()
        var value = MDB_val()
        if let from {
            rc = Backend.withVal(from) { f in
                key = f
                return mdb_cursor_get(cursor, &key, &value, MDB_SET_RANGE)
            }
        } else {
            rc = mdb_cursor_get(cursor, &key, &value, MDB_FIRST)
        }
        while rc == 0 {
            let k = UnsafeRawBufferPointer(start: key.mv_data, count: key.mv_size)
            if let to, to.withUnsafeBytes({ compareBytes(k, $0) }) >= 0 { break }
            let (go, shadowed) = try emitOverlay(upTo: k)
            if !go { return }
            if !shadowed {
                let v = UnsafeRawBufferPointer(start: value.mv_data, count: value.mv_size)
                if try !body(k, v) { return }
            }
            rc = mdb_cursor_get(cursor, &key, &value, MDB_NEXT)
        }
        guard rc == 0 || rc == MDB_NOTFOUND else { throw error(rc, "mdb_cursor_get") }
        _ = try emitOverlay(upTo: nil)
    }

    /// Number of entries in `bucket` (committed data only).
    public func committedCount(_ bucket: Bucket) throws(BackendError) -> Int {
        var stat = MDB_stat()
        let rc = mdb_stat(try txn(), dbis[bucket.ordinal], &stat)
        guard rc == 0 else { throw error(rc, "mdb_stat") }
        return stat.ms_entries
    }

    /// `forEach` for scans that may read the whole file (rebuilding the
    /// index, hashes, snapshot copies): the mapped pages are given back
    /// every 64 MiB read and at the end (unless the scan read under 1 MiB
    /// since the last time, as a small bucket's does), so a scan's
    /// resident memory stays bounded.
    public func scan(
        _ bucket: Bucket, from: [UInt8]? = nil, to: [UInt8]? = nil,
        _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Bool
    ) throws {
        var scanned = 0
        defer { if scanned >= 1 << 20 { releaseMappedPages() } }
        try forEach(bucket, from: from, to: to) { key, value in
            scanned += key.count + value.count
            if scanned >= 64 << 20 {
                scanned = 0
                releaseMappedPages()
            }
            return try body(key, value)
        }
    }

    /// Unmaps the database file's pages from this process (they stay in
    /// the kernel's page cache; a later read maps them again, a minor
    /// fault). A scan of the whole file otherwise leaves every page it read
    /// counted in the process's resident memory for good. Safe while other
    /// threads read: the map is a read-only shared mapping of the file, so
    /// a page dropped under a reader is simply read again.
    public func releaseMappedPages() {
        ReadTx.releaseMappedPages(of: path)
    }

    /// `releaseMappedPages` for the database file at `path`.
    static func releaseMappedPages(of path: String) {
        // LMDB does not tell where it mapped the file (only with
        // MDB_FIXEDMAP), so find the file's mappings in /proc/self/maps.
        guard let resolved = realpath(path, nil) else { return }
        let file = String(cString: resolved)
        free(resolved)
        for (start, end) in ReadTx.mappings(of: file) {
            _ = madvise(UnsafeMutableRawPointer(bitPattern: start), end - start, MADV_DONTNEED)
        }
    }

    /// The address ranges at which this process maps `file` (an absolute path).
    static func mappings(of file: String) -> [(Int, Int)] {
        let fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        var ranges: [(Int, Int)] = []
        let suffix = " " + file
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasSuffix(suffix) {
            // "start-end perms offset dev inode path"
            let range = line.prefix { $0 != " " }.split(separator: "-")
            if range.count == 2, let start = Int(range[0], radix: 16), let end = Int(range[1], radix: 16), end > start {
                ranges.append((start, end))
            }
        }
        return ranges
    }

    func pageSize() throws(BackendError) -> Int {
        var stat = MDB_stat()
        let rc = mdb_env_stat(mdb_txn_env(try txn()), &stat)
        guard rc == 0 else { throw error(rc, "mdb_env_stat") }
        return Int(stat.ms_psize)
    }

    /// Pages of the file in use: all pages up to the last one, minus the
    /// pages on LMDB's free list (database 0). Read transactions only.
    func pagesInUse() throws(BackendError) -> Int {
        let txn = try txn()
        var info = MDB_envinfo()
        mdb_env_info(mdb_txn_env(txn), &info)
        let total = info.me_last_pgno + 1
        var cursor: OpaquePointer?
        var rc = mdb_cursor_open(txn, 0, &cursor)
        guard rc == 0, let cursor else { throw error(rc, "mdb_cursor_open(free)") }
        defer { mdb_cursor_close(cursor) }
        var key = MDB_val()
        var value = MDB_val()
        var free = 0
        rc = mdb_cursor_get(cursor, &key, &value, MDB_FIRST)
        while rc == 0 {
            if value.mv_size >= MemoryLayout<Int>.size, let data = value.mv_data {
                free += data.loadUnaligned(as: Int.self)
            }
            rc = mdb_cursor_get(cursor, &key, &value, MDB_NEXT)
        }
        return max(0, total - free)
    }

    static func merge(
        older: [([UInt8], PendingValue)], newer: [([UInt8], PendingValue)]
    ) -> [([UInt8], PendingValue)] {
        if older.isEmpty { return newer }
        if newer.isEmpty { return older }
        var result: [([UInt8], PendingValue)] = []
        result.reserveCapacity(older.count + newer.count)
        var i = 0, j = 0
        while i < older.count || j < newer.count {
            if j == newer.count { result.append(older[i]); i += 1; continue }
            if i == older.count { result.append(newer[j]); j += 1; continue }
            let order = compareBytes(older[i].0, newer[j].0)
            if order < 0 { result.append(older[i]); i += 1 }
            else if order > 0 { result.append(newer[j]); j += 1 }
            else { result.append(newer[j]); i += 1; j += 1 }
        }
        return result
    }
}
