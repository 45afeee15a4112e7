/// The tail of the log that the application has not persisted yet, plus a
/// snapshot received from the leader that is waiting to be persisted.
///
/// `entries[k]` has index `offset + k`. When `snapshot` is set, `offset` is
/// `snapshot.metadata.index + 1`.
struct UnstableLog {
    var snapshot: Snapshot?
    var entries: [Entry] = []
    var offset: UInt64

    /// The first index if it is known only here (i.e. a pending snapshot).
    var firstIndexIfKnown: UInt64? {
        snapshot.map { $0.metadata.index + 1 }
    }

    /// The last index if it is known here.
    var lastIndexIfKnown: UInt64? {
        if !entries.isEmpty { return offset + UInt64(entries.count) - 1 }
        return snapshot?.metadata.index
    }

    func term(at index: UInt64) -> UInt64? {
        if index < offset {
            if let snapshot, snapshot.metadata.index == index { return snapshot.metadata.term }
            return nil
        }
        guard let last = lastIndexIfKnown, index <= last else { return nil }
        return entries[Int(index - offset)].term
    }

    /// The application persisted entries up to `index` (which had `term`).
    /// Ignored if the entry was replaced in the meantime.
    mutating func stableTo(index: UInt64, term: UInt64) {
        guard let t = self.term(at: index), t == term, index >= offset else { return }
        let count = Int(index + 1 - offset)
        if count == entries.count {
            entries.removeAll(keepingCapacity: true)
        } else {
            entries.removeFirst(count)
        }
        offset = index + 1
    }

    mutating func stableSnapshotTo(index: UInt64) {
        if let snapshot, snapshot.metadata.index == index { self.snapshot = nil }
    }

    mutating func restore(_ snap: Snapshot) {
        offset = snap.metadata.index + 1
        entries.removeAll()
        snapshot = snap
    }

    mutating func truncateAndAppend(_ new: some Collection<Entry>) {
        guard let after = new.first?.index else { return }
        if after == offset + UInt64(entries.count) {
            entries.append(contentsOf: new)
        } else if after <= offset {
            // Replaces everything unstable (and the caller made sure nothing
            // committed is overwritten).
            offset = after
            entries = Array(new)
        } else {
            entries.removeSubrange(Int(after - offset)...)
            entries.append(contentsOf: new)
        }
    }

    func slice(_ lo: UInt64, _ hi: UInt64) -> ArraySlice<Entry> {
        precondition(lo <= hi && lo >= offset && hi <= offset + UInt64(entries.count),
                     "unstable.slice[\(lo),\(hi)) out of bound [\(offset),\(offset + UInt64(entries.count))]")
        return entries[Int(lo - offset)..<Int(hi - offset)]
    }
}
