@testable import EtcdServer
import Foundation
import Raft
import Locks
import Testing

/// The read-index batcher never asks raft twice with the same context: an
/// answer to an earlier request proves leadership only up to that request,
/// so it must not release reads that were asked again later.
@Suite struct ReadIndexBatcherTests {
    final class Outcomes: Sendable {
        let results = Mutex<[String]>([])
        func waiter(_ name: String) -> ReadWaiter {
            ReadWaiter { result in
                self.results.withLock { $0.append("\(name): \((try? result.get()) != nil ? "released" : "failed")") }
            }
        }
        var all: [String] { results.withLock { $0 } }
    }

    @Test func aRetriedRoundGetsANewContextAndTheOldAnswerIsIgnored() {
        let outcomes = Outcomes()
        var batcher = ReadIndexBatcher(memberID: 7)
        let start = ContinuousClock.now
        let first = batcher.startRound([outcomes.waiter("read")], now: start, deadline: start + .seconds(5))

        // No answer within the retry interval: asked again, under a new context.
        let retried = batcher.expire(now: start + ReadIndexBatcher.retryInterval, leaderKnown: true)
        #expect(retried.count == 1)
        #expect(retried.first != first)

        // A late answer to the first request releases nothing...
        batcher.answered([ReadState(index: 3, requestContext: first)])
        batcher.release(applied: 100)
        #expect(outcomes.all.isEmpty)

        // ...the answer to the retry does.
        batcher.answered([ReadState(index: 4, requestContext: retried[0])])
        batcher.release(applied: 3)
        #expect(outcomes.all.isEmpty)
        batcher.release(applied: 4)
        #expect(outcomes.all == ["read: released"])

        // A second retry of another round gets yet another context.
        let second = batcher.startRound([outcomes.waiter("other")], now: start, deadline: start + .seconds(5))
        let again = batcher.expire(now: start + ReadIndexBatcher.retryInterval * 2, leaderKnown: true)
        let third = batcher.expire(now: start + ReadIndexBatcher.retryInterval * 4, leaderKnown: true)
        #expect(Set([second] + again + third).count == 3)
    }
}
