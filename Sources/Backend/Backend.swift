import CLMDB
import Locks

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Settings of a backend. Units are in the names.
public struct BackendConfig: Sendable {
    /// How the backend flushes a committed batch. The WAL is the source of
    /// truth and replays everything after the stored consistent index, so
    /// the backend needs integrity after a crash, not durability per commit.
    public enum SyncMode: Sendable {
        /// One `fdatasync` per commit, no separate meta-page flush: an OS
        /// crash may undo the last committed batch but never corrupts.
        case noMetaSync
        /// No flush on commit; call `sync()` before releasing WAL segments.
        /// An OS crash may lose recent batches (process crashes lose nothing).
        case noSync
        /// Full LMDB durability: two flushes per commit.
        case full
    }

    /// Commit the batch when it is this old (checked by `commitIfDue`).
    public var batchIntervalMilliseconds: Int = 100
    /// Commit the batch when it holds this many writes.
    public var batchLimitOps: Int = 10_000
    /// The LMDB map size to start with; it doubles as needed.
    public var initialMapSizeBytes: Int = 64 << 20
    /// Hard upper bound of the map size. Writes beyond it fail with
    /// `BackendError.quotaExceeded`. etcd's space quota (a policy) belongs to
    /// the server and should be set well below this.
    public var quotaBytes: Int = 8 << 30
    /// Size of LMDB's reader table (concurrent read transactions).
    public var maxReaders: Int = 512
    public var syncMode: SyncMode = .noMetaSync
    /// An online defragmentation keeps the batches committed during its
    /// copy until it has replayed them into the copy; past this many key
    /// and value bytes waiting it gives up (the data is untouched).
    public var defragJournalLimitBytes: Int = 512 << 20

    public init(
        batchIntervalMilliseconds: Int = 100,
        batchLimitOps: Int = 10_000,
        initialMapSizeBytes: Int = 64 << 20,
        quotaBytes: Int = 8 << 30,
        maxReaders: Int = 512,
        syncMode: SyncMode = .noMetaSync
    ) {
        self.batchIntervalMilliseconds = batchIntervalMilliseconds
        self.batchLimitOps = batchLimitOps
        self.initialMapSizeBytes = initialMapSizeBytes
        self.quotaBytes = quotaBytes
        self.maxReaders = maxReaders
        self.syncMode = syncMode
    }
}

/// An LMDB handle that may cross threads (LMDB is opened with `MDB_NOTLS`;
/// every use is serialised by the owner).
struct Handle: @unchecked Sendable {
    let pointer: OpaquePointer
}

/// The persistent ordered store: one LMDB environment (a single file, as the
/// server's `member/snap/db`) with one named database per `Bucket`.
///
/// Threading rules:
/// - **Writer methods** (`put`, `delete`, `withWriteView`, `setConsistentIndex`,
///   `commitIfDue`, `forceCommit`, `load`, `defragment`, `replace`, `close`) must all
///   be called from one thread at a time, and a batch must be committed on
///   the thread that started it: LMDB's writer lock is an OS mutex owned by
///   that thread.
///   The server's apply loop is that thread. Violations trap (`precondition`).
/// - **Readers** (`read`, `hash`, `snapshot`, the size properties) may be used
///   from any thread, concurrently with the writer. A read sees the committed
///   data plus the writer's not-yet-committed batch (a read-your-writes
///   buffer), so an index kept in memory by the writer can always be
///   resolved. Do not nest `read` calls, and do not call writer methods from
///   inside a `read` closure.
///
/// Writes are batched: they accumulate in one LMDB write transaction that
/// `commitIfDue()` commits once it holds `batchLimitOps` writes or is
/// `batchIntervalMilliseconds` old. Callers decide the commit points, so a
/// batch never ends in the middle of a request: save the consistent index
/// with `setConsistentIndex` and then call `commitIfDue()`. When idle, call
/// `commitIfDue()` from the writer thread at least every interval.
public final class Backend: @unchecked Sendable {
    public let path: String
    public let config: BackendConfig

    // Environment state. Replaced or resized only under `envLock`'s write
    // lock; readers hold its read lock for the duration of a transaction.
    private let envLock = ReadWriteLock()
    private var env: OpaquePointer?
    /// The buckets' LMDB handles, in `Bucket` order (internal for `BulkLoad`).
    private(set) var dbis: [MDB_dbi] = []
    private var mapSizeBytes: Int = 0
    private let readerPool = Mutex<[Handle]>([])
    private static let readerPoolLimit = 16

    // The writes of the open batch, published for readers. `current` takes
    // new writes; `committing` holds the batch being committed until its
    // commit is visible to new LMDB read transactions.
    private struct Published {
        var current: PendingBatch
        var committing: PendingBatch?
    }
    private let published: Mutex<Published>

    // Writer state: touched only by the writer thread.
    /// The online defragmentation in progress, if any.
    var onlineDefrag: OnlineDefrag?
    private var writeTxn: OpaquePointer?
    private var writeTxnThread: pthread_t?
    private var pending: PendingBatch
    private var needsReplay = false
    private var opsInBatch = 0
    private var batchStartNanos: UInt64 = 0
    /// Bytes committed since the mapped pages were last given back.
    private var writtenSinceRelease = 0
    /// The file's size after the last commit (or open), for cheap checks
    /// on any thread (the server's space quota).
    let committedSize = Atomic<Int>(0)
    /// Key and value bytes put into the open batch (not yet in the file).
    private let pendingBytes = Atomic<Int>(0)
    /// The raft position set for the open batch and not yet put into it
    /// (see `setConsistentIndex`); read by `consistentIndex()` on any thread.
    private let unwrittenIndex = Mutex<(index: UInt64, term: UInt64)?>(nil)

    /// Opens (creating if needed) the environment at `path`, a file.
    public init(path: String, config: BackendConfig = BackendConfig()) throws(BackendError) {
        self.path = path
        self.config = config
        let batch = PendingBatch()
        self.pending = batch
        self.published = Mutex(Published(current: batch, committing: nil))
        // What a defragmentation cut short by a crash leaves behind.
        unlink(path + ".defrag")
        unlink(path + ".retired")
        try openEnvironment()
        committedSize.store(sizeBytes, ordering: .relaxed)
    }

    deinit {
        if env != nil {
            if let txn = writeTxn {
                guard let owner = writeTxnThread, pthread_equal(owner, pthread_self()) != 0 else {
                    // LMDB's writer lock is a robust mutex owned by the thread
                    // that began the batch: unlocking it here fails, and
                    // unmapping it would leave a dangling entry on the owner's
                    // robust-mutex list (that thread would crash on its next
                    // LMDB lock). Leak the environment instead; close the
                    // backend on its writer thread to avoid this.
                    let message = "Backend \(path): released with an open batch on another thread; leaking the environment\n"
                    _ = message.withCString { write(2, $0, strlen($0)) }
                    return
                }
                mdb_txn_abort(txn)
            }
            drainReaderPool()
            mdb_env_close(env)
        }
    }

    // MARK: - Opening and closing

    private func openEnvironment() throws(BackendError) {
        var handle: OpaquePointer?
        var rc = mdb_env_create(&handle)
        guard rc == 0, let handle else {
            throw backendError(rc, operation: "mdb_env_create", path: path, maxReaders: config.maxReaders)
        }
        var ok = false
        defer { if !ok { mdb_env_close(handle) } }
        let existing = Backend.fileSize(path) ?? 0
        let wanted = min(max(config.initialMapSizeBytes, existing), max(config.quotaBytes, existing))
        rc = mdb_env_set_maxdbs(handle, MDB_dbi(Bucket.allCases.count + 4))
        if rc == 0 { rc = mdb_env_set_maxreaders(handle, UInt32(config.maxReaders)) }
        if rc == 0 { rc = mdb_env_set_mapsize(handle, wanted) }
        guard rc == 0 else { throw lmdbError(rc, "mdb_env_set_mapsize") }
        var flags = UInt32(MDB_NOSUBDIR | MDB_NOTLS | MDB_NORDAHEAD)
        switch config.syncMode {
        case .noMetaSync: flags |= UInt32(MDB_NOMETASYNC)
        case .noSync: flags |= UInt32(MDB_NOSYNC)
        case .full: break
        }
        rc = mdb_env_open(handle, path, flags, 0o600)
        guard rc == 0 else { throw lmdbError(rc, "mdb_env_open") }

        // Create every bucket up front so all members hash the same set.
        let opened = try Backend.openBuckets(in: handle) { rc, operation in lmdbError(rc, operation) }
        var info = MDB_envinfo()
        mdb_env_info(handle, &info)
        env = handle
        dbis = opened
        mapSizeBytes = info.me_mapsize
        ok = true
    }

    /// Opens (creating them if needed) every bucket of `env` in one write
    /// transaction, in `Bucket.allCases` order; `failure` names an LMDB
    /// error by its operation.
    static func openBuckets(in env: OpaquePointer, failure: (Int32, String) -> BackendError) throws(BackendError) -> [MDB_dbi] {
        var txn: OpaquePointer?
        var rc = mdb_txn_begin(env, nil, 0, &txn)
        guard rc == 0, let txn else { throw failure(rc, "mdb_txn_begin") }
        var opened: [MDB_dbi] = []
        for bucket in Bucket.allCases {
            var dbi: MDB_dbi = 0
            rc = mdb_dbi_open(txn, bucket.rawValue, UInt32(MDB_CREATE), &dbi)
            guard rc == 0 else {
                mdb_txn_abort(txn)
                throw failure(rc, "mdb_dbi_open \(bucket.rawValue)")
            }
            opened.append(dbi)
        }
        rc = mdb_txn_commit(txn)
        guard rc == 0 else { throw failure(rc, "mdb_txn_commit") }
        return opened
    }

    /// Commits the open batch and closes the environment. Writer thread.
    /// Later calls fail with `BackendError.closed`.
    public func close() throws(BackendError) {
        guard env != nil else { return }
        cancelOnlineDefragment()
        var commitError: BackendError?
        do { try forceCommit() } catch { commitError = error }
        if let txn = writeTxn {
            assertWriterThread("close")
            mdb_txn_abort(txn)
            writeTxn = nil
        }
        envLock.withWriteLock {
            drainReaderPool()
            mdb_env_close(env)
            env = nil
        }
        if let commitError { throw commitError }
    }

    /// Closes without committing: the open batch is discarded, as a crash
    /// would lose it. For tests and for giving up after a failed write.
    /// Writer thread.
    public func abandon() {
        guard env != nil else { return }
        cancelOnlineDefragment()
        if let txn = writeTxn {
            assertWriterThread("abandon")
            mdb_txn_abort(txn)
            writeTxn = nil
            writeTxnThread = nil
        }
        needsReplay = false
        opsInBatch = 0
        pendingBytes.store(0, ordering: .relaxed)
        unwrittenIndex.withLock { $0 = nil }
        let empty = PendingBatch()
        pending = empty
        published.withLock { $0 = Published(current: empty, committing: nil) }
        envLock.withWriteLock {
            drainReaderPool()
            mdb_env_close(env)
            env = nil
        }
    }

    public var isClosed: Bool { env == nil }

    // MARK: - Writer: batch

    /// Stores `value` under `key`. Writer thread.
    public func put(_ bucket: Bucket, key: [UInt8], value: [UInt8]) throws(BackendError) {
        try mutate { txn in
            Backend.withVal(key) { k in
                Backend.withVal(value) { v in
                    var k = k, v = v
                    return mdb_put(txn, dbis[bucket.ordinal], &k, &v, 0)
                }
            }
        }
        pending.record(bucket, key, .put(value))
        pendingBytes.add(key.count + value.count, ordering: .relaxed)
        opsInBatch += 1
    }

    /// Removes `key`; removing a missing key is not an error. Writer thread.
    public func delete(_ bucket: Bucket, key: [UInt8]) throws(BackendError) {
        try mutate { txn in
            Backend.withVal(key) { k in
                var k = k
                let rc = mdb_del(txn, dbis[bucket.ordinal], &k, nil)
                return rc == MDB_NOTFOUND ? 0 : rc
            }
        }
        pending.record(bucket, key, .deleted)
        opsInBatch += 1
    }

    /// Records the raft position of the writes in the open batch. They are
    /// committed together, so after a crash the stored index describes
    /// exactly the data on disk. Writer thread.
    ///
    /// The raft loop calls this for every entry it applies, so the position
    /// is held here and written into the batch once, just before the batch
    /// commits: two LMDB puts per commit instead of per entry.
    public func setConsistentIndex(_ index: UInt64, term: UInt64) throws(BackendError) {
        // The batch must commit even when the entry changed nothing else.
        _ = try openWriteTxn()
        unwrittenIndex.withLock { $0 = (index, term) }
    }

    /// Puts the position set since the last commit into the batch.
    private func writeConsistentIndex() throws(BackendError) {
        guard let (index, term) = unwrittenIndex.withLock({ $0 }) else { return }
        try put(.meta, key: MetaKey.consistentIndex, value: BigEndian.bytes(index))
        try put(.meta, key: MetaKey.term, value: BigEndian.bytes(term))
        unwrittenIndex.withLock { $0 = nil }
    }

    /// Runs `body` with a view of the writer's transaction (committed data
    /// plus the open batch). Writer thread.
    public func withWriteView<R>(_ body: (ReadTx) throws -> R) throws -> R {
        _ = try openWriteTxn()
        return try body(ReadTx(writer: self, dbis: dbis, path: path, maxReaders: config.maxReaders))
    }

    func openWriteTxnForView() throws(BackendError) -> OpaquePointer {
        try openWriteTxn()
    }

    /// Number of writes in the open batch (a raft position still to be
    /// written counts as one).
    public var pendingWriteCount: Int { opsInBatch + (unwrittenIndex.withLock { $0 } == nil ? 0 : 1) }

    /// Commits the batch if it is full or old enough; returns whether it
    /// committed. Writer thread.
    @discardableResult
    public func commitIfDue() throws(BackendError) -> Bool {
        guard writeTxn != nil || needsReplay else { return false }
        let ageNanos = Backend.monotonicNanos() &- batchStartNanos
        guard opsInBatch >= config.batchLimitOps
            || ageNanos >= UInt64(config.batchIntervalMilliseconds) * 1_000_000
        else { return false }
        try forceCommit()
        return true
    }

    /// Commits the open batch now. Writer thread.
    public func forceCommit() throws(BackendError) {
        if writeTxn != nil || needsReplay { try writeConsistentIndex() }
        while true {
            guard writeTxn != nil || needsReplay else { return }
            let txn = try openWriteTxn()
            let batch = pending
            published.withLock { state in
                state.committing = batch
                state.current = PendingBatch(expectedKeys: min(config.batchLimitOps, 1 << 14))
                pending = state.current
            }
            let rc = mdb_txn_commit(txn)
            writeTxn = nil
            writeTxnThread = nil
            if rc == 0 {
                published.withLock { $0.committing = nil }
                let batchBytes = pendingBytes.load(ordering: .relaxed) + opsInBatch * 16
                noteCommitted(bytes: batchBytes)
                onlineDefrag?.journal(batch, bytes: batchBytes)
                opsInBatch = 0
                needsReplay = false
                pendingBytes.store(0, ordering: .relaxed)
                return
            }
            // The commit failed and freed the transaction: put the batch back
            // and replay it into a new transaction.
            published.withLock { state in
                state.current = batch
                state.committing = nil
            }
            pending = batch
            needsReplay = true
            if rc == MDB_MAP_FULL {
                try growMap()
                continue
            }
            throw lmdbError(rc, "mdb_txn_commit")
        }
    }

    /// After a commit of about `bytes`: the committed size, and now and
    /// then the mapped pages given back (committing reads the pages it
    /// rewrites through the map; a long run of writes would otherwise leave
    /// every page it touched resident). Writer thread.
    func noteCommitted(bytes: Int) {
        writtenSinceRelease += bytes
        if writtenSinceRelease >= 16 << 20 {
            writtenSinceRelease = 0
            envLock.withReadLock { ReadTx.releaseMappedPages(of: path) }
        }
        committedSize.store(sizeBytes, ordering: .relaxed)
    }

    /// Flushes committed batches to disk (for `.noSync`, or before the
    /// caller releases WAL segments). Commits the open batch first.
    public func sync() throws(BackendError) {
        try forceCommit()
        let rc = envLock.withReadLock { mdb_env_sync(env, 1) }
        guard rc == 0 else { throw lmdbError(rc, "mdb_env_sync") }
    }

    // MARK: - Writer: transaction management

    private func mutate(_ op: (OpaquePointer) -> Int32) throws(BackendError) {
        while true {
            let txn = try openWriteTxn()
            let rc = op(txn)
            if rc == 0 { return }
            // LMDB marks the transaction unusable after a failed write.
            abortWriteTxn()
            if rc == MDB_MAP_FULL {
                try growMap()
                continue
            }
            throw lmdbError(rc, "write")
        }
    }

    /// The open write transaction, beginning one (and replaying the batch
    /// after a failure) if needed.
    private func openWriteTxn() throws(BackendError) -> OpaquePointer {
        if let txn = writeTxn {
            precondition(
                pthread_equal(writeTxnThread!, pthread_self()) != 0,
                "Backend writer methods must run on the thread that began the batch"
            )
            return txn
        }
        guard let env else { throw .closed }
        while true {
            var txn: OpaquePointer?
            let rc = mdb_txn_begin(env, nil, 0, &txn)
            guard rc == 0, let txn else { throw lmdbError(rc, "mdb_txn_begin") }
            writeTxn = txn
            writeTxnThread = pthread_self()
            if !needsReplay {
                batchStartNanos = Backend.monotonicNanos()
                return txn
            }
            let replayCode = replay(pending, into: txn)
            if replayCode == 0 {
                needsReplay = false
                return txn
            }
            abortWriteTxn()
            if replayCode == MDB_MAP_FULL {
                try growMap()
                continue
            }
            throw lmdbError(replayCode, "replay batch")
        }
    }

    private func replay(_ batch: PendingBatch, into txn: OpaquePointer) -> Int32 {
        Backend.replay(batch, into: txn, dbis: dbis)
    }

    /// Writes `batch` into `txn` (of an environment whose buckets are
    /// `dbis`, in `Bucket` order); returns the first LMDB error or 0.
    static func replay(_ batch: PendingBatch, into txn: OpaquePointer, dbis: [MDB_dbi]) -> Int32 {
        batch.forEachEntry { bucket, key, value in
            Backend.withVal(key) { k in
                var k = k
                switch value {
                case .put(let bytes):
                    return Backend.withVal(bytes) { v in
                        var v = v
                        return mdb_put(txn, dbis[bucket], &k, &v, 0)
                    }
                case .deleted:
                    let rc = mdb_del(txn, dbis[bucket], &k, nil)
                    return rc == MDB_NOTFOUND ? 0 : rc
                }
            }
        }
    }

    /// LMDB's writer lock belongs to the thread that began the batch; ending
    /// the transaction anywhere else corrupts that thread's lock list.
    private func assertWriterThread(_ operation: String) {
        precondition(writeTxnThread.map { pthread_equal($0, pthread_self()) != 0 } ?? true,
                     "Backend \(operation) of \(path) off the thread that began the batch")
    }

    private func abortWriteTxn() {
        if let txn = writeTxn {
            assertWriterThread("abort")
            mdb_txn_abort(txn)
        }
        writeTxn = nil
        writeTxnThread = nil
        needsReplay = true
    }

    /// Doubles the map (up to the quota). Called with no write transaction.
    private func growMap() throws(BackendError) {
        guard mapSizeBytes < config.quotaBytes else {
            throw .quotaExceeded(quotaBytes: config.quotaBytes)
        }
        try growMap(to: min(config.quotaBytes, max(mapSizeBytes * 2, mapSizeBytes + (16 << 20))))
    }

    /// Sets the map to `target` bytes. Called with no write transaction.
    func growMap(to target: Int) throws(BackendError) {
        let rc: Int32 = envLock.withWriteLock {
            drainReaderPool()
            let rc = mdb_env_set_mapsize(env, target)
            var info = MDB_envinfo()
            mdb_env_info(env, &info)
            mapSizeBytes = info.me_mapsize
            return rc
        }
        guard rc == 0 else { throw lmdbError(rc, "mdb_env_set_mapsize") }
    }

    /// The current LMDB map size (address space reserved for the file).
    public var mapSize: Int { mapSizeBytes }

    // MARK: - Readers

    /// Runs `body` in a read transaction: a consistent snapshot of the
    /// committed data plus the writer's open batch. Any thread; do not nest.
    public func read<R>(_ body: (ReadTx) throws -> R) throws -> R {
        envLock.readLock()
        defer { envLock.unlock() }
        guard let env else { throw BackendError.closed }
        let (txn, batches) = try beginRead(env)
        defer { endRead(txn) }
        return try body(ReadTx(txn: txn, dbis: dbis, pending: batches, path: path, maxReaders: config.maxReaders))
    }

    private func beginRead(_ env: OpaquePointer) throws(BackendError) -> (OpaquePointer, [PendingBatch]) {
        let pooled = readerPool.withLock { $0.popLast() }
        // Take the snapshot and the batches under one lock, so every write is
        // in exactly one of them or in both (never in neither).
        let result: Result<(Handle, [PendingBatch]), BackendError> = published.withLock { state in
            var txn: OpaquePointer?
            var rc: Int32
            if let pooled {
                txn = pooled.pointer
                rc = mdb_txn_renew(pooled.pointer)
                if rc != 0 { mdb_txn_abort(pooled.pointer) }
            } else {
                rc = mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &txn)
            }
            guard rc == 0, let txn else {
                return .failure(lmdbError(rc, "mdb_txn_begin(read)"))
            }
            var batches: [PendingBatch] = []
            if !state.current.isEmpty { batches.append(state.current) }
            if let committing = state.committing { batches.append(committing) }
            return .success((Handle(pointer: txn), batches))
        }
        let (handle, batches) = try result.get()
        return (handle.pointer, batches)
    }

    private func endRead(_ txn: OpaquePointer) {
        mdb_txn_reset(txn)
        let kept = readerPool.withLock { pool in
            guard pool.count < Backend.readerPoolLimit else { return false }
            pool.append(Handle(pointer: txn))
            return true
        }
        if !kept { mdb_txn_abort(txn) }
    }

    /// Aborts the pooled (reset) read transactions. Caller holds the write
    /// side of `envLock` or owns the environment exclusively.
    private func drainReaderPool() {
        let handles = readerPool.withLock { pool in
            let all = pool
            pool.removeAll()
            return all
        }
        for handle in handles { mdb_txn_abort(handle.pointer) }
    }

    /// The stored consistent index and term (0 when never set), including
    /// the open batch. Any thread.
    public func consistentIndex() throws -> (index: UInt64, term: UInt64) {
        if let unwritten = unwrittenIndex.withLock({ $0 }) { return unwritten }
        return try read { tx in
            let index = try tx.get(.meta, MetaKey.consistentIndex).flatMap(BigEndian.uint64) ?? 0
            let term = try tx.get(.meta, MetaKey.term).flatMap(BigEndian.uint64) ?? 0
            return (index, term)
        }
    }

    // MARK: - Sizes

    /// Size of the database file on disk.
    public var sizeBytes: Int { Backend.fileSize(path) ?? 0 }

    /// The file's size at the last commit plus the bytes put since (which
    /// the next commit writes): what the server's space quota is checked
    /// against, so a write right after a large one sees it. Any thread.
    public var estimatedSizeBytes: Int {
        committedSize.load(ordering: .relaxed) + pendingBytes.load(ordering: .relaxed)
    }

    /// Bytes of the file holding live data (file pages minus free pages).
    public func sizeInUseBytes() throws -> Int {
        try read { tx in try tx.pagesInUse() * tx.pageSize() }
    }

    // MARK: - Helpers

    func lmdbError(_ rc: Int32, _ operation: String) -> BackendError {
        if rc == MDB_MAP_FULL { return .quotaExceeded(quotaBytes: config.quotaBytes) }
        return backendError(rc, operation: operation, path: path, maxReaders: config.maxReaders)
    }

    static func withVal<R>(_ bytes: [UInt8], _ body: (MDB_val) -> R) -> R {
        bytes.withUnsafeBytes { raw in
            body(MDB_val(mv_size: raw.count, mv_data: UnsafeMutableRawPointer(mutating: raw.baseAddress)))
        }
    }

    static func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    static func fileSize(_ path: String) -> Int? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Int(st.st_size)
    }

    /// Used by maintenance operations that replace the file.
    func withExclusiveEnvironment<R>(_ body: () throws(BackendError) -> R) throws(BackendError) -> R {
        try envLock.withWriteLock { () throws(BackendError) -> R in
            drainReaderPool()
            return try body()
        }
    }

    func withSharedEnvironment<R>(_ body: (OpaquePointer) throws(BackendError) -> R) throws(BackendError) -> R {
        envLock.readLock()
        defer { envLock.unlock() }
        guard let env else { throw .closed }
        return try body(env)
    }

    func currentEnv() throws(BackendError) -> OpaquePointer {
        guard let env else { throw .closed }
        return env
    }

    func closeEnvironmentForReplacement() {
        mdb_env_close(env)
        env = nil
    }

    /// Renames `copy` (a rewrite of the backend's file, flushed) over the
    /// file and reopens the environment, readers shut out meanwhile. When
    /// the rename fails the copy is removed and the old file reopened.
    /// Writer thread, no batch open.
    func installCopy(at copy: String) throws(BackendError) {
        try withExclusiveEnvironment { () throws(BackendError) in
            closeEnvironmentForReplacement()
            guard rename(copy, path) == 0 else {
                let code = errno
                unlink(copy)
                try reopenEnvironment()
                throw .io(operation: "rename", path: path, errno: code)
            }
            try Backend.fsyncDirectory(of: path)
            try reopenEnvironment()
        }
    }

    func reopenEnvironment() throws(BackendError) {
        try openEnvironment()
        committedSize.store(sizeBytes, ordering: .relaxed)
        pendingBytes.store(0, ordering: .relaxed)
    }

    var hasOpenWriteTxn: Bool { writeTxn != nil || needsReplay }

    /// Aborts the open write transaction, keeping the batch for replay.
    /// Writer thread.
    func suspendWriteTxn() {
        guard writeTxn != nil else { return }
        precondition(
            pthread_equal(writeTxnThread!, pthread_self()) != 0,
            "Backend writer methods must run on the thread that began the batch"
        )
        abortWriteTxn()
    }

    /// Forgets the batch (suspended first): the file under it was replaced.
    /// Caller holds the write side of `envLock`.
    func discardBatch() {
        unwrittenIndex.withLock { $0 = nil }
        needsReplay = false
        opsInBatch = 0
        pendingBytes.store(0, ordering: .relaxed)
        let empty = PendingBatch()
        pending = empty
        published.withLock { $0 = Published(current: empty, committing: nil) }
    }
}
