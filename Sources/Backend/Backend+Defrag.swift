import CLMDB
import Dispatch
import Locks

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Online defragmentation: the file is rewritten without free pages while
/// reads and writes go on.
///
/// 1. Start (writer thread): commit the batch, grow the map to its limit
///    (so no map resize, which needs every reader out, can come during the
///    copy), and begin journaling: every batch committed from now on is
///    kept, in order.
/// 2. Copy (a background thread): LMDB's compacting copy from one read
///    transaction into `<path>.defrag`. Readers and the writer carry on;
///    the file only grows meanwhile, since the copy pins the old pages.
/// 3. Catch up (the same thread): replay the journaled batches into the
///    copy, round after round, until (almost) nothing is left.
/// 4. Swap (writer thread, `finishOnlineDefragmentIfReady`): commit, replay
///    the last batches, flush the copy, then close the old environment,
///    rename the copy over it and reopen — the only moment readers wait.
///
/// Replaying a batch is idempotent (it holds the last value, or the
/// deletion, of each key it wrote), so a batch committed between the start
/// and the copy's read transaction — present in the copy and in the
/// journal — is harmless: replaying batches in commit order onto any state
/// between the start and now gives now.
///
/// The journal is bounded (`BackendConfig.defragJournalLimitBytes`); past it
/// the defragmentation gives up and nothing changes.
final class OnlineDefrag: Sendable {
    enum Phase: Sendable {
        case copying
        case catchingUp
        /// The copy is (almost) caught up; the writer finishes.
        case ready
        case failed(BackendError)
    }

    struct State {
        var phase: Phase = .copying
        var journal: [PendingBatch] = []
        var journalBytes = 0
        var cancelRequested = false
        /// The background thread has returned.
        var threadDone = false
        /// The copy's environment, open once the copy is written.
        var target: TargetEnvironment?
    }

    /// The copy, opened as an LMDB environment of its own (no lock file:
    /// one thread at a time uses it, the background thread and then the
    /// writer).
    struct TargetEnvironment: @unchecked Sendable {
        let env: OpaquePointer
        let dbis: [MDB_dbi]
    }

    let temporaryPath: String
    let limitBytes: Int
    /// Where the job's background work runs (the copy and catch-up, and
    /// removing the old file after the swap).
    let runInBackground: @Sendable (@escaping @Sendable () -> Void) -> Void
    let state = Mutex(State())
    /// Signalled when the background thread is done.
    private let done = DispatchSemaphore(value: 0)
    /// Catch-up rounds before handing the rest to the writer regardless.
    static let maxRounds = 1_000
    /// The writer takes over when this many batches or fewer are waiting.
    static let handOverBatches = 2

    init(temporaryPath: String, limitBytes: Int,
         runInBackground: @escaping @Sendable (@escaping @Sendable () -> Void) -> Void) {
        self.temporaryPath = temporaryPath
        self.limitBytes = limitBytes
        self.runInBackground = runInBackground
    }

    var phase: Phase { state.withLock { $0.phase } }
    var isThreadDone: Bool { state.withLock { $0.threadDone } }

    /// A batch the writer committed. Writer thread.
    func journal(_ batch: PendingBatch, bytes: Int) {
        state.withLock { state in
            if case .failed = state.phase { return }
            state.journal.append(batch)
            state.journalBytes += bytes
            if state.journalBytes > limitBytes {
                state.phase = .failed(.defragmentationAborted(
                    reason: "more than \(limitBytes) bytes written during the copy"))
                state.journal.removeAll()
            }
        }
    }

    /// Runs on the background thread.
    func run(copyingFrom backend: Backend, mapSizeBytes: Int) {
        defer {
            state.withLock { $0.threadDone = true }
            done.signal()
        }
        unlink(temporaryPath)
        let rc: Int32
        do {
            rc = try backend.withSharedEnvironment { env throws(BackendError) in
                try Backend.compactingCopy(env, to: temporaryPath)
            }
        } catch {
            fail(error)
            return
        }
        guard rc == 0 else {
            fail(backend.lmdbError(rc, "mdb_env_copyfd2 \(temporaryPath)"))
            return
        }
        let target: TargetEnvironment
        do {
            // The copy's pages go to disk here, not in the writer's swap.
            try Backend.fsyncFile(temporaryPath)
            target = try Self.open(temporaryPath, mapSizeBytes: mapSizeBytes, maxReaders: backend.config.maxReaders)
        } catch {
            fail(error)
            return
        }
        let keep = state.withLock { state -> Bool in
            if state.cancelRequested { return false }
            if case .failed = state.phase { return false }
            state.target = target
            state.phase = .catchingUp
            return true
        }
        guard keep else {
            mdb_env_close(target.env)
            return
        }
        for round in 1...Self.maxRounds {
            let batches = state.withLock { state -> [PendingBatch]? in
                guard !state.cancelRequested, case .catchingUp = state.phase else { return nil }
                if state.journal.count <= Self.handOverBatches || round == Self.maxRounds {
                    state.phase = .ready
                    return nil
                }
                let taken = state.journal
                state.journal.removeAll()
                state.journalBytes = 0
                return taken
            }
            guard let batches else { return }
            do throws(BackendError) {
                try Self.replay(batches, into: target, path: temporaryPath, maxReaders: backend.config.maxReaders)
                // Each round's pages to disk here too (the swap flushes only the last).
                let rc = mdb_env_sync(target.env, 1)
                guard rc == 0 else { throw backendError(rc, operation: "mdb_env_sync", path: temporaryPath, maxReaders: backend.config.maxReaders) }
            } catch {
                fail(error)
                return
            }
        }
    }

    /// Asks the background thread to stop and waits for it. Any thread.
    func cancelAndWait() {
        state.withLock { $0.cancelRequested = true }
        waitForThread()
    }

    func waitForThread() {
        done.wait()
        done.signal()
    }

    /// Closes and removes the copy. After the background thread is done.
    func discard() {
        if let target = state.withLock({ $0.target }) { mdb_env_close(target.env) }
        state.withLock { $0.target = nil }
        unlink(temporaryPath)
    }

    private func fail(_ error: BackendError) {
        state.withLock { state in
            if case .failed = state.phase { return }
            state.phase = .failed(error)
        }
    }

    static func open(_ path: String, mapSizeBytes: Int, maxReaders: Int) throws(BackendError) -> TargetEnvironment {
        func failure(_ rc: Int32, _ operation: String) -> BackendError {
            if rc == MDB_MAP_FULL { return .quotaExceeded(quotaBytes: mapSizeBytes) }
            return backendError(rc, operation: operation, path: path, maxReaders: maxReaders)
        }
        var handle: OpaquePointer?
        var rc = mdb_env_create(&handle)
        guard rc == 0, let env = handle else { throw failure(rc, "mdb_env_create") }
        var opened = false
        defer { if !opened { mdb_env_close(env) } }
        rc = mdb_env_set_maxdbs(env, MDB_dbi(Bucket.allCases.count + 4))
        if rc == 0 { rc = mdb_env_set_mapsize(env, max(mapSizeBytes, Backend.fileSize(path) ?? 0)) }
        if rc == 0 { rc = mdb_env_open(env, path, UInt32(MDB_NOSUBDIR | MDB_NOTLS | MDB_NOLOCK | MDB_NOSYNC), 0o600) }
        guard rc == 0 else { throw failure(rc, "mdb_env_open") }
        let dbis = try Backend.openBuckets(in: env, failure: failure)
        opened = true
        return TargetEnvironment(env: env, dbis: dbis)
    }

    /// Replays `batches`, in order, in one transaction of `target`.
    static func replay(_ batches: [PendingBatch], into target: TargetEnvironment, path: String, maxReaders: Int) throws(BackendError) {
        guard !batches.isEmpty else { return }
        var txn: OpaquePointer?
        var rc = mdb_txn_begin(target.env, nil, 0, &txn)
        guard rc == 0, let txn else {
            throw backendError(rc, operation: "mdb_txn_begin", path: path, maxReaders: maxReaders)
        }
        for batch in batches {
            rc = Backend.replay(batch, into: txn, dbis: target.dbis)
            if rc != 0 {
                mdb_txn_abort(txn)
                throw backendError(rc, operation: "replay into the copy", path: path, maxReaders: maxReaders)
            }
        }
        rc = mdb_txn_commit(txn)
        guard rc == 0 else { throw backendError(rc, operation: "mdb_txn_commit", path: path, maxReaders: maxReaders) }
    }
}

extension Backend {
    /// Whether an online defragmentation is running. Writer thread.
    public var isDefragmenting: Bool { onlineDefrag != nil }

    /// Starts defragmenting while reads and writes continue (see
    /// `OnlineDefrag`); does nothing when one is running. Call
    /// `finishOnlineDefragmentIfReady()` regularly afterwards (the server's
    /// loop does, every pass). `run` runs the copy and catch-up: on a
    /// background thread by default; run in place it returns with the copy
    /// ready to swap in. Writer thread.
    public func startOnlineDefragment(
        run: @escaping @Sendable (@escaping @Sendable () -> Void) -> Void = { DispatchQueue.global().async(execute: $0) }
    ) throws(BackendError) {
        guard onlineDefrag == nil else { return }
        try forceCommit()
        if mapSize < config.quotaBytes { try growMap(to: config.quotaBytes) }
        let job = OnlineDefrag(temporaryPath: path + ".defrag", limitBytes: config.defragJournalLimitBytes, runInBackground: run)
        onlineDefrag = job
        let mapSizeBytes = config.quotaBytes
        run { [self] in job.run(copyingFrom: self, mapSizeBytes: mapSizeBytes) }
    }

    /// Finishes the running online defragmentation when its copy has caught
    /// up: nil while it is still working (or none runs), else its outcome.
    /// On failure the backend is unchanged (unless the renamed copy could
    /// not be opened: then it is closed, as after `replace`). Writer thread.
    public func finishOnlineDefragmentIfReady() -> Result<Void, BackendError>? {
        guard let job = onlineDefrag else { return nil }
        switch job.phase {
        case .copying, .catchingUp:
            return nil
        case .failed(let error):
            // Given up (the journal's limit) while the copy may still run:
            // clean up once it has returned, without waiting for it here.
            guard job.isThreadDone else { return nil }
            job.waitForThread()
            job.discard()
            onlineDefrag = nil
            return .failure(error)
        case .ready:
            job.waitForThread()
            do throws(BackendError) {
                try swapIn(job)
                onlineDefrag = nil
                return .success(())
            } catch {
                onlineDefrag = nil
                job.discard()
                return .failure(error)
            }
        }
    }

    private func swapIn(_ job: OnlineDefrag) throws(BackendError) {
        // The open batch goes into the journal with everything else.
        try forceCommit()
        let taken = job.state.withLock { state -> Result<([PendingBatch], OnlineDefrag.TargetEnvironment), BackendError> in
            if case .failed(let error) = state.phase { return .failure(error) }
            guard let target = state.target else { return .failure(.defragmentationAborted(reason: "the copy is not open")) }
            let rest = state.journal
            state.journal.removeAll()
            return .success((rest, target))
        }
        let (rest, target) = try taken.get()
        try OnlineDefrag.replay(rest, into: target, path: job.temporaryPath, maxReaders: config.maxReaders)
        let rc = mdb_env_sync(target.env, 1)
        guard rc == 0 else { throw lmdbError(rc, "mdb_env_sync \(job.temporaryPath)") }
        job.state.withLock { $0.target = nil }
        mdb_env_close(target.env)
        try Backend.fsyncFile(job.temporaryPath)
        // A second name for the old file, so the rename below does not free
        // its blocks (a tenth of a second for a GiB here) while readers
        // wait; it is removed afterwards, off the writer thread.
        let retired = path + ".retired"
        unlink(retired)
        let keptOld = link(path, retired) == 0
        try installCopy(at: job.temporaryPath)
        if keptOld { job.runInBackground { unlink(retired) } }
    }

    /// Stops a running online defragmentation, waiting for its copy to end,
    /// and removes the copy. Writer thread.
    func cancelOnlineDefragment() {
        guard let job = onlineDefrag else { return }
        job.cancelAndWait()
        job.discard()
        onlineDefrag = nil
    }
}
