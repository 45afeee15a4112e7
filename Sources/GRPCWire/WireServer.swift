import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP2
import NIOPosix

/// A gRPC server over swift-nio-http2 in frame mode: one handler per
/// connection serves every stream, with no child channel, task or async
/// sequence per call. Methods come from a `WireRouter`; requests and
/// responses are length-prefixed gRPC messages (uncompressed).
public final class WireServer: Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// The largest request message accepted (gRPC's 4 MiB by default).
        public var maxReceiveMessageBytes = 4 * 1024 * 1024
        /// SETTINGS_MAX_CONCURRENT_STREAMS: the streams a client may have
        /// open on one connection (at most UInt32.max). Advertised, and
        /// enforced by swift-nio-http2 once the client has acknowledged it
        /// (before that, 100): a stream beyond it is a connection error,
        /// GOAWAY PROTOCOL_ERROR (grpc-go refuses just the stream; RFC 9113
        /// allows either, and swift-nio-http2 decides it). What a connection
        /// buffers is bounded separately, by `connectionBufferBytes`.
        public var maxConcurrentStreams = 10_000
        /// The flow-control window for each stream and for the connection.
        public var windowBytes = 1 << 20
        /// Bytes one connection may hold for incomplete request messages
        /// across its streams; nil: 64 of the largest messages, at least
        /// 64 MiB (see `WireLimits.connectionBufferBytes`).
        public var connectionBufferBytes: Int?
        /// Runs on each accepted connection once its HTTP/2 handler is in the
        /// pipeline (e.g. to add a handler before it that sees the raw bytes).
        public var onAccept: (@Sendable (any Channel) -> EventLoopFuture<Void>)?
        /// Sets up each accepted connection in place of adding the gRPC
        /// handlers at once: it is given the channel and a function that
        /// adds them, to call when the connection is ready for HTTP/2 (for
        /// example after a TLS handler, once the first bytes showed a TLS
        /// client). The handlers may be added to an active channel.
        public var connectionSetup: (@Sendable (_ channel: any Channel, _ addGRPC: @escaping @Sendable (any Channel) throws -> Void) throws -> Void)?
        /// Serves HTTP/2 requests that are not gRPC (content-type other than
        /// `application/grpc`), with bodies up to `plainBodyBytes`; nil:
        /// they get grpc-go's answer (HTTP 415). gRPC calls never reach it.
        public var plainRequests: WirePlainHandler?
        public var plainBodyBytes = 4 * 1024 * 1024
        /// HTTP/2 connection settings beyond the ones above (rate limits).
        /// swift-nio-http2's header-block and content-length validation is
        /// off by default: it cost about 6 % of a busy server's CPU, and
        /// calls are routed on `:path` and `content-type` alone, every other
        /// header being opaque metadata (a request without them gets
        /// UNIMPLEMENTED or HTTP 415).
        public var connection = WireServer.defaultConnectionConfiguration
        /// Makes the observer of each routed method (asked once per path
        /// when the server starts); nil: calls are not observed.
        public var observeMethod: (@Sendable (_ path: String, _ streaming: Bool) -> any WireMethodObserver)?
        /// Keepalive as grpc-go's server does it (see `ServerKeepalive`),
        /// with etcd's defaults.
        public var keepalive = Keepalive()

        public struct Keepalive: Sendable, Hashable {
            /// --grpc-keepalive-min-time: clients pinging more often than
            /// this (with no response in between) are sent away.
            public var minTime: TimeAmount = .seconds(5)
            /// --grpc-keepalive-interval: a connection nothing was read
            /// from for this long is pinged; nil: never.
            public var interval: TimeAmount? = .hours(2)
            /// --grpc-keepalive-timeout: after our ping, a connection that
            /// sends nothing for this long is closed.
            public var timeout: TimeAmount = .seconds(20)
            public init() {}
        }

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }

    /// NIOHTTP2's defaults with header validation off (see
    /// `Configuration.connection`), and a control-frame limit that Go
    /// clients fit: they send a bandwidth-estimation PING after most
    /// responses, far more than swift-nio-http2's default 200 control frames
    /// in 30 s. PINGs are judged by grpc-go's rules instead (`keepalive`);
    /// the limit is left for SETTINGS and PRIORITY floods, which grpc-go
    /// does not limit at all.
    public static var defaultConnectionConfiguration: NIOHTTP2Handler.ConnectionConfiguration {
        var connection = NIOHTTP2Handler.ConnectionConfiguration()
        connection.headerBlockValidation = .disabled
        connection.contentLengthValidation = .disabled
        connection.controlFrameRateLimit.maximumCount = 10_000
        connection.controlFrameRateLimit.windowLength = .seconds(1)
        return connection
    }

    private let configuration: Configuration
    private let router: WireRouter
    private let group: any EventLoopGroup
    private enum State {
        case idle
        case running(listener: any Channel, connections: [ObjectIdentifier: any Channel])
        case stopped
    }
    private let state = NIOLockedValueBox(State.idle)
    private let closed: EventLoopPromise<Void>

    public init(configuration: Configuration, router: WireRouter, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.configuration = configuration
        self.router = router
        self.group = group
        self.closed = group.next().makePromise(of: Void.self)
    }

    /// Binds the listening socket; returns the port bound.
    @discardableResult
    public func start() async throws -> Int {
        let configuration = self.configuration
        let router = self.router
        var settings = HTTP2Settings()
        precondition((0...Int(UInt32.max)).contains(configuration.maxConcurrentStreams), "maxConcurrentStreams is a 32-bit setting")
        settings.append(HTTP2Setting(parameter: .maxConcurrentStreams, value: configuration.maxConcurrentStreams))
        settings.append(HTTP2Setting(parameter: .initialWindowSize, value: configuration.windowBytes))
        settings.append(HTTP2Setting(parameter: .maxHeaderListSize, value: 16 * 1024))
        var connectionSettings = configuration.connection
        connectionSettings.initialSettings = settings
        let connection = connectionSettings
        let limits = WireLimits(maxReceiveMessageBytes: configuration.maxReceiveMessageBytes, windowBytes: configuration.windowBytes,
                                connectionBufferBytes: configuration.connectionBufferBytes)
        let keepalive = ServerKeepalive.Policy(minTime: configuration.keepalive.minTime, interval: configuration.keepalive.interval,
                                               timeout: configuration.keepalive.timeout)
        var observers: [String: any WireMethodObserver] = [:]
        if let observe = configuration.observeMethod {
            for (path, method) in router.methods {
                if case .streaming = method { observers[path] = observe(path, true) } else { observers[path] = observe(path, false) }
            }
        }
        let methodObservers = observers
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [weak self] channel in
                self?.track(channel)
                let addGRPC: @Sendable (any Channel) throws -> Void = { channel in
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(NIOHTTP2Handler(mode: .server, connectionConfiguration: connection))
                    try sync.addHandler(WireConnection(router: router, limits: limits, keepalive: keepalive, eventLoop: channel.eventLoop,
                                                       plainHandler: configuration.plainRequests, plainBodyBytes: configuration.plainBodyBytes,
                                                       observers: methodObservers))
                }
                do {
                    if let setup = configuration.connectionSetup {
                        try setup(channel, addGRPC)
                    } else {
                        try addGRPC(channel)
                    }
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
                return configuration.onAccept?(channel) ?? channel.eventLoop.makeSucceededVoidFuture()
            }
        let bound = try await bootstrap.bind(host: configuration.host, port: configuration.port).get()
        let stopped = state.withLockedValue { state -> Bool in
            guard case .idle = state else { return true }
            state = .running(listener: bound, connections: [:])
            return false
        }
        if stopped {
            try? await bound.close()
            return bound.localAddress?.port ?? configuration.port
        }
        return bound.localAddress?.port ?? configuration.port
    }

    private func track(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        let open = state.withLockedValue { state -> Bool in
            guard case .running(let listener, var connections) = state else { return false }
            connections[id] = channel
            state = .running(listener: listener, connections: connections)
            return true
        }
        if !open { channel.close(promise: nil); return }
        channel.closeFuture.whenComplete { [weak self] _ in
            self?.state.withLockedValue { state in
                guard case .running(let listener, var connections) = state else { return }
                connections[id] = nil
                state = .running(listener: listener, connections: connections)
            }
        }
    }

    /// The port bound, once started.
    public var port: Int? {
        state.withLockedValue { state in
            if case .running(let listener, _) = state { return listener.localAddress?.port }
            return nil
        }
    }

    /// Client connections open now (accepted and not yet closed).
    public var openConnections: Int {
        state.withLockedValue { state in
            if case .running(_, let connections) = state { return connections.count }
            return 0
        }
    }

    /// Waits until `stop()` has closed the listener and every connection.
    public func waitUntilClosed() async {
        try? await closed.futureResult.get()
    }

    /// Stops accepting connections and tells every client to go away
    /// (GOAWAY). A connection closes once its open calls have ended, or after
    /// `grace`; `waitUntilClosed` returns when all are closed.
    public func stop(grace: TimeAmount = .seconds(1)) {
        let previous = state.withLockedValue { state -> State in
            defer { state = .stopped }
            return state
        }
        switch previous {
        case .idle:
            closed.succeed()
        case .stopped:
            break
        case .running(let listener, let connections):
            listener.close(promise: nil)
            for connection in connections.values {
                connection.pipeline.fireUserInboundEventTriggered(WireConnection.Drain())
                connection.eventLoop.scheduleTask(in: grace) { connection.close(promise: nil) }
            }
            let all = [listener.closeFuture] + connections.values.map(\.closeFuture)
            let closed = self.closed
            EventLoopFuture.andAllComplete(all, on: listener.eventLoop).whenComplete { _ in closed.succeed() }
        }
    }
}
