import Backend

/// Distinct key intervals `[start, end)` (`end` nil: no upper bound), each
/// with a value, answering "which intervals contain this key" (a stabbing
/// query) for the watchers of ranges.
///
/// The intervals are kept sorted by (start, end) in plain arrays. Over that
/// order sits a segment tree whose nodes name the entry with the greatest end
/// in their span. A query walks only into nodes that lie in the prefix of
/// entries starting at or before the key (found by binary search) and whose
/// greatest end lies beyond the key, so it costs O((m + 1) log n) for m
/// matches. Adding or removing an interval shifts the arrays (O(n)) and marks
/// the tree stale; the next query rebuilds it (O(n)). n counts distinct
/// intervals: watchers of the same range share one entry, and creating or
/// cancelling watchers is rare next to writes.
struct WatchIntervalIndex<Value> {
    private(set) var starts: [[UInt8]] = []
    private(set) var ends: [[UInt8]?] = []
    private(set) var values: [Value] = []
    /// Node k covers a span of entries; `tree[k]` is the entry in it with
    /// the greatest end. Node 1 is the root; children of k are 2k and 2k+1.
    private var tree: [Int32] = []
    private var stale = false

    var count: Int { starts.count }
    var isEmpty: Bool { starts.isEmpty }

    /// Order of interval ends; nil (no bound) is greater than any key.
    static func compareEnds(_ a: [UInt8]?, _ b: [UInt8]?) -> Int {
        switch (a, b) {
        case (nil, nil): return 0
        case (nil, _): return 1
        case (_, nil): return -1
        case let (a?, b?): return compareBytes(a, b)
        }
    }

    /// Whether an interval ending at `end` reaches past `key`.
    @inline(__always)
    private static func reaches(_ end: [UInt8]?, beyond key: [UInt8]) -> Bool {
        guard let end else { return true }
        return compareBytes(key, end) < 0
    }

    /// Position of the first entry >= (start, end), and whether it is equal.
    private func lowerBound(_ start: [UInt8], _ end: [UInt8]?) -> (Int, Bool) {
        var low = 0
        var high = starts.count
        while low < high {
            let mid = (low + high) / 2
            var order = compareBytes(starts[mid], start)
            if order == 0 { order = Self.compareEnds(ends[mid], end) }
            if order < 0 {
                low = mid + 1
            } else {
                high = mid
            }
        }
        let found = low < starts.count && starts[low] == start && Self.compareEnds(ends[low], end) == 0
        return (low, found)
    }

    /// The position of exactly this interval.
    func find(_ start: [UInt8], _ end: [UInt8]?) -> Int? {
        let (i, found) = lowerBound(start, end)
        return found ? i : nil
    }

    /// Adds an interval that is not present yet.
    mutating func insert(_ start: [UInt8], _ end: [UInt8]?, _ value: Value) {
        let (i, found) = lowerBound(start, end)
        precondition(!found, "interval index: interval added twice")
        starts.insert(start, at: i)
        ends.insert(end, at: i)
        values.insert(value, at: i)
        stale = true
    }

    mutating func remove(at i: Int) {
        starts.remove(at: i)
        ends.remove(at: i)
        values.remove(at: i)
        stale = true
    }

    /// Calls `body` with the position of every interval containing `key`,
    /// in ascending order.
    mutating func stab(_ key: [UInt8], _ body: (Int) -> Void) {
        if starts.isEmpty { return }
        if stale { rebuild() }
        // Entries [0, prefix) start at or before the key.
        var low = 0
        var high = starts.count
        while low < high {
            let mid = (low + high) / 2
            if compareBytes(starts[mid], key) <= 0 {
                low = mid + 1
            } else {
                high = mid
            }
        }
        if low == 0 { return }
        visit(1, 0, starts.count, prefix: low, key, body)
    }

    private func visit(_ node: Int, _ lo: Int, _ hi: Int, prefix: Int, _ key: [UInt8], _ body: (Int) -> Void) {
        if lo >= prefix { return }
        guard Self.reaches(ends[Int(tree[node])], beyond: key) else { return }
        if hi - lo == 1 {
            body(lo)
            return
        }
        let mid = (lo + hi) / 2
        visit(2 * node, lo, mid, prefix: prefix, key, body)
        visit(2 * node + 1, mid, hi, prefix: prefix, key, body)
    }

    private mutating func rebuild() {
        stale = false
        tree = Array(repeating: 0, count: max(2, 4 * starts.count))
        if !starts.isEmpty { build(1, 0, starts.count) }
    }

    private mutating func build(_ node: Int, _ lo: Int, _ hi: Int) {
        if hi - lo == 1 {
            tree[node] = Int32(lo)
            return
        }
        let mid = (lo + hi) / 2
        build(2 * node, lo, mid)
        build(2 * node + 1, mid, hi)
        let left = Int(tree[2 * node])
        let right = Int(tree[2 * node + 1])
        tree[node] = Int32(Self.compareEnds(ends[left], ends[right]) >= 0 ? left : right)
    }
}
