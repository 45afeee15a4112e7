import Foundation
import Locks
import NIOCore
import NIOPosix

/// The sending side towards one peer: its URLs, the bounded queue of
/// outgoing messages and the long-lived message connection, which lives on
/// `loop`.
///
/// Link states: `connecting` (messages queue up to the bound), `connected`
/// (a drain task writes the queue), `down` after a failed connect (sends are
/// dropped at once and reported; a reconnect is scheduled with backoff).
final class Peer: Sendable {
    static let initialBackoff: Duration = .milliseconds(50)
    /// Target size of the buffers that message frames are packed into.
    static let packBytes = 64 << 10

    let id: UInt64
    let loop: any EventLoop
    let core: TransportCore

    enum Link {
        case connecting
        case connected(any Channel, url: String)
        case down
    }

    struct State {
        var urls: [String]
        /// Index of the URL that worked last; dials start there.
        var preferred = 0
        var queue = CircularBuffer<Data>()
        /// Messages taken out of `queue` by the running drain (still count towards the bound).
        var draining = 0
        var drainScheduled = false
        var link = Link.down
        var backoff = Peer.initialBackoff
        var reconnect: Scheduled<Void>?
        /// Bumped by every connect attempt so stale callbacks are ignored.
        var generation: UInt64 = 0
        var closed = false
        var snapshotInFlight = false
        var snapshotChannel: (any Channel)?
    }
    let state: Mutex<State>

    init(id: UInt64, urls: [String], loop: any EventLoop, core: TransportCore) {
        self.id = id
        self.loop = loop
        self.core = core
        state = Mutex(State(urls: urls))
    }

    // MARK: sending

    /// Queues `message`; false when it must be dropped (queue full, link down, peer removed).
    func enqueue(_ message: Data) -> Bool {
        let limit = core.config.maxQueuedMessagesPerPeer
        enum Outcome { case queued, drop, drain }
        let outcome = state.withLock { s -> Outcome in
            if s.closed || s.queue.count + s.draining >= limit { return .drop }
            switch s.link {
            case .down:
                return .drop
            case .connecting:
                s.queue.append(message)
                return .queued
            case .connected:
                s.queue.append(message)
                if s.drainScheduled { return .queued }
                s.drainScheduled = true
                return .drain
            }
        }
        switch outcome {
        case .queued: return true
        case .drop: return false
        case .drain:
            loop.execute { self.drain() }
            return true
        }
    }

    /// Schedules a drain if messages wait and none is scheduled (after the channel became writable).
    func scheduleDrain(_ channel: any Channel) {
        let schedule = state.withLock { s -> Bool in
            guard case .connected(let current, _) = s.link, current === channel,
                !s.queue.isEmpty, !s.drainScheduled
            else { return false }
            s.drainScheduled = true
            return true
        }
        if schedule { loop.execute { self.drain() } }
    }

    /// Writes everything queued to the current connection while it stays
    /// writable, then flushes once. Runs on `loop` (where all of this peer's
    /// message channels live).
    private func drain() {
        let taken = state.withLock { s -> (any Channel, CircularBuffer<Data>)? in
            s.drainScheduled = false
            guard case .connected(let channel, _) = s.link, channel.isWritable, !s.queue.isEmpty else { return nil }
            let batch = s.queue
            s.queue = CircularBuffer()
            s.draining = batch.count
            return (channel, batch)
        }
        guard case (let channel, var batch)? = taken else { return }
        // Frames are packed into shared buffers of about `packBytes`;
        // writability is checked before each buffer is started.
        let allocator = channel.allocator
        var remainingBytes = batch.reduce(0) { $0 + Wire.headerBytes + $1.count }
        var pending: ByteBuffer?
        var written = 0
        for message in batch {
            let frameBytes = Wire.headerBytes + message.count
            if let full = pending, full.readableBytes + frameBytes > Self.packBytes {
                channel.write(full, promise: nil)
                pending = nil
            }
            if pending == nil {
                if !channel.isWritable { break }
                pending = allocator.buffer(capacity: min(remainingBytes, max(Self.packBytes, frameBytes)))
            }
            Wire.writeHeader(.message, payloadLength: message.count, to: &pending!)
            message.withUnsafeBytes { _ = pending!.writeBytes($0) }
            remainingBytes -= frameBytes
            written += 1
        }
        if let last = pending { channel.write(last, promise: nil) }
        channel.flush()
        core.framesWritten.add(written, ordering: .relaxed)
        core.flushes.add(1, ordering: .relaxed)
        let leftOver = written < batch.count
        if leftOver { batch.removeFirst(written) }
        // The flush may already have made the channel writable again (its
        // event found the queue empty while we held the rest), so look again.
        let again = state.withLock { s -> Bool in
            if leftOver && !s.closed {
                batch.append(contentsOf: s.queue)
                s.queue = batch
            }
            s.draining = 0
            guard case .connected(let current, _) = s.link, current.isWritable,
                !s.queue.isEmpty, !s.drainScheduled
            else { return false }
            s.drainScheduled = true
            return true
        }
        if again { loop.execute { self.drain() } }
    }

    // MARK: connecting

    /// Starts a connect attempt round over all URLs (no-op unless down).
    func startConnecting() {
        let plan = state.withLock { s -> (UInt64, [String], Int)? in
            guard !s.closed, case .down = s.link else { return nil }
            s.reconnect?.cancel()
            s.reconnect = nil
            s.generation += 1
            s.link = .connecting
            return (s.generation, s.urls, s.preferred)
        }
        guard let (generation, urls, start) = plan else { return }
        attempt(generation: generation, urls: urls, start: start, tried: 0)
    }

    private func attempt(generation: UInt64, urls: [String], start: Int, tried: Int) {
        guard tried < urls.count else {
            connectFailed(generation: generation)
            return
        }
        let index = (start + tried) % urls.count
        let next: @Sendable () -> Void = {
            self.attempt(generation: generation, urls: urls, start: start, tried: tried + 1)
        }
        guard let target = try? PeerURL.target(urls[index]) else {
            next()
            return
        }
        guard let dialing = core.dial(target: target, url: urls[index], stream: .messages, to: id, loop: loop, owner: self) else {
            return  // stopping
        }
        dialing.whenComplete { result in
            switch result {
            case .success(let link) where link.response.kind == .ok:
                self.connected(generation: generation, channel: link.channel, url: urls[index])
            case .success(let link) where link.response.kind == .error:
                link.channel.close(promise: nil)
                self.core.delegate.transport(rejectedBy: self.id, reason: link.response.text)
                self.connectFailed(generation: generation)
            case .success(let link):
                link.channel.close(promise: nil)
                next()
            case .failure:
                next()
            }
        }
    }

    private func connected(generation: UInt64, channel: any Channel, url: String) {
        let (accepted, drain, stale) = state.withLock { s -> (Bool, Bool, Bool) in
            guard !s.closed, s.generation == generation else { return (false, false, false) }
            s.link = .connected(channel, url: url)
            s.backoff = Peer.initialBackoff
            // The URLs may have changed while we dialed.
            guard let index = s.urls.firstIndex(of: url) else { return (true, false, true) }
            s.preferred = index
            let drain = !s.queue.isEmpty && !s.drainScheduled
            if drain { s.drainScheduled = true }
            return (true, drain, false)
        }
        guard accepted else {
            channel.close(promise: nil)
            return
        }
        channel.closeFuture.whenComplete { _ in self.connectionLost(generation: generation) }
        if stale { channel.close(promise: nil) }
        if drain { loop.execute { self.drain() } }
    }

    /// The established connection closed: reconnect at once, keeping the queue.
    private func connectionLost(generation: UInt64) {
        let reconnect = state.withLock { s -> Bool in
            guard s.generation == generation, case .connected = s.link else { return false }
            s.link = .down
            return !s.closed
        }
        guard reconnect else { return }
        core.reportUnreachable(id)
        startConnecting()
    }

    /// Every URL failed: drop the queue, report, retry after the backoff.
    private func connectFailed(generation: UInt64) {
        let maxBackoff = core.config.maxReconnectBackoff
        let dropped = state.withLock { s -> Int in
            guard s.generation == generation, !s.closed else { return 0 }
            let dropped = s.queue.count
            s.queue.removeAll()
            s.link = .down
            let delay = s.backoff
            s.backoff = min(s.backoff * 2, maxBackoff)
            s.reconnect = loop.scheduleTask(in: delay.timeAmount) { self.startConnecting() }
            return dropped
        }
        if dropped > 0 { core.reportUnreachable(id) }
    }

    /// Changed URLs: redial now if down, or if the current connection's URL is gone.
    func update(urls: [String]) {
        let (close, redial) = state.withLock { s -> ((any Channel)?, Bool) in
            guard !s.closed, s.urls != urls else { return (nil, false) }
            s.urls = urls
            s.preferred = 0
            switch s.link {
            case .connected(let channel, let url) where !urls.contains(url):
                return (channel, false)
            case .down:
                s.backoff = Peer.initialBackoff
                return (nil, true)
            default:
                return (nil, false)
            }
        }
        close?.close(promise: nil)
        if redial { startConnecting() }
    }

    /// Removed or stopping: drop everything and close the connections.
    func shutdown() {
        let channels = state.withLock { s -> [any Channel] in
            s.closed = true
            s.reconnect?.cancel()
            s.reconnect = nil
            s.queue.removeAll()
            var channels: [any Channel] = []
            if case .connected(let channel, _) = s.link { channels.append(channel) }
            if let snapshot = s.snapshotChannel { channels.append(snapshot) }
            s.link = .down
            return channels
        }
        for channel in channels { channel.close(promise: nil) }
    }

    // MARK: snapshots

    /// Claims the single snapshot slot; returns the URLs to try (preferred first), or nil if busy/removed.
    func beginSnapshot() -> [String]? {
        state.withLock { s in
            guard !s.closed, !s.snapshotInFlight else { return nil }
            s.snapshotInFlight = true
            guard !s.urls.isEmpty else { return [] }
            let start = s.preferred % s.urls.count
            return Array(s.urls[start...] + s.urls[..<start])
        }
    }

    /// Records the snapshot connection so `shutdown` can close it; false if already shut down.
    func setSnapshotChannel(_ channel: any Channel) -> Bool {
        state.withLock { s in
            guard !s.closed else { return false }
            s.snapshotChannel = channel
            return true
        }
    }

    func endSnapshot() {
        state.withLock { s in
            s.snapshotInFlight = false
            s.snapshotChannel = nil
        }
    }
}
