import Foundation
import Raft

/// Linearizable reads, batched: every read queued before a loop pass
/// shares one ReadIndex round; once raft answers with the leader's commit
/// index, the reads wait until this member has applied that far.
///
/// A value owned by the raft loop (no locks). It asks nothing of raft
/// itself: it returns the contexts the loop passes to `readIndex`.
struct ReadIndexBatcher {
    /// A round whose request or answer was lost (a dropped message, a
    /// leader change) is asked again after this long, as etcd does.
    static let retryInterval: Duration = .milliseconds(500)

    struct PendingRound {
        var deadline: ContinuousClock.Instant
        var waiters: [ReadWaiter]
        /// When the ReadIndex request last went out.
        var askedAt: ContinuousClock.Instant
    }

    let memberID: UInt64
    private var rounds: UInt64 = 0
    private var pending: [Data: PendingRound] = [:]
    private var waitingForApply: [(index: UInt64, deadline: ContinuousClock.Instant, waiters: [ReadWaiter])] = []

    init(memberID: UInt64) {
        self.memberID = memberID
    }

    /// A round's context: unique in the cluster, not only on this member —
    /// the leader keeps one pending request per context and ignores a
    /// second with the same bytes, so two followers counting from the same
    /// number would leave one of them waiting for the retry.
    static func context(member: UInt64, round: UInt64) -> Data {
        var context = Data(count: 16)
        context.withUnsafeMutableBytes { bytes in
            bytes.storeBytes(of: member.bigEndian, as: UInt64.self)
            bytes.storeBytes(of: round.bigEndian, toByteOffset: 8, as: UInt64.self)
        }
        return context
    }

    /// Starts a round for `reads`; returns the context to ask raft with.
    mutating func startRound(_ reads: [ReadWaiter], now: ContinuousClock.Instant, deadline: ContinuousClock.Instant) -> Data {
        rounds += 1
        let context = Self.context(member: memberID, round: rounds)
        pending[context] = PendingRound(deadline: deadline, waiters: reads, askedAt: now)
        return context
    }

    /// Raft's answers: each round now waits for apply to reach its index.
    mutating func answered(_ readStates: [ReadState]) {
        for readState in readStates {
            if let round = pending.removeValue(forKey: readState.requestContext) {
                waitingForApply.append((readState.index, round.deadline, round.waiters))
            }
        }
    }

    /// Lets the reads go whose index is applied.
    mutating func release(applied: UInt64) {
        guard !waitingForApply.isEmpty else { return }
        waitingForApply.removeAll { waiting in
            guard waiting.index <= applied else { return false }
            for waiter in waiting.waiters { waiter.resume() }
            return true
        }
    }

    /// On a tick: reads past their deadline get `request timed out`;
    /// returns the contexts of the rounds to ask again (only while a leader
    /// is known), each a new one: a context is never asked twice.
    mutating func expire(now: ContinuousClock.Instant, leaderKnown: Bool) -> [Data] {
        var retry: [Data] = []
        for (context, round) in pending {
            if round.deadline <= now {
                pending[context] = nil
                for waiter in round.waiters { waiter.resume(throwing: EtcdError.timeout) }
            } else if now - round.askedAt >= Self.retryInterval, leaderKnown {
                // Asked again under a new context: an answer to the old
                // request may still be on its way (or a late heartbeat
                // response carrying it), and it only proves leadership at
                // a time before this retry; counted for the retry it
                // released reads with stale data (simulation seed 1670).
                pending[context] = nil
                rounds += 1
                let fresh = Self.context(member: memberID, round: rounds)
                var moved = round
                moved.askedAt = now
                pending[fresh] = moved
                retry.append(fresh)
            }
        }
        waitingForApply.removeAll { waiting in
            guard waiting.deadline <= now else { return false }
            for waiter in waiting.waiters { waiter.resume(throwing: EtcdError.timeout) }
            return true
        }
        return retry
    }

    /// Fails every read (the member stops).
    mutating func failAll(_ error: EtcdError) {
        for (_, round) in pending { for waiter in round.waiters { waiter.resume(throwing: error) } }
        for waiting in waitingForApply { for waiter in waiting.waiters { waiter.resume(throwing: error) } }
        pending.removeAll()
        waitingForApply.removeAll()
    }
}
