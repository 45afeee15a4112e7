import Backend
import Crypto
import EtcdMetrics
import Foundation
import Locks

/// A point-in-time copy of the backend in etcd's snapshot format (a bbolt
/// file), read back in chunks for Maintenance.Snapshot. The file lives
/// beside the backend only while it is written: it is unlinked as soon as it
/// is open, so nothing is left behind if the stream or the process dies.
public final class BackendSnapshot: @unchecked Sendable {
    /// Bytes of the bbolt file (without the SHA-256 trailer).
    public let size: Int
    /// Keys across all buckets.
    public let keyCount: Int
    private let fd: Int32
    private var sent = 0
    private var sha = SHA256()
    /// Told the time from the copy's start to its last byte read
    /// (etcd_disk_backend_snapshot_duration_seconds).
    private let metrics: EtcdMetrics?
    private let started: ContinuousClock.Instant

    init(fd: Int32, size: Int, keyCount: Int, metrics: EtcdMetrics? = nil, started: ContinuousClock.Instant = .now) {
        self.started = started
        self.fd = fd
        self.size = size
        self.keyCount = keyCount
        self.metrics = metrics
    }

    deinit { close(fd) }

    /// Bytes not yet returned by `next`.
    public var remaining: Int { size - sent }

    /// The next chunk of at most `limit` bytes, or nil at the end. Each chunk
    /// also feeds the SHA-256 that `digest` returns.
    public func next(limit: Int) throws -> [UInt8]? {
        guard remaining > 0 else { return nil }
        let count = min(limit, remaining)
        var chunk = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(sent + done)) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { throw BackendError.io(operation: "read snapshot", path: "(unlinked snapshot file)", errno: n < 0 ? errno : EIO) }
            done += n
        }
        sent += count
        sha.update(data: chunk)
        if sent == size { metrics?.backendSnapshotSeconds.record((ContinuousClock.now - started).timeInSeconds) }
        return chunk
    }

    /// SHA-256 of everything `next` returned: etcd's snapshot trailer.
    public func digest() -> [UInt8] { Array(sha.finalize()) }
}

private let snapshotSequence = Atomic<Int>(0)

extension Member {
    /// Writes the backend's current state as a bbolt file (etcd's snapshot
    /// format) next to the backend and opens it for streaming. Blocks while
    /// the file is written (run it off the cooperative pool for big stores).
    public func backendSnapshot() throws -> BackendSnapshot {
        let started = ContinuousClock.now
        let number = snapshotSequence.add(1, ordering: .relaxed).newValue
        let path = backend.path + ".snapshot-\(getpid())-\(number).bbolt"
        unlink(path)
        let summary = try backend.writeBbolt(to: path, sync: false)
        let fd = openForReading(path)
        let code = errno
        unlink(path)
        guard fd >= 0 else { throw BackendError.io(operation: "open", path: path, errno: code) }
        return BackendSnapshot(fd: fd, size: summary.byteCount, keyCount: summary.keyCount, metrics: metricsRecorder, started: started)
    }
}

private func openForReading(_ path: String) -> Int32 {
    open(path, O_RDONLY | O_CLOEXEC)
}
