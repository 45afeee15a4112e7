import Auth
import EtcdProto
import Foundation
import Locks
import Raft

/// Where other threads hand work to the raft loop, and where the loop
/// publishes what they may read: proposals with their waiters, conf
/// changes, linearizable reads, peer messages and reports, a leadership
/// transfer, the stop flag; the term, leader and indexes for headers and
/// Status. One mutex guards it all; the loop takes its whole input in one
/// critical section per pass.
///
/// Waking the loop: it raises `loopMaySleep` (holding `wakeup`'s lock)
/// before it looks for input and sleeps on `wakeup`; a producer queues
/// under the mutex, then `signal()`s — which skips the lock and the
/// wake-up while the loop is busy, since the loop will look again anyway.
final class Mailbox: Sendable {
    /// Proposals waiting in line for the loop; bounded so a flood of writes
    /// gets etcd's `too many requests` instead of unbounded memory.
    static let maxQueuedProposals = 10_000

    struct Waiter {
        var complete: @Sendable (Result<ApplyResult, any Error>) -> Void
        var deadline: ContinuousClock.Instant
    }

    struct State {
        var proposals: [QueuedProposal] = []
        var confChanges: [(id: UInt64, change: ConfChange)] = []
        var waiters: [UInt64: Waiter] = [:]
        var readWaiters: [ReadWaiter] = []
        /// MoveLeader: hand leadership to this member.
        var transferTo: UInt64?
        /// From the peer transport, for the loop.
        var incoming: [Raft.Message] = []
        var unreachable: Set<UInt64> = []
        var snapshotReports: [(peer: UInt64, delivered: Bool)] = []
        /// Maintenance.Defragment calls waiting for the loop.
        var defragWaiters: [DefragWaiter] = []
        var stopped = false
        /// The loop has shut down (tasks waiting in `waitUntilStopped`).
        var finished = false
        var stopWaiters: [CheckedContinuation<Void, Never>] = []
        /// Published by the loop.
        var status = LoopStatus()
    }

    /// What the loop publishes after each Ready, for other threads.
    struct LoopStatus {
        var term: UInt64 = 0
        var leader: UInt64 = 0
        var committedIndex: UInt64 = 0
        var appliedIndex: UInt64 = 0
        /// On the leader, for MemberPromote: each learner's match index and
        /// the leader's last index.
        var learnerProgress: [UInt64: (match: UInt64, leaderLast: UInt64)] = [:]
        /// Requests applied from the message this member proposed as
        /// leader, and requests decoded from their raft entry.
        var appliedFromMemory = 0
        var appliedDecoded = 0
        /// ReadIndex rounds asked again (no answer within the retry time).
        var readIndexRetries = 0
        /// Ticks the loop has taken (tests await one instead of sleeping).
        var ticks = 0
        /// Auto-compactions this member finished as leader (refusals as
        /// already compacted included).
        var autoCompactions = 0
    }

    /// One pass's input, taken at once.
    struct Input {
        var proposals: [QueuedProposal]
        var confChanges: [(id: UInt64, change: ConfChange)]
        var reads: [ReadWaiter]
        var incoming: [Raft.Message]
        var unreachable: Set<UInt64>
        var snapshotReports: [(peer: UInt64, delivered: Bool)]
        var transferTo: UInt64?
        var defragWaiters: [DefragWaiter]
        var stopped: Bool
    }

    typealias DefragWaiter = @Sendable (Result<Void, any Error>) -> Void

    let state: Mutex<State>
    /// Whom the loop has heard from, and since when (published each tick):
    /// apart from `LoopStatus`, whose readers (headers, Status) have no use
    /// for it, so only the strict reconfiguration check copies it.
    let peerContact = Mutex(PeerContact(gap: .seconds(1)))
    let wakeup = NSCondition()
    private let loopMaySleep = Atomic<Bool>(false)

    init(_ status: LoopStatus) {
        var initial = State()
        initial.status = status
        state = Mutex(initial)
    }

    // MARK: - Producers (any thread)

    /// Whether a proposal may still be queued: etcd's errors for a stopped
    /// member and a full queue. A cheap check before encoding.
    func checkAccepting() throws(EtcdError) {
        try state.withLock { state throws(EtcdError) in
            if state.stopped { throw EtcdError.stopped }
            if state.proposals.count >= Self.maxQueuedProposals { throw EtcdError.tooManyRequests }
        }
    }

    /// Queues a proposal; `complete` runs once, on the loop's thread (or at
    /// once when the member has stopped or the queue is full). Without a
    /// waiter (the loop's own proposals) nobody hears the result.
    func enqueue(_ proposal: QueuedProposal, deadline: ContinuousClock.Instant,
                 _ complete: (@Sendable (Result<ApplyResult, any Error>) -> Void)?) {
        enqueue(id: proposal.id, deadline: deadline, complete) { state in
            if state.proposals.count >= Self.maxQueuedProposals { return EtcdError.tooManyRequests }
            state.proposals.append(proposal)
            return nil
        }
    }

    func enqueue(confChange change: ConfChange, deadline: ContinuousClock.Instant,
                 _ complete: @escaping @Sendable (Result<ApplyResult, any Error>) -> Void) {
        enqueue(id: change.id, deadline: deadline, complete) { state in
            state.confChanges.append((change.id, change))
            return nil
        }
    }

    private func enqueue(id: UInt64, deadline: ContinuousClock.Instant,
                         _ complete: (@Sendable (Result<ApplyResult, any Error>) -> Void)?,
                         _ add: (inout State) -> EtcdError?) {
        let refusal = state.withLock { state -> EtcdError? in
            if state.stopped { return EtcdError.stopped }
            if let refusal = add(&state) { return refusal }
            if let complete { state.waiters[id] = Waiter(complete: complete, deadline: deadline) }
            return nil
        }
        if let refusal { complete?(.failure(refusal)) } else { signal() }
    }

    /// Queues a linearizable read for the next ReadIndex round.
    func enqueueRead(_ done: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        let accepted = state.withLock { state -> Bool in
            if state.stopped { return false }
            state.readWaiters.append(ReadWaiter(done: done))
            return true
        }
        if accepted { signal() } else { done(.failure(EtcdError.stopped)) }
    }

    /// Asks the loop to defragment the backend; `done` runs on the loop's
    /// thread when it has (or at once when the member has stopped).
    func enqueueDefragment(_ done: @escaping DefragWaiter) {
        let accepted = state.withLock { state -> Bool in
            if state.stopped { return false }
            state.defragWaiters.append(done)
            return true
        }
        if accepted { signal() } else { done(.failure(EtcdError.stopped)) }
    }

    /// Stops waiting for request `id` (its entry may still commit).
    func cancel(_ id: UInt64) {
        let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
        waiter?.complete(.failure(CancellationError()))
    }

    /// Queues loop input from the transport or an API call, and wakes the loop.
    func post(_ change: (inout State) -> Void) {
        state.withLock { change(&$0) }
        signal()
    }

    func stop() { post { $0.stopped = true } }

    /// Wakes the loop after input was queued. The loop raises
    /// `loopMaySleep` before it looks at the state (under `wakeup`'s lock),
    /// so if the flag reads false here the loop will still see this input;
    /// when it reads true, taking the lock waits until the loop is really
    /// waiting, and the signal goes out after the unlock so the loop does
    /// not wake only to block on the lock this thread still holds.
    func signal() {
        guard loopMaySleep.load(ordering: .relaxed) else { return }
        wakeup.lock()
        wakeup.unlock()
        wakeup.signal()
    }

    var status: LoopStatus { state.withLock { $0.status } }

    // MARK: - The loop's side

    /// Sleeps until input arrives or `timeout` passes.
    func waitForInput(timeout: Duration) {
        wakeup.lock()
        loopMaySleep.store(true, ordering: .relaxed)
        if !hasPendingInput {
            _ = wakeup.wait(until: Date().addingTimeInterval(max(0, timeout.secondsDouble)))
        }
        loopMaySleep.store(false, ordering: .relaxed)
        wakeup.unlock()
    }

    /// Whether the loop has something to do before its next tick.
    var hasPendingInput: Bool {
        state.withLock {
            !($0.proposals.isEmpty && $0.readWaiters.isEmpty && $0.incoming.isEmpty && $0.confChanges.isEmpty
                && $0.unreachable.isEmpty && $0.snapshotReports.isEmpty && $0.transferTo == nil
                && $0.defragWaiters.isEmpty && !$0.stopped)
        }
    }

    /// Takes everything queued.
    func takeInput() -> Input {
        state.withLock { state in
            defer {
                state.proposals.removeAll(keepingCapacity: true)
                state.readWaiters.removeAll(keepingCapacity: true)
                state.incoming.removeAll(keepingCapacity: true)
                state.confChanges.removeAll()
                state.unreachable.removeAll()
                state.snapshotReports.removeAll()
                state.transferTo = nil
                state.defragWaiters.removeAll()
            }
            return Input(proposals: state.proposals, confChanges: state.confChanges, reads: state.readWaiters,
                         incoming: state.incoming, unreachable: state.unreachable,
                         snapshotReports: state.snapshotReports, transferTo: state.transferTo,
                         defragWaiters: state.defragWaiters, stopped: state.stopped)
        }
    }

    /// Answers the waiter of request `id`, if this member has one.
    func complete(_ id: UInt64, _ result: Result<ApplyResult, EtcdError>) {
        guard let waiter = state.withLock({ $0.waiters.removeValue(forKey: id) }) else { return }
        waiter.complete(result.mapError { $0 as any Error })
    }

    /// Waiters past their deadline get etcd's `request timed out` (a
    /// proposal lost in a leader change).
    @discardableResult
    func expireWaiters(now: ContinuousClock.Instant) -> Int {
        let expired = state.withLock { state -> [Waiter] in
            guard state.waiters.values.contains(where: { $0.deadline <= now }) else { return [] }
            var expired: [Waiter] = []
            state.waiters = state.waiters.filter { _, waiter in
                if waiter.deadline <= now { expired.append(waiter); return false }
                return true
            }
            return expired
        }
        for waiter in expired { waiter.complete(.failure(EtcdError.timeout)) }
        return expired.count
    }

    func publish(_ update: (inout LoopStatus) -> Void) {
        state.withLock { update(&$0.status) }
    }

    /// The loop has shut down: every waiter gets `server stopped`, and
    /// whoever waits for the stop is woken.
    func finish() {
        let (waiters, reads, defrags) = state.withLock { state in
            defer { state.waiters.removeAll(); state.readWaiters.removeAll(); state.defragWaiters.removeAll() }
            return (Array(state.waiters.values), state.readWaiters, state.defragWaiters)
        }
        for waiter in waiters { waiter.complete(.failure(EtcdError.stopped)) }
        for read in reads { read.resume(throwing: EtcdError.stopped) }
        for defrag in defrags { defrag(.failure(EtcdError.stopped)) }
        let stopWaiters = state.withLock { state in
            state.finished = true
            state.stopped = true
            defer { state.stopWaiters.removeAll() }
            return state.stopWaiters
        }
        for waiter in stopWaiters { waiter.resume() }
        // Wake `waitUntilFinished`, which waits on the same condition.
        wakeup.lock()
        wakeup.broadcast()
        wakeup.unlock()
    }

    var isFinished: Bool { state.withLock { $0.finished } }

    /// Blocks the calling thread until the loop has shut down.
    func waitUntilFinished() {
        wakeup.lock()
        while !isFinished { _ = wakeup.wait(until: Date().addingTimeInterval(0.05)) }
        wakeup.unlock()
    }

    /// Returns once the loop has shut down.
    func finished() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let finished = state.withLock { state -> Bool in
                if state.finished { return true }
                state.stopWaiters.append(continuation)
                return false
            }
            if finished { continuation.resume() }
        }
    }
}

/// A linearizable read waiting for its ReadIndex round and for apply.
struct ReadWaiter: Sendable {
    let done: @Sendable (Result<Void, any Error>) -> Void
    func resume() { done(.success(())) }
    func resume(throwing error: any Error) { done(.failure(error)) }
}

/// A request on its way to raft: its id, its encoding (an
/// InternalRaftRequest's bytes), and the request itself, so that
/// applying it on this member need not decode it again.
struct QueuedProposal {
    var id: UInt64
    var data: Data
    var request: ProposedRequest
    /// Who proposed it (auth enabled), as the entry's header says.
    var auth: AuthInfo? = nil
}

extension EtcdError {
    public static let tooManyRequests = EtcdError(.resourceExhausted, "etcdserver: too many requests")
}
