import Checksum
import Backend
import EtcdProto
import Foundation

/// Physical removal of compacted revisions from bucket `key`, done in
/// bounded steps so the writer can apply entries in between.
struct CompactionJob {
    let revision: Int64
    /// Revisions <= `revision` that reads at or after it still need.
    let keep: Set<Revision>
    /// Where the next step starts scanning.
    var next: [UInt8]
    /// etcd's hash at the compaction, built as the steps scan; nil for a
    /// compaction resumed from the backend (its first run may have removed
    /// entries already, so its hash would be no member's).
    var hasher: CompactionHasher?
}

/// etcd's hash at a compaction (`scheduleCompaction`'s kvHasher): the
/// HashKV at the compaction revision as it was before the compaction, from
/// the entries the compaction scans anyway. Entries at or below the previous
/// compaction count only when the new one keeps them (or keeps nothing, as
/// `hashKV` rules).
struct CompactionHasher {
    let previousCompactRevision: Int64
    /// What `hashKV` keeps at the compaction revision (`KeyIndex.keep`):
    /// unlike the compaction's own set, no tombstone at exactly that
    /// revision, so the hash equals `hashKV`'s.
    let keep: Set<Revision>
    var crc: CRC32C

    init(previousCompactRevision: Int64, keep: Set<Revision>) {
        self.previousCompactRevision = previousCompactRevision
        self.keep = keep
        crc = CRC32C()
        crc.update(Bucket.key.nameBytes)
    }

    mutating func add(_ key: [UInt8], _ value: [UInt8], at revision: Revision) {
        if revision.main <= previousCompactRevision && !keep.isEmpty && !keep.contains(revision) { return }
        crc.update(key)
        crc.update(value)
    }
}

/// How many compaction hashes a store keeps (etcd's hashStorageMaxSize).
let compactionHashLimit = 10

extension KVStore {
    /// etcd's Compact: fails with `compacted` when `revision` is not newer
    /// than the last compaction and with `futureRevision` when it is newer
    /// than the store. Drops the history from the index at once (reads below
    /// `revision` fail from now on), records `scheduledCompactRev` in the
    /// batch and schedules the removal from the backend: call
    /// `compactionStep()` between entries until it returns true (or
    /// `finishCompaction()`). An unfinished earlier compaction is finished
    /// first (in the open batch), as etcd runs compactions in order: each
    /// leaves its hash (`compactionHashes`), and no member hashes leftovers
    /// of an earlier one. Writer thread.
    public func compact(_ revision: Int64) throws(MVCCError) -> Etcdserverpb_CompactionResponse {
        if let failure { throw .backend(failure) }
        // The writer alone changes the revisions: no lock to read them here.
        if revision <= compactRev { throw .compacted }
        if revision > currentRev { throw .futureRevision }
        while try !compactionStep() {}
        lock.writeLock()
        defer { lock.unlock() }
        do {
            try backend.put(
                .meta, key: MetaKey.scheduledCompactRevision, value: RevisionKey.encode(Revision(main: revision)))
        } catch {
            failure = error
            throw .backend(error)
        }
        startCompaction(at: revision, hashing: true)
        var response = Etcdserverpb_CompactionResponse()
        response.header.revision = currentRev
        return response
    }

    /// Compacts the index and schedules the backend removal, which records
    /// the hash at the compaction when `hashing`. Caller holds the write
    /// lock (or is restoring).
    func startCompaction(at revision: Int64, hashing: Bool) {
        var hasher: CompactionHasher?
        if hashing {
            var hashKeep = Set<Revision>()
            index.forEach { keyIndex in keyIndex.keep(revision, into: &hashKeep) }
            hasher = CompactionHasher(previousCompactRevision: compactRev, keep: hashKeep)
        }
        compactRev = revision
        var keep = Set<Revision>()
        index.forEach { keyIndex in keyIndex.compact(revision, keep: &keep) }
        index.removeAll { $0.isEmpty }
        compactionJob = CompactionJob(revision: revision, keep: keep, next: RevisionKey.encode(Revision(main: 0)), hasher: hasher)
    }

    /// Whether removed revisions are still waiting to leave the backend.
    public var hasPendingCompaction: Bool { compactionJob != nil }

    /// Removes up to `compactionBatchLimit` compacted revisions from the
    /// backend (in the open batch); returns true when the compaction is
    /// finished (then `finishedCompactRev` is recorded) or none is pending.
    /// Readers are not blocked: no read can reach a removed revision. Writer
    /// thread.
    @discardableResult
    public func compactionStep() throws(MVCCError) -> Bool {
        guard var job = compactionJob else { return true }
        if let failure { throw .backend(failure) }
        let limit = max(1, config.compactionBatchLimit)
        let end = RevisionKey.encode(Revision(main: job.revision + 1))
        do {
            var scanned: [(key: [UInt8], value: [UInt8])] = []
            let hashing = job.hasher != nil
            try backend.withWriteView { tx in
                try tx.forEach(.key, from: job.next, to: end) { key, value in
                    scanned.append((Array(key), hashing ? Array(value) : []))
                    return scanned.count < limit
                }
            }
            var last: Revision?
            for (key, value) in scanned {
                guard let (revision, _) = RevisionKey.decode(key) else { continue }
                last = revision
                job.hasher?.add(key, value, at: revision)
                if !job.keep.contains(revision) {
                    try backend.delete(.key, key: key)
                }
            }
            if scanned.count < limit {
                try backend.put(
                    .meta, key: MetaKey.finishedCompactRevision, value: RevisionKey.encode(Revision(main: job.revision)))
                compactionJob = nil
                if let hasher = job.hasher {
                    record(KeyValueHash(hash: hasher.crc.value, compactRevision: hasher.previousCompactRevision,
                                        revision: job.revision))
                }
                return true
            }
            if let last {
                job.next = RevisionKey.encode(Revision(main: last.main, sub: last.sub + 1))
            }
            compactionJob = job
            return false
        } catch {
            let mapped = KVStore.mvccError(error)
            if case .backend(let backendError) = mapped { failure = backendError }
            throw mapped
        }
    }

    /// Runs `compactionStep()` until the compaction is finished, committing
    /// the backend batch when due in between. Writer thread.
    public func finishCompaction() throws(MVCCError) {
        while try !compactionStep() {
            do { try backend.commitIfDue() } catch { throw .backend(error) }
        }
    }

    // MARK: - Hashes

    /// The hashes of the last `compactionHashLimit` compactions this store
    /// finished since it opened, oldest first: each the HashKV at its
    /// compaction revision, with the compaction revision before it (etcd's
    /// `HashStorage.Hashes`, for the compaction hash check). Any thread.
    public var compactionHashes: [KeyValueHash] {
        lock.withReadLock { recentCompactionHashes }
    }

    private func record(_ hash: KeyValueHash) {
        lock.withWriteLock {
            recentCompactionHashes.append(hash)
            if recentCompactionHashes.count > compactionHashLimit {
                recentCompactionHashes.removeFirst(recentCompactionHashes.count - compactionHashLimit)
            }
        }
    }

    /// etcd's Hash: CRC-32C over the whole backend (every bucket, except the
    /// consistent index), and the revision it was taken at. Any thread.
    public func hash() throws(MVCCError) -> (hash: UInt32, revision: Int64) {
        lock.readLock()
        defer { lock.unlock() }
        do {
            return (try backend.hash(), currentRev)
        } catch {
            throw KVStore.mvccError(error)
        }
    }

    /// etcd's HashKV: CRC-32C over bucket name `key` and the entries of
    /// bucket `key` at revisions <= `revision` (0: the current revision),
    /// leaving out entries at or below the compaction revision unless a
    /// compaction at `revision` would keep them. Members with the same
    /// history get the same value whatever their physical compaction
    /// progress — except, as in etcd, when no key is alive at `revision`:
    /// then nothing is left out, so entries not yet removed count. Also
    /// returns the current revision. At the revision of a compaction in
    /// `compactionHashes` the answer is that hash (as etcd's HashByRev
    /// answers), though the revision is compacted. Any thread.
    public func hashKV(_ revision: Int64) throws(MVCCError) -> (hash: KeyValueHash, currentRevision: Int64) {
        lock.readLock()
        defer { lock.unlock() }
        let compact = compactRev
        let current = currentRev
        if revision > 0, let recorded = recentCompactionHashes.last(where: { $0.revision == revision }) {
            return (recorded, current)
        }
        if revision > 0 && revision <= compact { throw .compacted }
        if revision > 0 && revision > current { throw .futureRevision }
        let upTo = revision == 0 ? current : revision
        var keep = Set<Revision>()
        index.forEach { keyIndex in keyIndex.keep(upTo, into: &keep) }
        var crc = CRC32C()
        crc.update(Bucket.key.nameBytes)
        do {
            try backend.read { tx in
                try tx.scan(.key) { key, value in
                    guard let (entry, _) = RevisionKey.decode(key) else { return true }
                    if entry.main > upTo { return false }
                    if entry.main <= compact && !keep.isEmpty && !keep.contains(entry) { return true }
                    crc.update(key)
                    crc.update(value)
                    return true
                }
            }
        } catch {
            throw KVStore.mvccError(error)
        }
        return (KeyValueHash(hash: crc.value, compactRevision: compact, revision: upTo), current)
    }
}
