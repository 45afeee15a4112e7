import Testing

@testable import Lease

@Suite struct DeadlineQueueTests {
    /// Random operations against a dictionary model.
    @Test func matchesAModelUnderRandomOperations() {
        var rng = SplitMix64(seed: 42)
        var queue = DeadlineQueue()
        var model: [Int64: Duration] = [:]
        for step in 0..<20_000 {
            let id = Int64(rng.next() % 200)
            switch rng.next() % 4 {
            case 0, 1:
                let deadline = Duration.milliseconds(Int64(rng.next() % 1000))
                queue.set(id, to: deadline)
                model[id] = deadline
            case 2:
                queue.remove(id)
                model[id] = nil
            default:
                let popped = queue.popFirst()
                let expected = model.min { ($0.value, $0.key) < ($1.value, $1.key) }
                #expect(popped?.id == expected?.key && popped?.deadline == expected?.value, "step \(step)")
                if let key = expected?.key { model[key] = nil }
            }
            #expect(queue.count == model.count)
            #expect(queue.deadline(of: id) == model[id])
        }
        let rebuilt = DeadlineQueue(model.map { .init(id: $0.key, deadline: $0.value) })
        var drained: [DeadlineQueue.Entry] = []
        var copy = rebuilt
        while let e = copy.popFirst() { drained.append(e) }
        #expect(drained.map(\.id) == model.sorted { ($0.value, $0.key) < ($1.value, $1.key) }.map(\.key))
    }
}

/// A small deterministic generator for the test.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
