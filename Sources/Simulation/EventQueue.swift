import Raft

/// Every random choice of a run comes from one seeded `SplitMix64` (Raft's),
/// so a seed replays exactly.
extension SplitMix64 {
    /// True with probability `p`.
    mutating func chance(_ p: Double) -> Bool { Double(next() >> 11) / Double(1 << 53) < p }

    /// A uniform integer in `range`.
    mutating func int(_ range: ClosedRange<Int64>) -> Int64 {
        range.lowerBound + Int64(next() % UInt64(range.upperBound - range.lowerBound + 1))
    }

    mutating func index(_ count: Int) -> Int { Int(next() % UInt64(count)) }
}

/// Pending events ordered by (time, insertion order): a binary min-heap.
/// Equal times run in the order they were scheduled, so the order never
/// depends on anything but the seed.
struct EventQueue {
    struct Event {
        var time: Int64
        var sequence: UInt64
        var action: () -> Void
    }

    private var heap: [Event] = []
    private var nextSequence: UInt64 = 0

    mutating func schedule(at time: Int64, _ action: @escaping () -> Void) {
        heap.append(Event(time: time, sequence: nextSequence, action: action))
        nextSequence += 1
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard Self.before(heap[child], heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    var nextTime: Int64? { heap.first?.time }

    mutating func pop() -> Event? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let event = heap.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < heap.count, Self.before(heap[left], heap[smallest]) { smallest = left }
            if right < heap.count, Self.before(heap[right], heap[smallest]) { smallest = right }
            if smallest == parent { break }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
        return event
    }

    private static func before(_ a: Event, _ b: Event) -> Bool {
        a.time != b.time ? a.time < b.time : a.sequence < b.sequence
    }
}
