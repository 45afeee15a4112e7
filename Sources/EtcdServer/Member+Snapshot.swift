import Backend
import Bbolt
import Crypto
import EtcdMetrics
import Foundation
import Locks

/// A point-in-time copy of the backend in etcd's snapshot format (a bbolt
/// file), taken by the reader while it is written: a thread of its own lays
/// the file out and writes it from one read transaction
/// (`Backend.streamBbolt`), handing 1 MiB blocks through a `SnapshotPipe` of
/// at most `SnapshotPipe.capacityBlocks` blocks. Nothing is written to disk;
/// the writer waits while the pipe is full, so a slow reader holds the read
/// transaction open (as a slow reader of etcd's snapshot holds bbolt's).
/// Dropping or cancelling the snapshot, or stopping the member, ends the
/// writer at its next block.
///
/// Read it either with `next(limit:)` (blocking: tests, the simulation) or
/// with `nextBlock()` (async: Maintenance.Snapshot), not both.
public final class BackendSnapshot: @unchecked Sendable {
    /// Bytes of the bbolt file (without the SHA-256 trailer), known before
    /// the first byte (etcd sends `remaining_bytes` with the first chunk).
    public let size: Int
    /// Keys across all buckets.
    public let keyCount: Int
    private let pipe: SnapshotPipe
    // The reader's side: used by one reader at a time.
    private var sent = 0
    private var current: BboltBlock?
    private var offsetInCurrent = 0
    /// Told the time from the copy's start to its last byte read
    /// (etcd_disk_backend_snapshot_duration_seconds).
    private let metrics: EtcdMetrics?
    private let started: ContinuousClock.Instant

    init(pipe: SnapshotPipe, layout: BboltWriter.Summary, metrics: EtcdMetrics?, started: ContinuousClock.Instant) {
        self.pipe = pipe
        self.size = layout.byteCount
        self.keyCount = layout.keyCount
        self.metrics = metrics
        self.started = started
    }

    deinit { pipe.cancel() }

    /// Bytes not yet returned.
    public var remaining: Int { size - sent }

    /// Ends the copy early: the writer stops and reads fail.
    public func cancel() { pipe.cancel() }

    /// The next chunk of at most `limit` bytes, or nil at the end; waits for
    /// the writer. Chunks are `limit` bytes except the last.
    public func next(limit: Int) throws -> [UInt8]? {
        precondition(limit > 0)
        var chunk: [UInt8] = []
        while chunk.count < limit {
            if current == nil {
                guard let block = try pipe.take() else { break }
                current = block
                offsetInCurrent = 0
            }
            let block = current!
            let n = min(limit - chunk.count, block.count - offsetInCurrent)
            chunk.append(contentsOf: UnsafeRawBufferPointer(rebasing: block.bytes[offsetInCurrent..<(offsetInCurrent + n)]))
            offsetInCurrent += n
            if offsetInCurrent == block.count { current = nil }
        }
        if chunk.isEmpty {
            try checkComplete()
            return nil
        }
        try account(chunk.count)
        return chunk
    }

    /// The next block as it came from the writer (1 MiB except the last; no
    /// copy), or nil at the end; waits for the writer without blocking a
    /// thread. Cancelling the task cancels the copy.
    public func nextBlock() async throws -> Data? {
        precondition(current == nil, "nextBlock() after next(limit:)")
        guard let block = try await pipe.take() else {
            try checkComplete()
            return nil
        }
        try account(block.count)
        return Data(bytesNoCopy: block.storage.baseAddress!, count: block.count,
                    deallocator: .custom { _, _ in withExtendedLifetime(block) {} })
    }

    /// SHA-256 of the whole file (etcd's snapshot trailer); valid once a
    /// read returned nil.
    public func digest() -> [UInt8] { pipe.digest ?? [] }

    private func account(_ count: Int) throws {
        sent += count
        guard sent <= size else {
            throw BackendError.io(operation: "read snapshot", path: "(snapshot stream)", errno: EIO)
        }
        if sent == size { metrics?.backendSnapshotSeconds.record((ContinuousClock.now - started).timeInSeconds) }
    }

    private func checkComplete() throws {
        guard sent == size, pipe.digest != nil else {
            throw BackendError.io(operation: "read snapshot", path: "(snapshot stream)", errno: EIO)
        }
    }
}

/// The hand-off between the thread that writes a snapshot and its reader: a
/// queue of at most `capacityBlocks` blocks. The writer blocks while it is
/// full; the reader blocks (`take()`) or suspends (`take() async`) while it
/// is empty. After `cancel` the writer's next `push` throws and reads fail.
final class SnapshotPipe: @unchecked Sendable {
    static let capacityBlocks = 8

    private let condition = NSCondition()
    // All below under `condition`.
    private var blocks: [BboltBlock] = []
    private var layout: BboltWriter.Summary?
    private var finalDigest: [UInt8]?
    private var failure: (any Error)?
    private var cancelled = false
    /// An async reader waiting for a block, the end or a failure.
    private var waiter: CheckedContinuation<Void, Never>?

    private enum Next {
        case block(BboltBlock)
        case end
        case wait
    }

    // MARK: writer

    /// Publishes the file's layout; throws if the reader is gone already.
    func setLayout(_ summary: BboltWriter.Summary) throws {
        changed { $0.layout = summary }
        if locked({ cancelled }) { throw CancellationError() }
    }

    /// Queues `block`, waiting while the queue is full.
    func push(_ block: BboltBlock) throws {
        condition.lock()
        while blocks.count >= Self.capacityBlocks, !cancelled { condition.wait() }
        guard !cancelled else {
            condition.unlock()
            throw CancellationError()
        }
        blocks.append(block)
        let waiting = takeWaiter()
        condition.unlock()
        waiting?.resume()
    }

    func finish(digest: [UInt8]) {
        changed { $0.finalDigest = digest }
    }

    func fail(_ error: any Error) {
        changed { $0.failure = error }
    }

    // MARK: reader

    /// Waits until the writer has laid the file out.
    func waitForLayout() throws -> BboltWriter.Summary {
        condition.lock()
        defer { condition.unlock() }
        while layout == nil, failure == nil, !cancelled { condition.wait() }
        if let layout { return layout }
        throw failure ?? CancellationError()
    }

    /// The next block, or nil once the writer finished; blocks the thread.
    func take() throws -> BboltBlock? {
        condition.lock()
        defer { condition.unlock() }
        while true {
            switch try poll() {
            case .block(let block): return block
            case .end: return nil
            case .wait: condition.wait()
            }
        }
    }

    /// The next block, or nil once the writer finished; suspends the task.
    func take() async throws -> BboltBlock? {
        try await withTaskCancellationHandler {
            while true {
                let next = try locked { try poll() }
                switch next {
                case .block(let block): return block
                case .end: return nil
                case .wait:
                    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                        condition.lock()
                        let ready = !blocks.isEmpty || finalDigest != nil || failure != nil || cancelled
                        if !ready { waiter = continuation }
                        condition.unlock()
                        if ready { continuation.resume() }
                    }
                }
            }
        } onCancel: {
            cancel()
        }
    }

    var digest: [UInt8]? { locked { finalDigest } }

    func cancel() {
        changed { $0.cancelled = true }
    }

    // MARK: state

    /// Under the lock.
    private func poll() throws -> Next {
        if cancelled { throw CancellationError() }
        if !blocks.isEmpty {
            let block = blocks.removeFirst()
            condition.broadcast()
            return .block(block)
        }
        if let failure { throw failure }
        return finalDigest != nil ? .end : .wait
    }

    private func takeWaiter() -> CheckedContinuation<Void, Never>? {
        condition.broadcast()
        defer { waiter = nil }
        return waiter
    }

    private func changed(_ body: (SnapshotPipe) -> Void) {
        condition.lock()
        body(self)
        let waiting = takeWaiter()
        condition.unlock()
        waiting?.resume()
    }

    private func locked<T>(_ body: () throws -> T) rethrows -> T {
        condition.lock()
        defer { condition.unlock() }
        return try body()
    }
}

/// The snapshots a member is writing, so that stopping the member ends them
/// (each holds a read transaction that closing the backend would wait for).
final class SnapshotStreams: Sendable {
    private let pipes = Mutex<[ObjectIdentifier: SnapshotPipe]>([:])

    func add(_ pipe: SnapshotPipe) { pipes.withLock { $0[ObjectIdentifier(pipe)] = pipe } }
    func remove(_ pipe: SnapshotPipe) { _ = pipes.withLock { $0.removeValue(forKey: ObjectIdentifier(pipe)) } }
    var count: Int { pipes.withLock { $0.count } }

    func cancelAll() {
        for pipe in pipes.withLock({ Array($0.values) }) { pipe.cancel() }
    }
}

extension Member {
    /// Starts a copy of the backend's current state as a bbolt file (etcd's
    /// snapshot format) on a thread of its own and returns once the file is
    /// laid out (its size known), before its first byte is written. Blocks
    /// for that first pass (call it off the cooperative pool for big stores).
    public func backendSnapshot() throws -> BackendSnapshot {
        let started = ContinuousClock.now
        let pipe = SnapshotPipe()
        let backend = self.backend
        let streams = snapshotStreams
        streams.add(pipe)
        let thread = Thread {
            defer { streams.remove(pipe) }
            // The SHA-256 trailer is computed on a second thread, off the
            // page building: each block goes to the reader and the hasher.
            let hasher = BlockHasher()
            defer { hasher.cancel() }
            do {
                try backend.streamBbolt(layout: { try pipe.setLayout($0) }, emit: { block in
                    try hasher.submit(block)
                    try pipe.push(block)
                })
                pipe.finish(digest: try hasher.finish())
            } catch {
                pipe.fail(error)
            }
        }
        thread.name = "etcd-snapshot"
        thread.start()
        do {
            return BackendSnapshot(pipe: pipe, layout: try pipe.waitForLayout(), metrics: metricsRecorder, started: started)
        } catch {
            pipe.cancel()
            throw error
        }
    }
}

/// SHA-256 over a sequence of blocks, on a thread of its own: `submit`
/// queues a block (waiting while `capacityBlocks` wait to be hashed),
/// `finish` waits for the last and returns the digest. Blocks are not
/// changed once submitted (the writer starts a new one after each), so the
/// hasher and the snapshot's reader share them. After `cancel` the thread
/// ends and `submit`/`finish` throw.
final class BlockHasher: @unchecked Sendable {
    static let capacityBlocks = 8

    private let condition = NSCondition()
    // Under `condition`.
    private var queue: [BboltBlock] = []
    private var closed = false
    private var cancelled = false
    private var digest: [UInt8]?

    init() {
        let thread = Thread { [self] in run() }
        thread.name = "etcd-snapshot-hash"
        thread.start()
    }

    func submit(_ block: BboltBlock) throws {
        condition.lock()
        defer { condition.unlock() }
        while queue.count >= Self.capacityBlocks, !cancelled { condition.wait() }
        if cancelled { throw CancellationError() }
        queue.append(block)
        condition.broadcast()
    }

    /// The digest of every block submitted, once all are hashed.
    func finish() throws -> [UInt8] {
        condition.lock()
        defer { condition.unlock() }
        closed = true
        condition.broadcast()
        while digest == nil, !cancelled { condition.wait() }
        if let digest { return digest }
        throw CancellationError()
    }

    func cancel() {
        condition.lock()
        cancelled = true
        condition.broadcast()
        condition.unlock()
    }

    private func run() {
        var sha = SHA256()
        while true {
            condition.lock()
            while queue.isEmpty, !closed, !cancelled { condition.wait() }
            if cancelled || queue.isEmpty {
                // Cancelled, or closed with everything hashed.
                if !cancelled { digest = Array(sha.finalize()) }
                condition.broadcast()
                condition.unlock()
                return
            }
            let block = queue[0]
            condition.unlock()
            sha.update(bufferPointer: block.bytes)
            condition.lock()
            queue.removeFirst()
            condition.broadcast()
            condition.unlock()
        }
    }
}
