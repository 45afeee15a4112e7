// The read-only view of the persisted log that the application provides.
// Raft never writes to it: the application persists what a Ready hands it
// and then updates its storage itself.
import FoundationEssentials

/// Stable storage as raft sees it. Methods may throw `.compacted` or
/// `.unavailable` (and `snapshot` may throw `.snapshotTemporarilyUnavailable`);
/// any other failure is a bug in the storage and raft traps on it.
public protocol Storage: AnyObject {
    /// The persisted hard state and the membership at the last snapshot or
    /// applied conf change.
    func initialState() throws(RaftError) -> (HardState, ConfState)
    /// Entries in `lo..<hi`, at least one if any exist, trimmed so the total
    /// encoded size stays within `maxSizeBytes`.
    func entries(_ lo: UInt64, _ hi: UInt64, maxSizeBytes: UInt64) throws(RaftError) -> [Entry]
    /// The term of the entry at `index`; `firstIndex - 1` (the snapshot's
    /// index) must still answer.
    func term(_ index: UInt64) throws(RaftError) -> UInt64
    /// Index of the last entry, or the snapshot's index when the log is empty.
    func lastIndex() throws(RaftError) -> UInt64
    /// Index of the first entry still available (snapshot index + 1).
    func firstIndex() throws(RaftError) -> UInt64
    /// The most recent snapshot.
    func snapshot() throws(RaftError) -> Snapshot
}

/// Keeps the longest prefix of `entries` whose encoded size fits in
/// `maxSizeBytes`, but never fewer than one entry.
@inlinable
func limitSize(_ entries: [Entry], _ maxSizeBytes: UInt64) -> [Entry] {
    guard entries.count > 1 else { return entries }
    var size = entries[0].approximateEncodedSize
    var limit = 1
    while limit < entries.count {
        size += entries[limit].approximateEncodedSize
        if size > maxSizeBytes { break }
        limit += 1
    }
    if limit == entries.count { return entries }
    return Array(entries[..<limit])
}

/// An in-memory `Storage` for tests, benchmarks and as a cache in front of a
/// write-ahead log. Not thread-safe: the owner serialises access.
///
/// `entries[0]` is a dummy whose index and term are those of the snapshot, so
/// `term(snapshotIndex)` keeps working after compaction.
public final class MemoryStorage: Storage {
    public private(set) var hardState = HardState()
    public private(set) var currentSnapshot = Snapshot()
    private var entries: [Entry] = [Entry()]

    public init() {}

    /// An empty log whose initial membership is `confState` (a snapshot at
    /// index 0 that only carries the membership), for starting a new cluster.
    public init(confState: ConfState) {
        currentSnapshot.metadata.confState = confState
    }

    public func initialState() throws(RaftError) -> (HardState, ConfState) {
        (hardState, currentSnapshot.metadata.confState)
    }

    /// Records the hard state from a Ready.
    public func setHardState(_ state: HardState) { hardState = state }

    private var offset: UInt64 { entries[0].index }

    public func entries(_ lo: UInt64, _ hi: UInt64, maxSizeBytes: UInt64) throws(RaftError) -> [Entry] {
        if lo <= offset { throw .compacted }
        precondition(hi <= lastIndexValue + 1, "entries hi \(hi) out of bound, last index \(lastIndexValue)")
        if entries.count == 1 { throw .unavailable }
        let slice = Array(entries[Int(lo - offset)..<Int(hi - offset)])
        return limitSize(slice, maxSizeBytes)
    }

    public func term(_ index: UInt64) throws(RaftError) -> UInt64 {
        if index < offset { throw .compacted }
        if Int(index - offset) >= entries.count { throw .unavailable }
        return entries[Int(index - offset)].term
    }

    private var lastIndexValue: UInt64 { offset + UInt64(entries.count) - 1 }

    public func lastIndex() throws(RaftError) -> UInt64 { lastIndexValue }

    public func firstIndex() throws(RaftError) -> UInt64 { offset + 1 }

    public func snapshot() throws(RaftError) -> Snapshot { currentSnapshot }

    /// Replaces the whole contents with `snapshot` (a follower receiving one).
    public func applySnapshot(_ snapshot: Snapshot) throws(RaftError) {
        if currentSnapshot.metadata.index >= snapshot.metadata.index { throw .snapshotOutOfDate }
        currentSnapshot = snapshot
        entries = [Entry(term: snapshot.metadata.term, index: snapshot.metadata.index)]
    }

    /// Records a snapshot of the application state at `index` (which must be
    /// applied already) so it can be sent to lagging followers. Call
    /// `compact` afterwards to release the log prefix.
    @discardableResult
    public func createSnapshot(index: UInt64, confState: ConfState?, data: Data) throws(RaftError) -> Snapshot {
        if index <= currentSnapshot.metadata.index { throw .snapshotOutOfDate }
        precondition(index <= lastIndexValue, "snapshot \(index) is past last index \(lastIndexValue)")
        currentSnapshot.metadata.index = index
        currentSnapshot.metadata.term = entries[Int(index - offset)].term
        if let confState { currentSnapshot.metadata.confState = confState }
        currentSnapshot.data = data
        return currentSnapshot
    }

    /// Drops entries before `compactIndex`; it becomes the new dummy entry.
    public func compact(_ compactIndex: UInt64) throws(RaftError) {
        if compactIndex <= offset { throw .compacted }
        precondition(compactIndex <= lastIndexValue, "compact \(compactIndex) is past last index \(lastIndexValue)")
        let i = Int(compactIndex - offset)
        var dummy = entries[i]
        dummy.data = Data()
        dummy.type = .normal
        entries.replaceSubrange(0...i, with: CollectionOfOne(dummy))
    }

    /// Appends entries from a Ready. Entries that overlap the existing log
    /// replace it from their first index on; already compacted ones are ignored.
    public func append(_ newEntries: [Entry]) throws(RaftError) {
        guard let firstNew = newEntries.first else { return }
        let first = offset + 1
        let last = firstNew.index + UInt64(newEntries.count) - 1
        if last < first { return }
        var toAdd = newEntries[...]
        if first > firstNew.index { toAdd = toAdd.dropFirst(Int(first - firstNew.index)) }
        let at = toAdd.first!.index - offset
        if Int(at) < entries.count {
            entries.removeSubrange(Int(at)...)
        } else if Int(at) > entries.count {
            preconditionFailure("missing log entry: last \(lastIndexValue), appending at \(toAdd.first!.index)")
        }
        entries.append(contentsOf: toAdd)
    }
}
