/// A binary min-heap of per-lease deadlines holding at most one entry per
/// lease, so a lease's deadline can be moved or dropped in O(log n).
/// Entries with equal deadlines come out by ascending lease id, which keeps
/// the order deterministic.
struct DeadlineQueue {
    struct Entry: Equatable {
        var id: Int64
        var deadline: Duration
    }

    private var heap: [Entry] = []
    /// Where each lease's entry sits in `heap`.
    private var positions: [Int64: Int] = [:]

    init() {}

    /// Builds a queue from entries with distinct ids in O(n).
    init(_ entries: [Entry]) {
        heap = entries
        positions.reserveCapacity(entries.count)
        for (index, entry) in entries.enumerated() {
            positions[entry.id] = index
        }
        precondition(positions.count == heap.count, "DeadlineQueue: duplicate lease id")
        var index = heap.count / 2
        while index > 0 {
            index -= 1
            siftDown(index)
        }
    }

    var count: Int { heap.count }
    var isEmpty: Bool { heap.isEmpty }
    /// The entry with the earliest deadline.
    var first: Entry? { heap.first }

    func deadline(of id: Int64) -> Duration? {
        positions[id].map { heap[$0].deadline }
    }

    /// Inserts the lease's entry or moves it to `deadline`.
    mutating func set(_ id: Int64, to deadline: Duration) {
        if let index = positions[id] {
            let old = heap[index].deadline
            heap[index].deadline = deadline
            if deadline < old { siftUp(index) } else { siftDown(index) }
        } else {
            heap.append(Entry(id: id, deadline: deadline))
            positions[id] = heap.count - 1
            siftUp(heap.count - 1)
        }
    }

    /// Drops the lease's entry, if any.
    mutating func remove(_ id: Int64) {
        guard let index = positions.removeValue(forKey: id) else { return }
        let last = heap.count - 1
        if index != last {
            heap[index] = heap[last]
            positions[heap[index].id] = index
        }
        heap.removeLast()
        if index < heap.count {
            siftUp(index)
            siftDown(index)
        }
    }

    mutating func popFirst() -> Entry? {
        guard let entry = heap.first else { return nil }
        remove(entry.id)
        return entry
    }

    mutating func removeAll() {
        heap.removeAll()
        positions.removeAll()
    }

    private static func precedes(_ a: Entry, _ b: Entry) -> Bool {
        a.deadline < b.deadline || (a.deadline == b.deadline && a.id < b.id)
    }

    private mutating func swapEntries(_ i: Int, _ j: Int) {
        heap.swapAt(i, j)
        positions[heap[i].id] = i
        positions[heap[j].id] = j
    }

    private mutating func siftUp(_ start: Int) {
        var child = start
        while child > 0 {
            let parent = (child - 1) / 2
            guard Self.precedes(heap[child], heap[parent]) else { return }
            swapEntries(child, parent)
            child = parent
        }
    }

    private mutating func siftDown(_ start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1
            guard left < heap.count else { return }
            var smallest = left
            let right = left + 1
            if right < heap.count, Self.precedes(heap[right], heap[left]) { smallest = right }
            guard Self.precedes(heap[smallest], heap[parent]) else { return }
            swapEntries(parent, smallest)
            parent = smallest
        }
    }
}
