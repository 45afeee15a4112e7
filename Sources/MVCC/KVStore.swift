import Backend
import EtcdProto
import Foundation

/// Settings of a store.
public struct StoreConfig: Sendable {
    /// Revisions removed from the backend per `compactionStep()`.
    public var compactionBatchLimit: Int = 1000
    /// etcd's `--max-txn-ops`.
    public var maxTxnOps: Int = 128
    /// Fill `prevKv` of every event (costs a read per changed key).
    public var eventsIncludePrevKv: Bool = true

    public init(compactionBatchLimit: Int = 1000, maxTxnOps: Int = 128, eventsIncludePrevKv: Bool = true) {
        self.compactionBatchLimit = compactionBatchLimit
        self.maxTxnOps = maxTxnOps
        self.eventsIncludePrevKv = eventsIncludePrevKv
    }
}

/// What a write returns: etcd's response (its header carries only the
/// revision; the server fills in cluster id, member id and raft term), the
/// events of the new revision in order (for watchers), and that revision.
public struct WriteResult<Response: Sendable>: Sendable {
    public var response: Response
    public var events: [Mvccpb_Event]
    /// The store revision after the write (unchanged when nothing changed).
    public var revision: Int64
}

/// `hashKV` result, as etcd's `HashKVResponse` needs it.
public struct KeyValueHash: Equatable, Sendable {
    public var hash: UInt32
    public var compactRevision: Int64
    /// The revision the hash covers.
    public var revision: Int64
}

/// The multi-version key-value store over a `Backend`.
///
/// Every change gets a revision `(main, sub)`; a write request (one put, one
/// delete-range, or a whole txn) takes one `main` revision. Bucket `key`
/// maps each revision to the `mvccpb.KeyValue` written at it (deletions are
/// tombstone entries), and an in-memory ordered index maps each key to its
/// history (`KeyIndex`), rebuilt from the backend when the store opens.
///
/// Threading: the write methods (`put`, `deleteRange`, `txn`, `compact`,
/// `compactionStep`, `finishCompaction`, `reload`) belong to the backend's
/// writer thread, the server's apply loop. They never commit the backend
/// batch: after applying a raft entry the caller records it with
/// `backend.setConsistentIndex(_:term:)` and then calls
/// `backend.commitIfDue()`, so data and index always commit together.
/// Reads (`range`, `readOnlyTxn`, `hash`, `hashKV`, the revision properties)
/// may run on any thread, concurrently with the writer; they see whole write
/// requests only.
///
/// After a backend failure during a write the store refuses further writes
/// (`MVCCError.backend`): its index may be ahead of the backend. Reopen it;
/// the WAL replays everything after the committed consistent index.
public final class KVStore: @unchecked Sendable {
    public let backend: Backend
    public let config: StoreConfig

    /// Readers hold it shared for a whole request; writes and the index
    /// compaction hold it exclusively.
    let lock = ReadWriteLock()
    var index = OrderedIndex()
    /// Revision of the last completed write request; 1 for an empty store
    /// (so the first write is revision 2, as in etcd).
    var currentRev: Int64 = 1
    /// Revision of the last compaction; -1 before the first one.
    var compactRev: Int64 = -1
    var compactionJob: CompactionJob?
    /// `compactionHashes`, under `lock`.
    var recentCompactionHashes: [KeyValueHash] = []
    var failure: BackendError?

    /// Keys and their lease ids as found when the store was opened (or
    /// reloaded), for the lessor to reattach (writes report lease changes
    /// through events). Writer thread.
    public private(set) var restoredLeases: [Data: Int64] = [:]

    /// Opens the store on `backend`, rebuilding the index and resuming an
    /// unfinished compaction. Call from the writer thread.
    public init(backend: Backend, config: StoreConfig = StoreConfig()) throws(MVCCError) {
        self.backend = backend
        self.config = config
        try restore()
    }

    // MARK: - Revisions

    /// The revision of the last write request.
    public var currentRevision: Int64 {
        lock.withReadLock { currentRev }
    }

    /// The revision of the last compaction (-1 before any).
    public var compactRevision: Int64 {
        lock.withReadLock { compactRev }
    }

    /// Number of keys with history in the index.
    public var indexedKeyCount: Int {
        lock.withReadLock { index.count }
    }

    /// The consistent index and term stored with the data.
    public func consistentIndex() throws(MVCCError) -> (index: UInt64, term: UInt64) {
        do {
            return try backend.consistentIndex()
        } catch {
            throw KVStore.mvccError(error)
        }
    }

    // MARK: - Restore

    /// Rebuilds the index, the revisions and `restoredLeases` from the
    /// backend, as opening the store does, after its file was replaced
    /// (`Backend.replace(withFileAt:)`): a compaction of the old data still
    /// in progress is dropped, an unfinished one of the new data resumes,
    /// and a recorded write failure is cleared. `install`, if given, runs
    /// first under the store's write lock, so no read sees the new data
    /// through the old index: `reload { try backend.replace(withFileAt: p) }`;
    /// if it throws, nothing changes. Writer thread; then reattach leases
    /// from `restoredLeases` and call `WatchableStore.restore()`.
    public func reload(after install: () throws -> Void = {}) throws(MVCCError) {
        lock.writeLock()
        defer { lock.unlock() }
        do {
            try install()
        } catch {
            throw KVStore.mvccError(error)
        }
        do {
            try restore()
        } catch {
            if case .backend(let backendError) = error {
                failure = backendError
            } else {
                failure = .corrupted(path: backend.path, detail: error.message)
            }
            throw error
        }
        failure = nil
    }

    /// Loads the in-memory state from the backend. Caller holds the write
    /// lock (or is initialising).
    private func restore() throws(MVCCError) {
        var finished: Int64 = -1
        var scheduled: Int64 = 0
        var lastMain: Int64 = 1
        var leases: [Data: Int64] = [:]
        var rebuilt = OrderedIndex()
        do {
            try backend.read { tx in
                if let bytes = try tx.get(.meta, MetaKey.finishedCompactRevision),
                   let decoded = RevisionKey.decode(bytes) {
                    finished = decoded.revision.main
                }
                if let bytes = try tx.get(.meta, MetaKey.scheduledCompactRevision),
                   let decoded = RevisionKey.decode(bytes) {
                    scheduled = decoded.revision.main
                }
                try tx.scan(.key) { rawKey, rawValue in
                    guard let (revision, isTombstone) = RevisionKey.decode(rawKey) else {
                        throw MVCCError.corruptEntry("bad revision key of \(rawKey.count) bytes")
                    }
                    let kv = try KeyValueCodec.decode(rawValue)
                    lastMain = revision.main
                    let key = byteArray(kv.key)
                    if let keyIndex = rebuilt.get(key) {
                        if isTombstone {
                            keyIndex.tombstone(revision)
                        } else {
                            keyIndex.put(revision)
                        }
                    } else if !isTombstone {
                        // Earlier revisions may be compacted away: take the
                        // creation revision and version from the entry.
                        let keyIndex = rebuilt.getOrInsert(key) { KeyIndex(key: key) }
                        keyIndex.restore(
                            created: Revision(main: kv.createRevision), modified: revision, version: kv.version)
                    }
                    if isTombstone || kv.lease == 0 {
                        leases[kv.key] = nil
                    } else {
                        leases[kv.key] = kv.lease
                    }
                    return true
                }
            }
        } catch {
            throw KVStore.mvccError(error)
        }
        index = rebuilt
        restoredLeases = leases
        compactRev = finished
        currentRev = max(lastMain, finished, scheduled)
        compactionJob = nil
        if scheduled > 0 && scheduled > finished {
            // A compaction was requested but not finished: redo it.
            startCompaction(at: scheduled, hashing: false)
        }
    }

    // MARK: - Helpers

    static func mvccError(_ error: any Error) -> MVCCError {
        switch error {
        case let error as MVCCError: return error
        case let error as BackendError: return .backend(error)
        default: return .corruptEntry(String(describing: error))
        }
    }

    /// Reads the entry stored at `revision`.
    func fetch(_ revision: Revision, _ tx: ReadTx) throws -> Mvccpb_KeyValue {
        let found = try RevisionKey.withEncoded(revision) { key in
            try tx.withValue(.key, keyBytes: key) { try KeyValueCodec.decode($0) }
        }
        guard let kv = found else {
            throw MVCCError.corruptEntry("revision \(revision) is in the index but not in the backend")
        }
        return kv
    }
}
