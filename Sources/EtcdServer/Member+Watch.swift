import Foundation
import Locks
import MVCC

/// Keeps the watchable store moving outside the raft loop: retries
/// watchers whose stream was full (every 10 ms) and catches up watchers
/// that are behind from the backend (every 100 ms, and every 10 ms while
/// some are behind), each in bounded steps.
/// A thread of its own, so the backend reads of a catch-up never hold up
/// the raft loop or the cooperative pool.
final class WatchSyncThread: Sendable {
    private let store: WatchableStore
    private let stopped = Mutex(false)
    private let done = NSCondition()
    private let exited = Mutex(false)

    static let victimRetryMilliseconds = 10
    static let syncEveryRetries = 10

    init(store: WatchableStore) {
        self.store = store
    }

    func start() {
        let thread = Thread { [self] in run() }
        thread.name = "etcd-watch-sync"
        thread.start()
    }

    func stop() {
        if stopped.withLock({ value in defer { value = true }; return value }) { return }
        done.lock()
        done.broadcast()
        while !exited.withLock({ $0 }) { _ = done.wait(until: Date().addingTimeInterval(0.05)) }
        done.unlock()
    }

    private func run() {
        var round = 0
        var behind = 0
        while !stopped.withLock({ $0 }) {
            done.lock()
            _ = done.wait(until: Date().addingTimeInterval(Double(Self.victimRetryMilliseconds) / 1000))
            done.unlock()
            store.retryVictims()
            round += 1
            // A long backlog is worked off in bounded rounds, one per wakeup
            // while any watcher is still behind.
            if round % Self.syncEveryRetries == 0 || behind > 0 {
                behind = store.syncUnsynced()
            }
        }
        exited.withLock { $0 = true }
        done.lock()
        done.broadcast()
        done.unlock()
    }
}
