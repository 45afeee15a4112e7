/// The history of one key: its revisions, grouped into generations.
///
/// A generation is one life of the key, from its creation to its deletion.
/// It holds the revisions of the changes in that life; a deletion
/// (tombstone) is the last revision of a generation and starts a new, empty
/// one. Example: put at 1, put at 2, delete at 3, put at 4, put at 5:
///
///     generations: [ {created 1, ver 3, revs [1, 2, 3(t)]},
///                    {created 4, ver 2, revs [4, 5]} ]
///
/// Reading at revision r finds the generation alive at r (created <= r and,
/// unless it is the last one, deleted after r) and the newest revision <= r
/// in it; the version at r is how many changes of that generation are <= r.
///
/// Compacting at revision c removes the revisions no read at >= c can need:
/// every generation deleted at or before c, and inside the generation alive
/// at c every revision older than the newest one <= c — except a tombstone
/// exactly at c, which stays until a later compaction so watchers from c see
/// the delete. Continuing the example, compact(2) leaves
/// [ {revs [2, 3(t)]}, {revs [4, 5]} ]; compact(3) leaves
/// [ {revs [3(t)]}, {revs [4, 5]} ]; compact(4) leaves [ {revs [4, 5]} ];
/// compact(5) leaves [ {revs [5]} ]. A key whose
/// generations are all gone (deleted at or before c, not recreated) is
/// removed from the index altogether.
final class KeyIndex {
    let key: [UInt8]
    /// The newest revision of any change to the key.
    private(set) var modified = Revision(main: 0)
    private(set) var generations: [Generation] = [Generation()]

    struct Generation: Equatable {
        /// Number of changes in this generation (also counting those
        /// compacted away).
        var version: Int64 = 0
        var created = Revision(main: 0)
        var revisions: [Revision] = []

        var isEmpty: Bool { revisions.isEmpty }
    }

    init(key: [UInt8]) {
        self.key = key
    }

    /// True when the key has no history left (only the empty generation).
    var isEmpty: Bool { generations.count == 1 && generations[0].isEmpty }

    /// Records a change at `revision` (a put, or the tombstone of a delete).
    func put(_ revision: Revision) {
        precondition(revision > modified, "key index: put at \(revision) is not after \(modified)")
        let last = generations.count - 1
        if generations[last].revisions.isEmpty {
            generations[last].created = revision
        }
        generations[last].revisions.append(revision)
        generations[last].version += 1
        modified = revision
    }

    /// Starts the key's history from a stored entry whose earlier revisions
    /// may have been compacted away (used when rebuilding the index).
    func restore(created: Revision, modified: Revision, version: Int64) {
        precondition(isEmpty, "key index: restore into a non-empty history")
        self.modified = modified
        generations = [Generation(version: version, created: created, revisions: [modified])]
    }

    /// Records a deletion at `revision`; false when the key is not alive.
    @discardableResult
    func tombstone(_ revision: Revision) -> Bool {
        guard !generations[generations.count - 1].isEmpty else { return false }
        put(revision)
        generations.append(Generation())
        return true
    }

    /// The key's state at main revision `atRevision`: the revision of its
    /// value, its creation revision and its version; nil when it did not
    /// exist then.
    func get(at atRevision: Int64) -> (modified: Revision, created: Revision, version: Int64)? {
        guard let g = generationIndex(at: atRevision) else { return nil }
        return generations.withUnsafeBufferPointer { all in
            let generation = all[g]
            return generation.revisions.withUnsafeBufferPointer { revisions in
                var i = revisions.count - 1
                while i >= 0 {
                    if revisions[i].main <= atRevision {
                        let version = generation.version - Int64(revisions.count - 1 - i)
                        return (revisions[i], generation.created, version)
                    }
                    i -= 1
                }
                return nil
            }
        }
    }

    /// Index of the generation alive at `atRevision`.
    private func generationIndex(at atRevision: Int64) -> Int? {
        generations.withUnsafeBufferPointer { all in
            let last = all.count - 1
            var g = last
            while g >= 0 {
                let revisions = all[g].revisions
                guard let first = revisions.first, let newest = revisions.last else {
                    g -= 1
                    continue
                }
                if g != last, newest.main <= atRevision {
                    // Deleted at or before atRevision, and nothing newer was alive.
                    return nil
                }
                if first.main <= atRevision {
                    return g
                }
                g -= 1
            }
            return nil
        }
    }

    /// Drops the history that compaction at `atRevision` makes unreachable
    /// and adds to `keep` the revision that must stay in the backend.
    func compact(_ atRevision: Int64, keep: inout Set<Revision>) {
        let (g, r) = findCompactionPoint(atRevision)
        var start = g
        if !generations[g].isEmpty {
            if let r {
                keep.insert(generations[g].revisions[r])
                generations[g].revisions.removeFirst(r)
            }
            if generations[g].revisions.count == 1 && g != generations.count - 1
                && generations[g].revisions[0].main < atRevision {
                // Only the tombstone is left and it is older than the
                // compaction point: drop the generation as well. A tombstone
                // exactly at the compaction revision stays, so a watch from
                // that revision still gets the delete (etcd 3.5.15 fixed the
                // same loss; `keep(_:into:)`, which the hash uses, still skips
                // it, so hashes stay equal to etcd's).
                keep.remove(generations[g].revisions[0])
                start += 1
            }
        }
        generations.removeFirst(start)
    }

    /// Adds to `keep` the revision a compaction at `atRevision` would keep,
    /// without changing anything.
    func keep(_ atRevision: Int64, into keep: inout Set<Revision>) {
        guard !isEmpty else { return }
        let (g, r) = findCompactionPoint(atRevision)
        guard let r, !generations[g].isEmpty else { return }
        let isTombstone = r == generations[g].revisions.count - 1 && g != generations.count - 1
        if !isTombstone {
            keep.insert(generations[g].revisions[r])
        }
    }

    /// The first generation not deleted before `atRevision` (or the last
    /// one), and in it the position of the newest revision <= atRevision.
    private func findCompactionPoint(_ atRevision: Int64) -> (generation: Int, revision: Int?) {
        var g = 0
        while g < generations.count - 1 {
            let revisions = generations[g].revisions
            if revisions[revisions.count - 1].main >= atRevision { break }
            g += 1
        }
        let revisions = generations[g].revisions
        var i = revisions.count - 1
        while i >= 0 {
            if revisions[i].main <= atRevision { return (g, i) }
            i -= 1
        }
        return (g, nil)
    }
}
