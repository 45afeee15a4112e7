import CLMDB

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension Backend {
    /// Fills the backend in bulk (restoring a snapshot, converting etcd's
    /// bbolt file): `body` hands pairs to the `BulkLoad`, which writes them
    /// straight into LMDB write transactions, committed every
    /// `chunkBytes` or so and at the end. Unlike `put`, a pair is not kept
    /// for readers or replay (no per-pair allocation), and keys that come in
    /// ascending order within a bucket are appended (LMDB's `MDB_APPEND`:
    /// no search, pages filled to the brim); a key out of that order is
    /// still stored, by an ordinary put.
    ///
    /// Writer thread; the open batch is committed first. Inside `body` use
    /// only the loader (other writer methods would wait for the loader's own
    /// transaction). Readers see each chunk once it is committed. Commits
    /// flush as the backend's `syncMode` says: a backend opened with
    /// `.noSync` for the load and `sync()`ed after it writes everything
    /// once and flushes once. If `body` or a write fails, the chunk being
    /// written is discarded and the chunks before it stay committed (a
    /// caller filling a new file removes it).
    public func load(chunkBytes: Int = 32 << 20, _ body: (inout BulkLoad) throws -> Void) throws {
        try forceCommit()
        precondition(onlineDefrag == nil, "Backend.load of \(path) during an online defragmentation")
        var loader = BulkLoad(backend: self, chunkBytes: chunkBytes, pageSize: try pageSizeBytes())
        do {
            try body(&loader)
            try loader.commit()
        } catch {
            loader.abort()
            throw error
        }
    }

    /// The environment's page size.
    func pageSizeBytes() throws(BackendError) -> Int {
        try withSharedEnvironment { env throws(BackendError) in
            var stat = MDB_stat()
            let rc = mdb_env_stat(env, &stat)
            guard rc == 0 else { throw lmdbError(rc, "mdb_env_stat") }
            return Int(stat.ms_psize)
        }
    }

    /// Pages up to the high water mark of the last commit.
    func committedHighWaterPages() throws(BackendError) -> Int {
        try withSharedEnvironment { env throws(BackendError) in
            var info = MDB_envinfo()
            let rc = mdb_env_info(env, &info)
            guard rc == 0 else { throw lmdbError(rc, "mdb_env_info") }
            return info.me_last_pgno + 1
        }
    }
}

/// The writer of `Backend.load`.
///
/// The map cannot grow while a write transaction is open, so before each
/// chunk the loader makes room for it: the pages a chunk can add to the
/// file are bounded by `cost` summed over its pairs (a B+tree page at
/// least half full holds a pair's node — 8 bytes of header, key and value —
/// plus its 2-byte slot; a value too large for a node takes whole overflow
/// pages; branch pages add at most one key per leaf), so the map is grown
/// to hold the committed file plus a chunk's cost plus slack before the
/// chunk begins. A write that still runs out of map ends the load with
/// `BackendError.quotaExceeded`.
public struct BulkLoad {
    private let backend: Backend
    private let chunkBytes: Int
    private let pageSize: Int
    private var txn: OpaquePointer?
    /// `cost` of the pairs in the open transaction.
    private var chunkCost = 0
    /// Pairs written by this load.
    public private(set) var count = 0

    init(backend: Backend, chunkBytes: Int, pageSize: Int) {
        self.backend = backend
        self.chunkBytes = max(chunkBytes, 1)
        self.pageSize = pageSize
    }

    /// Stores `value` under `key` in `bucket` (keys ascending within a
    /// bucket are the fast path). The buffers are read during the call only.
    public mutating func put(_ bucket: Bucket, key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) throws(BackendError) {
        let cost = Self.cost(keyBytes: key.count, valueBytes: value.count, pageSize: pageSize)
        if txn != nil, chunkCost + cost > chunkBytes { try commit() }
        let txn = try openTransaction(room: max(chunkBytes, cost))
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var v = MDB_val(mv_size: value.count, mv_data: UnsafeMutableRawPointer(mutating: value.baseAddress))
        let dbi = backend.dbis[bucket.ordinal]
        // MDB_APPEND refuses (MDB_KEYEXIST, nothing changed) a key not
        // above the bucket's last one; store that one the ordinary way.
        var rc = mdb_put(txn, dbi, &k, &v, UInt32(MDB_APPEND))
        if rc == MDB_KEYEXIST { rc = mdb_put(txn, dbi, &k, &v, 0) }
        guard rc == 0 else {
            abort()
            throw backend.lmdbError(rc, "mdb_put")
        }
        chunkCost += cost
        count += 1
    }

    /// Commits the open transaction (the load goes on in a new one).
    mutating func commit() throws(BackendError) {
        guard let txn else { return }
        self.txn = nil
        let rc = mdb_txn_commit(txn)
        let written = chunkCost
        chunkCost = 0
        guard rc == 0 else { throw backend.lmdbError(rc, "mdb_txn_commit") }
        backend.noteCommitted(bytes: written)
    }

    mutating func abort() {
        if let txn { mdb_txn_abort(txn) }
        txn = nil
        chunkCost = 0
    }

    private mutating func openTransaction(room: Int) throws(BackendError) -> OpaquePointer {
        if let txn { return txn }
        let needed = try backend.committedHighWaterPages() * pageSize + room + Self.slackBytes
        if needed > backend.mapSize {
            guard backend.mapSize < backend.config.quotaBytes else {
                throw .quotaExceeded(quotaBytes: backend.config.quotaBytes)
            }
            try backend.growMap(to: min(backend.config.quotaBytes, max(needed, backend.mapSize * 2)))
        }
        var txn: OpaquePointer?
        let rc = try backend.withSharedEnvironment { env in mdb_txn_begin(env, nil, 0, &txn) }
        guard rc == 0, let txn else { throw backend.lmdbError(rc, "mdb_txn_begin") }
        self.txn = txn
        return txn
    }

    /// For each commit: the meta page, the free-list's pages and the spines
    /// of the trees rewritten.
    static let slackBytes = 4 << 20

    /// An upper bound of the file bytes one pair adds (see the type's note):
    /// twice its node and slot in a leaf, one branch entry per pair at
    /// worst (a key's bytes again), and a page for rounding when the value
    /// goes to overflow pages.
    static func cost(keyBytes: Int, valueBytes: Int, pageSize: Int) -> Int {
        let node = 8 + keyBytes + valueBytes + 2
        let overflow = node > pageSize / 2 ? pageSize + 16 : 0
        return 2 * (node + 1) + keyBytes + 16 + overflow
    }
}
