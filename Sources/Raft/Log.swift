/// The replicated log: stable storage (read-only here) followed by the
/// unstable tail.
///
/// Invariants, checked when they change:
///   `firstIndex - 1 <= applied <= committed <= lastIndex`.
struct RaftLog {
    let storage: any Storage
    var unstable: UnstableLog
    /// Highest index known to be committed by a quorum.
    var committed: UInt64 {
        didSet { precondition(committed >= applied, "committed \(committed) < applied \(applied)") }
    }
    /// Highest index the application has applied.
    var applied: UInt64 {
        didSet { precondition(applied <= committed, "applied \(applied) > committed \(committed)") }
    }
    /// Upper bound on the total size of committed entries handed out per Ready.
    let maxCommittedBytesPerReady: UInt64

    init(storage: any Storage, maxCommittedBytesPerReady: UInt64) {
        self.storage = storage
        self.maxCommittedBytesPerReady = maxCommittedBytesPerReady
        let first = RaftLog.must { () throws(RaftError) in try storage.firstIndex() }
        let last = RaftLog.must { () throws(RaftError) in try storage.lastIndex() }
        unstable = UnstableLog(offset: last + 1)
        committed = first - 1
        applied = first - 1
    }

    /// Storage failures other than the documented ones are fatal.
    static func must<T>(_ body: () throws(RaftError) -> T) -> T {
        do { return try body() } catch { preconditionFailure("unexpected storage error: \(error)") }
    }

    var firstIndex: UInt64 {
        if let i = unstable.firstIndexIfKnown { return i }
        return RaftLog.must { () throws(RaftError) in try storage.firstIndex() }
    }

    var lastIndex: UInt64 {
        if let i = unstable.lastIndexIfKnown { return i }
        return RaftLog.must { () throws(RaftError) in try storage.lastIndex() }
    }

    var lastTerm: UInt64 {
        RaftLog.must { () throws(RaftError) in try term(lastIndex) }
    }

    /// The term at `index`: 0 outside `[firstIndex-1, lastIndex]`, and
    /// `.compacted` / `.unavailable` from storage are passed on.
    func term(_ index: UInt64) throws(RaftError) -> UInt64 {
        if let t = unstable.term(at: index) { return t }
        let dummy = firstIndex - 1
        if index < dummy || index > lastIndex { return 0 }
        do {
            return try storage.term(index)
        } catch {
            switch error {
            case .compacted, .unavailable: throw error
            default: preconditionFailure("unexpected storage error: \(error)")
            }
        }
    }

    /// Term at `index`, with a compacted index reading as 0.
    func termOrZero(_ index: UInt64) -> UInt64 {
        (try? term(index)) ?? 0
    }

    func matchTerm(_ index: UInt64, _ term: UInt64) -> Bool {
        guard let t = try? self.term(index) else { return false }
        return t == term
    }

    /// A candidate whose last entry is (lastIndex, term) is at least as up to
    /// date as this log (§5.4.1).
    func isUpToDate(lastIndex candidateIndex: UInt64, term candidateTerm: UInt64) -> Bool {
        let myTerm = lastTerm
        return candidateTerm > myTerm || (candidateTerm == myTerm && candidateIndex >= lastIndex)
    }

    /// Follower side of MsgApp: if our log contains (index, logTerm), append
    /// the entries (truncating a conflicting suffix) and advance the commit
    /// index. Returns the index of the last new entry, or nil on mismatch.
    mutating func maybeAppend(index: UInt64, logTerm: UInt64, committed leaderCommit: UInt64, entries: [Entry]) -> UInt64? {
        guard matchTerm(index, logTerm) else { return nil }
        let lastNew = index + UInt64(entries.count)
        let conflict = findConflict(entries)
        if conflict != 0 {
            precondition(conflict > committed, "entry \(conflict) conflicts with committed entry (committed \(committed))")
            let start = Int(conflict - (index + 1))
            append(entries[start...])
        }
        commit(to: min(leaderCommit, lastNew))
        return lastNew
    }

    /// Appends entries (which may overwrite an uncommitted suffix); returns
    /// the new last index.
    @discardableResult
    mutating func append(_ entries: some Collection<Entry>) -> UInt64 {
        guard let first = entries.first else { return lastIndex }
        precondition(first.index - 1 >= committed, "after(\(first.index - 1)) is out of range [committed(\(committed))]")
        unstable.truncateAndAppend(entries)
        return lastIndex
    }

    /// Leader side: appends new proposals after the last index, stamping
    /// them with `term` and their indexes. Returns the new last index.
    mutating func appendAsLeader(_ entries: [Entry], term: UInt64) -> UInt64 {
        let last = lastIndex
        precondition(unstable.offset + UInt64(unstable.entries.count) == last + 1,
                     "unstable tail [\(unstable.offset), +\(unstable.entries.count)) does not end at last index \(last)")
        var index = last
        for var e in entries {
            index += 1
            e.term = term
            e.index = index
            unstable.entries.append(e)
        }
        return index
    }

    /// Index of the first entry whose term differs from ours (or that we do
    /// not have), 0 if all of them match.
    func findConflict(_ entries: [Entry]) -> UInt64 {
        for e in entries where !matchTerm(e.index, e.term) {
            return e.index
        }
        return 0
    }

    /// The last index `<= index` whose term is `<= term`, with that term.
    /// Used for the fast back-off: every entry above the returned index
    /// cannot match a log whose entry at `index` has `term`.
    func findConflictByTerm(index: UInt64, term: UInt64) -> (index: UInt64, term: UInt64) {
        var i = index
        while i > 0 {
            guard let t = try? self.term(i) else { return (i, 0) }
            if t <= term { return (i, t) }
            i -= 1
        }
        return (0, 0)
    }

    var unstableEntries: [Entry] { unstable.entries }

    /// Committed entries not yet applied, capped by `maxCommittedBytesPerReady`.
    var nextCommittedEntries: [Entry] {
        let off = max(applied + 1, firstIndex)
        guard committed + 1 > off else { return [] }
        do {
            return try slice(off, committed + 1, maxSizeBytes: maxCommittedBytesPerReady)
        } catch {
            preconditionFailure("unexpected error when getting unapplied entries: \(error)")
        }
    }

    var hasNextCommittedEntries: Bool {
        committed + 1 > max(applied + 1, firstIndex)
    }

    var hasPendingSnapshot: Bool { unstable.snapshot != nil }

    func snapshot() throws(RaftError) -> Snapshot {
        if let s = unstable.snapshot { return s }
        return try storage.snapshot()
    }

    mutating func commit(to index: UInt64) {
        guard committed < index else { return }
        precondition(lastIndex >= index, "tocommit(\(index)) is out of range [lastIndex(\(lastIndex))]")
        committed = index
    }

    mutating func applied(to index: UInt64) {
        guard index != 0 else { return }
        precondition(committed >= index && index >= applied,
                     "applied(\(index)) is out of range [prevApplied(\(applied)), committed(\(committed))]")
        applied = index
    }

    mutating func stableTo(index: UInt64, term: UInt64) { unstable.stableTo(index: index, term: term) }

    mutating func stableSnapshotTo(index: UInt64) { unstable.stableSnapshotTo(index: index) }

    /// Leader side: commit `index` if a quorum has it and it is from the
    /// current term (§5.4.2: never commit older terms by counting replicas).
    mutating func maybeCommit(index: UInt64, term: UInt64) -> Bool {
        guard index > committed, termOrZero(index) == term else { return false }
        commit(to: index)
        return true
    }

    mutating func restore(_ snapshot: Snapshot) {
        committed = snapshot.metadata.index
        unstable.restore(snapshot)
    }

    /// Entries from `index` to the end, capped by size.
    func entries(from index: UInt64, maxSizeBytes: UInt64) throws(RaftError) -> [Entry] {
        let last = lastIndex
        if index > last { return [] }
        return try slice(index, last + 1, maxSizeBytes: maxSizeBytes)
    }

    /// Every entry (test helper); entries compacted away are skipped.
    func allEntries() -> [Entry] {
        (try? entries(from: firstIndex, maxSizeBytes: .max)) ?? []
    }

    /// Entries in `lo..<hi` from storage and/or the unstable tail.
    func slice(_ lo: UInt64, _ hi: UInt64, maxSizeBytes: UInt64) throws(RaftError) -> [Entry] {
        precondition(lo <= hi, "invalid slice \(lo) > \(hi)")
        if lo < firstIndex { throw .compacted }
        precondition(hi <= lastIndex + 1, "slice[\(lo),\(hi)) out of bound [\(firstIndex),\(lastIndex)]")
        if lo == hi { return [] }
        var result: [Entry] = []
        if lo < unstable.offset {
            let storedHi = min(hi, unstable.offset)
            do {
                result = try storage.entries(lo, storedHi, maxSizeBytes: maxSizeBytes)
            } catch {
                switch error {
                case .compacted: throw error
                case .unavailable: preconditionFailure("entries[\(lo):\(storedHi)) is unavailable from storage")
                default: preconditionFailure("unexpected storage error: \(error)")
                }
            }
            // Storage already hit the size limit: stop here.
            if UInt64(result.count) < storedHi - lo { return result }
        }
        if hi > unstable.offset {
            let part = unstable.slice(max(lo, unstable.offset), hi)
            if result.isEmpty {
                result = Array(part)
            } else {
                result.append(contentsOf: part)
            }
        }
        return limitSize(result, maxSizeBytes)
    }
}
