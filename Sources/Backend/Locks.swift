#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A reader/writer lock over `pthread_rwlock_t`, preferring writers so that a
/// steady stream of readers cannot starve a map resize. Readers must not
/// nest: a second `readLock` on the same thread can deadlock behind a
/// waiting writer.
public final class ReadWriteLock: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>

    public init() {
        lock = .allocate(capacity: 1)
        var attr = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attr)
        #if canImport(Glibc)
        pthread_rwlockattr_setkind_np(&attr, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        #endif
        let rc = pthread_rwlock_init(lock, &attr)
        pthread_rwlockattr_destroy(&attr)
        precondition(rc == 0, "pthread_rwlock_init failed: \(rc)")
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    public func readLock() { pthread_rwlock_rdlock(lock) }
    public func writeLock() { pthread_rwlock_wrlock(lock) }
    public func unlock() { pthread_rwlock_unlock(lock) }

    public func withReadLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        readLock()
        defer { unlock() }
        return try body()
    }

    public func withWriteLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        writeLock()
        defer { unlock() }
        return try body()
    }
}
