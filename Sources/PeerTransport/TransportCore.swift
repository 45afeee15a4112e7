import Foundation
import Locks
import NIOCore
import NIOPosix
import TransportSecurity

/// The shared state behind a `PeerTransport`: peers, listeners, and a
/// registry of every channel and background job so `stop()` can wait for all
/// of them.
final class TransportCore: Sendable {
    let config: PeerTransportConfig
    let delegate: any PeerTransportDelegate
    let group: any EventLoopGroup

    struct State {
        var started = false
        var stopped: EventLoopFuture<Void>?
        var peers: [UInt64: Peer] = [:]
        var boundPorts: [Int] = []
    }
    let state = Mutex(State())

    /// Open channels and running jobs. After `stopping` is set no new dial
    /// or snapshot job may begin; channels still register (and are closed at
    /// once) so `stop()` can wait for them.
    struct Registry {
        var stopping = false
        var channels: [ObjectIdentifier: any Channel] = [:]
        var jobs: [Int: EventLoopFuture<Void>] = [:]
        var nextJob = 0
    }
    let registry = Mutex(Registry())

    let lastUnreachable = Mutex([UInt64: ContinuousClock.Instant]())
    let framesWritten = Atomic<Int>(0)
    let flushes = Atomic<Int>(0)

    init(config: PeerTransportConfig, delegate: any PeerTransportDelegate, group: any EventLoopGroup) {
        self.config = config
        self.delegate = delegate
        self.group = group
    }

    // MARK: registry

    /// Records `channel` until it closes. Returns false (and closes it) when
    /// the transport is stopping.
    func register(_ channel: any Channel) -> Bool {
        let id = ObjectIdentifier(channel)
        let open = registry.withLock { r in
            r.channels[id] = channel
            return !r.stopping
        }
        channel.closeFuture.whenComplete { [self] _ in
            _ = registry.withLock { $0.channels.removeValue(forKey: id) }
        }
        if !open { channel.close(promise: nil) }
        return open
    }

    /// Records a job that `stop()` waits for. With `evenWhenStopping` false
    /// it is refused (returns false) once stopping.
    func track(_ job: EventLoopFuture<Void>, evenWhenStopping: Bool) -> Bool {
        let id: Int? = registry.withLock { r in
            if r.stopping && !evenWhenStopping { return nil }
            r.nextJob += 1
            r.jobs[r.nextJob] = job
            return r.nextJob
        }
        guard let id else { return false }
        job.whenComplete { [self] _ in
            _ = registry.withLock { $0.jobs.removeValue(forKey: id) }
        }
        return true
    }

    /// Dials `address` and exchanges the hello, as a tracked job. Nil when stopping.
    func dial(target: DialTarget, url: String, stream: StreamKind, to peer: UInt64, loop: any EventLoop, owner: Peer?)
        -> EventLoopFuture<DialResult>?
    {
        let done = loop.makePromise(of: Void.self)
        guard track(done.futureResult, evenWhenStopping: false) else {
            done.succeed()
            return nil
        }
        let hello = Hello(clusterID: config.clusterID, fromID: config.localID, toID: peer, stream: stream)
        let result = dialStream(
            loop: loop, target: target, url: url, security: config.security, hello: hello, maxMessageBytes: config.maxMessageBytes,
            timeout: config.dialTimeout, peer: owner, register: { [self] in register($0) })
        result.whenComplete { _ in done.succeed() }
        return result
    }

    // MARK: lifecycle

    func start(listenURLs: [String]) async throws {
        try state.withLock { s in
            if s.started || s.stopped != nil { throw PeerTransportError.stopped }
            s.started = true
        }
        try? FileManager.default.createDirectory(
            atPath: config.snapshotDirectory, withIntermediateDirectories: true)
        var listeners: [any Channel] = []
        var ports: [Int] = []
        for url in listenURLs {
            do {
                let parsed = try PeerURL(url)
                let address = try parsed.socketAddress(url: url)
                let security: ListenerSecurity
                if parsed.secure {
                    guard let credentials = config.security else { throw PeerTransportError.tlsNotConfigured(url: url) }
                    security = .tls(credentials)
                } else {
                    security = .plaintext
                }
                let channel = try await makeServerBootstrap(security: security, url: url).bind(to: address).get()
                listeners.append(channel)
                guard register(channel) else { throw PeerTransportError.stopped }
                ports.append(channel.localAddress?.port ?? 0)
            } catch {
                for listener in listeners { try? await listener.close() }
                state.withLock { $0.started = false }
                switch error {
                case PeerTransportError.invalidURL, PeerTransportError.stopped, PeerTransportError.tlsNotConfigured: throw error
                default: throw PeerTransportError.bindFailed(url: url, reason: "\(error)")
                }
            }
        }
        state.withLock { $0.boundPorts = ports }
    }

    private func makeServerBootstrap(security: ListenerSecurity, url: String) -> ServerBootstrap {
        let maxMessageBytes = config.maxMessageBytes
        return ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [self] channel in
                guard register(channel) else {
                    return channel.eventLoop.makeFailedFuture(PeerTransportError.stopped)
                }
                return channel.eventLoop.makeCompletedFuture {
                    // The first byte tells a TLS member from a plaintext one:
                    // what this URL does not speak is closed and logged.
                    try SecureChannel.configureAccepted(channel, security: security, listener: url, logger: peerLogger) { channel in
                        try channel.pipeline.syncOperations.addHandlers(
                            ByteToMessageHandler(FrameDecoder(maxMessageBytes: maxMessageBytes)),
                            AcceptorHandler(core: self))
                    }
                }
            }
    }

    func stop() async {
        let promise = group.any().makePromise(of: Void.self)
        let (first, peers, future) = state.withLock { s -> (Bool, [Peer], EventLoopFuture<Void>) in
            if let existing = s.stopped { return (false, [], existing) }
            s.stopped = promise.futureResult
            let peers = Array(s.peers.values)
            s.peers = [:]
            return (true, peers, promise.futureResult)
        }
        guard first else {
            promise.succeed()
            try? await future.get()
            return
        }
        registry.withLock { $0.stopping = true }
        for peer in peers { peer.shutdown() }
        while true {
            let (channels, jobs) = registry.withLock { (Array($0.channels.values), Array($0.jobs.values)) }
            if channels.isEmpty && jobs.isEmpty { break }
            for channel in channels { channel.close(promise: nil) }
            for channel in channels { try? await channel.closeFuture.get() }
            for job in jobs { try? await job.get() }
        }
        promise.succeed()
    }

    // MARK: peers

    func setPeer(id: UInt64, urls: [String]) {
        let (peer, created) = state.withLock { s -> (Peer?, Bool) in
            if s.stopped != nil { return (nil, false) }
            if let existing = s.peers[id] { return (existing, false) }
            let peer = Peer(id: id, urls: urls, loop: group.next(), core: self)
            s.peers[id] = peer
            return (peer, true)
        }
        guard let peer else { return }
        if created { peer.startConnecting() } else { peer.update(urls: urls) }
    }

    func removePeer(id: UInt64) {
        let peer = state.withLock { $0.peers.removeValue(forKey: id) }
        peer?.shutdown()
    }

    func peer(_ id: UInt64) -> Peer? {
        state.withLock { $0.peers[id] }
    }

    func send(_ message: Data, to id: UInt64) {
        guard message.count <= config.maxMessageBytes, message.count <= Wire.maxFrameBytes,
            let peer = peer(id), peer.enqueue(message)
        else {
            reportUnreachable(id)
            return
        }
    }

    func sendSnapshot(
        _ message: Data, to id: UInt64,
        writeBody: @escaping @Sendable (_ write: (UnsafeRawBufferPointer) throws -> Void) throws -> Void,
        completion: @escaping @Sendable (Bool) -> Void
    ) {
        guard message.count <= config.maxMessageBytes, message.count <= Wire.maxFrameBytes,
            let peer = peer(id), let urls = peer.beginSnapshot()
        else {
            completion(false)
            return
        }
        let done = group.any().makePromise(of: Void.self)
        guard track(done.futureResult, evenWhenStopping: false) else {
            peer.endSnapshot()
            done.succeed()
            completion(false)
            return
        }
        let job = SnapshotSender(
            core: self, peer: peer, urls: urls, message: message, writeBody: writeBody)
        Thread.detachNewThread {
            let ok = job.run()
            peer.endSnapshot()
            completion(ok)
            done.succeed()
        }
    }

    func fetchHashKV(_ request: Data, from id: UInt64, timeout: Duration) async throws -> Data {
        guard request.count <= Wire.maxControlBytes, let peer = peer(id) else {
            throw PeerTransportError.rejected(reason: "unknown peer \(String(id, radix: 16))")
        }
        let urls = peer.state.withLock { $0.urls }
        var lastError: any Error = PeerTransportError.connectionClosed
        for url in urls {
            do {
                let target = try PeerURL.target(url)
                let hello = Hello(clusterID: config.clusterID, fromID: config.localID, toID: id, stream: .hashKV)
                let question = Wire.frame(.hashKVRequest, request, allocator: ByteBufferAllocator())
                let link = try await dialStream(
                    loop: group.next(), target: target, url: url, security: config.security, hello: hello, maxMessageBytes: config.maxMessageBytes,
                    timeout: timeout, peer: nil, register: nil, request: question
                ).get()
                try? await link.channel.close()
                switch link.response.kind {
                case .hashKVResponse: return link.response.data
                case .error: lastError = PeerTransportError.rejected(reason: link.response.text)
                default: lastError = PeerTransportError.protocolViolation("unexpected answer to a hash request")
                }
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    /// Tells the delegate that messages to `peer` were dropped, at most once per 100 ms per peer.
    func reportUnreachable(_ peer: UInt64) {
        let now = ContinuousClock.now
        let report = lastUnreachable.withLock { last in
            if let previous = last[peer], now - previous < .milliseconds(100) { return false }
            last[peer] = now
            return true
        }
        if report { delegate.transport(unreachable: peer) }
    }
}
