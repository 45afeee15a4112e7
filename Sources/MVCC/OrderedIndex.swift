import Backend

/// An ordered map from byte-string keys to key histories: a sorted array of
/// sorted leaves (a two-level B+-tree). Lookups are two binary searches,
/// O(log n); inserts and removals move at most one leaf (`maxLeafCount`
/// entries) plus, on a split or an emptied leaf, the leaf directory
/// (n / maxLeafCount entries). Iteration runs in key order.
struct OrderedIndex {
    static let maxLeafCount = 128

    private struct Leaf {
        var keys: [[UInt8]]
        var values: [KeyIndex]
    }

    private var leaves: [Leaf] = []
    private(set) var count = 0
    /// The same entries by exact key: O(1) lookups for single keys (puts and
    /// point reads); the leaves serve ordered iteration.
    private var exact: [ByteKey: KeyIndex] = [:]

    /// The leaf that holds `key` or would hold it.
    private func leafIndex(for key: [UInt8]) -> Int {
        // Last leaf whose first key <= key (or 0).
        var low = 0
        var high = leaves.count
        while low < high {
            let mid = (low + high) / 2
            if compareBytes(leaves[mid].keys[0], key) <= 0 {
                low = mid + 1
            } else {
                high = mid
            }
        }
        return max(0, low - 1)
    }

    /// Position of the first key >= `key` in `keys`, and whether it is equal.
    private static func lowerBound(_ keys: [[UInt8]], _ key: [UInt8]) -> (Int, Bool) {
        var low = 0
        var high = keys.count
        while low < high {
            let mid = (low + high) / 2
            if compareBytes(keys[mid], key) < 0 {
                low = mid + 1
            } else {
                high = mid
            }
        }
        return (low, low < keys.count && compareBytes(keys[low], key) == 0)
    }

    func get(_ key: [UInt8]) -> KeyIndex? {
        exact[ByteKey(key)]
    }

    /// The entry for `key`, inserted (made by `make`) if missing.
    mutating func getOrInsert(_ key: [UInt8], _ make: () -> KeyIndex) -> KeyIndex {
        if let existing = exact[ByteKey(key)] { return existing }
        let value = make()
        exact[ByteKey(key)] = value
        if leaves.isEmpty {
            leaves.append(Leaf(keys: [key], values: [value]))
            count = 1
            return value
        }
        let l = leafIndex(for: key)
        let (i, found) = OrderedIndex.lowerBound(leaves[l].keys, key)
        precondition(!found, "ordered index out of step with its hash map")
        leaves[l].keys.insert(key, at: i)
        leaves[l].values.insert(value, at: i)
        count += 1
        if leaves[l].keys.count > OrderedIndex.maxLeafCount {
            let half = leaves[l].keys.count / 2
            let right = Leaf(keys: Array(leaves[l].keys[half...]), values: Array(leaves[l].values[half...]))
            leaves[l].keys.removeSubrange(half...)
            leaves[l].values.removeSubrange(half...)
            leaves.insert(right, at: l + 1)
        }
        return value
    }

    /// Removes every entry for which `shouldRemove` is true, in one pass.
    mutating func removeAll(where shouldRemove: (KeyIndex) -> Bool) {
        var rebuilt: [Leaf] = []
        var current = Leaf(keys: [], values: [])
        var kept = 0
        for leaf in leaves {
            for (key, value) in zip(leaf.keys, leaf.values) {
                if shouldRemove(value) {
                    exact[ByteKey(key)] = nil
                    continue
                }
                current.keys.append(key)
                current.values.append(value)
                kept += 1
                if current.keys.count == OrderedIndex.maxLeafCount / 2 {
                    rebuilt.append(current)
                    current = Leaf(keys: [], values: [])
                }
            }
        }
        if !current.keys.isEmpty { rebuilt.append(current) }
        leaves = rebuilt
        count = kept
    }

    /// Visits entries with `from <= key < end` in order (`end` nil: no upper
    /// bound) until `body` returns false.
    func forEach(from: [UInt8], end: [UInt8]?, _ body: (KeyIndex) throws -> Bool) rethrows {
        guard !leaves.isEmpty else { return }
        var l = leafIndex(for: from)
        var (i, _) = OrderedIndex.lowerBound(leaves[l].keys, from)
        while l < leaves.count {
            let leaf = leaves[l]
            while i < leaf.keys.count {
                if let end, compareBytes(leaf.keys[i], end) >= 0 { return }
                if try !body(leaf.values[i]) { return }
                i += 1
            }
            l += 1
            i = 0
        }
    }

    /// Visits every entry in order.
    func forEach(_ body: (KeyIndex) throws -> Void) rethrows {
        for leaf in leaves {
            for value in leaf.values { try body(value) }
        }
    }
}
