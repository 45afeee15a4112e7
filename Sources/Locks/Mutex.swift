// The project's `Mutex`: every module imports `Locks` instead of
// `Synchronization` (which this module re-exports, so `Atomic` comes along).
//
// In a normal build `Mutex` is `Synchronization.Mutex` itself: a typealias,
// no wrapper, no cost.
//
// Built with `-Xswiftc -DTSAN_LOCKS` (scripts/tsan.sh does), `Mutex` is a
// small class over a `pthread_mutex_t`. ThreadSanitizer on Linux does not see
// the hand-off of a contended `Synchronization.Mutex` (the kernel's futex
// passes the lock between threads without a call TSan intercepts), so it
// reports every pair of accesses made under one such Mutex from two threads
// as a race. It intercepts `pthread_mutex_lock`/`unlock`, so with this class
// the only reports left are real ones. Same API as the parts of
// `Synchronization.Mutex` we use: `init(_:)`, `withLock`,
// `withLockIfAvailable`.
@_exported import Synchronization

#if TSAN_LOCKS
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

public final class Mutex<Value: ~Copyable>: @unchecked Sendable {
    // Both on the heap: a pthread mutex must not move once initialised.
    private let lock: UnsafeMutablePointer<pthread_mutex_t>
    private let value: UnsafeMutablePointer<Value>

    public init(_ initialValue: consuming sending Value) {
        lock = .allocate(capacity: 1)
        lock.initialize(to: pthread_mutex_t())
        precondition(pthread_mutex_init(lock, nil) == 0, "pthread_mutex_init failed")
        value = .allocate(capacity: 1)
        value.initialize(to: initialValue)
    }

    deinit {
        value.deinitialize(count: 1)
        value.deallocate()
        precondition(pthread_mutex_destroy(lock) == 0, "pthread_mutex_destroy failed")
        lock.deallocate()
    }

    public func withLock<Result: ~Copyable, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        precondition(pthread_mutex_lock(lock) == 0, "pthread_mutex_lock failed")
        defer { precondition(pthread_mutex_unlock(lock) == 0, "pthread_mutex_unlock failed") }
        return try body(&value.pointee)
    }

    public func withLockIfAvailable<Result: ~Copyable, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result? {
        guard pthread_mutex_trylock(lock) == 0 else { return nil }
        defer { precondition(pthread_mutex_unlock(lock) == 0, "pthread_mutex_unlock failed") }
        return try body(&value.pointee)
    }
}
#else
public typealias Mutex<Value: ~Copyable> = Synchronization.Mutex<Value>
#endif
