@testable import EtcdClient
import Testing

/// The wake-up a watch's producer waits on while the caller's buffer is full.
@Suite struct TakenSignalTests {
    @Test(.timeLimit(.minutes(1))) func aSignalWakesTheWaiter() async {
        let taken = TakenSignal()
        let woke = Task {
            await taken.wait()
            return true
        }
        taken.signal()
        #expect(await woke.value)
    }

    /// A response taken between a refused yield and the wait is not missed:
    /// the signal is kept, and only one.
    @Test(.timeLimit(.minutes(1))) func aSignalWithNobodyWaitingIsKeptForOneWait() async {
        let taken = TakenSignal()
        taken.signal()
        taken.signal()
        await taken.wait()
        let second = Task { await taken.wait() }
        // The second wait needs a new signal (the two above count as one).
        taken.signal()
        await second.value
    }

    /// A producer waiting for room while the caller stops iterating ends.
    @Test(.timeLimit(.minutes(1))) func aCancelledProducerStopsWaiting() async {
        let (stream, continuation) = AsyncThrowingStream<Int, any Error>.makeStream(bufferingPolicy: .bufferingOldest(1))
        let taken = TakenSignal()
        #expect(await continuation.yieldWaiting(1, taken: taken))
        let producer = Task { await continuation.yieldWaiting(2, taken: taken) }
        producer.cancel()
        #expect(await producer.value == false)
        _ = stream
    }

    /// The buffer full, the producer waits and goes on as soon as the
    /// consumer takes one (no timer involved).
    @Test(.timeLimit(.minutes(1))) func theProducerGoesOnWhenOneIsTaken() async throws {
        let (stream, continuation) = AsyncThrowingStream<Int, any Error>.makeStream(bufferingPolicy: .bufferingOldest(2))
        let taken = TakenSignal()
        let producer = Task {
            for i in 0..<100 { guard await continuation.yieldWaiting(i, taken: taken) else { return false } }
            continuation.finish()
            return true
        }
        var iterator = stream.makeAsyncIterator()
        var seen: [Int] = []
        while let value = try await iterator.next() {
            seen.append(value)
            taken.signal()
        }
        #expect(await producer.value)
        #expect(seen == Array(0..<100))
    }
}
