import EtcdGRPC
import EtcdMetrics
import EtcdProto
import EtcdServer
import GRPCCore
import GRPCWire
import Locks
import Logging
import NIOCore
import TransportSecurity

/// The client-facing gRPC listener of a member: health, and with a member KV,
/// Watch, Lease, Maintenance, Cluster, Auth, Lock and Election. Services that have not been built yet are not
/// registered, so clients get UNIMPLEMENTED for them.
///
/// It serves through `GRPCWire` (gRPC over swift-nio-http2 frames): the KV
/// calls run on the event loop and the member's completions, with no task
/// per call; the other methods run grpc-swift service implementations in a
/// task through the bridges in `WireBridge.swift`.
public final class ClientListener: Sendable {
    public let address: ListenAddress
    /// Plaintext, TLS, or both on this one port.
    public let security: ListenerSecurity
    /// A `--listen-metrics-urls` listener (only `/metrics` and health).
    public let metricsOnly: Bool
    private let server: WireServer
    /// The largest HTTP request body held (beyond it: 413).
    let httpBodyLimit: Int
    private let forwarder: LeaderForwarder?
    private let bound: Mutex<BoundState> = Mutex(BoundState())
    /// The member's Prometheus exposition, for `/metrics` (nil without a member).
    public let metricsExposition: (@Sendable () -> [UInt8])?

    private struct BoundState {
        var port: Result<Int, any Error>?
        var waiters: [CheckedContinuation<Int?, any Error>] = []
    }

    /// How long an HTTP/1 connection may sit without a request in progress.
    public static let defaultHTTPIdleTimeout: TimeAmount = .seconds(60)

    /// `clientCredentials`: this member's client TLS (for forwarding to an
    /// `https://` leader), whatever this listener speaks. `/metrics` serves
    /// the member's exposition (404 without a member).
    public init(address: ListenAddress, member: Member? = nil, security: ListenerSecurity = .plaintext, clientCredentials: TLSCredentials? = nil,
                httpIdleTimeout: TimeAmount = ClientListener.defaultHTTPIdleTimeout,
                metricsOnly: Bool = false) {
        self.address = address
        self.security = security
        self.metricsOnly = metricsOnly
        let host = Self.bindHost(address)
        var configuration = WireServer.Configuration(host: host, port: address.port)
        if let member {
            configuration.keepalive = Self.keepalive(member.config)
            // etcd's limit exactly: --max-request-bytes plus 512 KiB for gRPC's
            // overhead (embed/serve.go, grpcOverheadBytes); above it a request
            // gets RESOURCE_EXHAUSTED "grpc: received message larger than max".
            configuration.maxReceiveMessageBytes = member.config.maxRequestBytes + 512 * 1024
            // --max-concurrent-streams (etcd's default: no limit, math.MaxUint32).
            configuration.maxConcurrentStreams = Int(member.config.maxConcurrentStreams)
            // grpc_server_* and the client byte counters, per method.
            if let recorder = member.metricsRecorder {
                configuration.observeMethod = { path, streaming in recorder.grpcMethod(path: path, streaming: streaming) }
            }
        }
        if let metrics = member?.metrics {
            metricsExposition = { metrics.exposition() }
        } else {
            metricsExposition = nil
        }
        var router = WireRouter()
        if !metricsOnly { router.addHealth(HealthService()) }
        forwarder = metricsOnly ? nil : member.map { LeaderForwarder(member: $0, credentials: clientCredentials ?? security.credentials) }
        if let member, let forwarder {
            router.addKV(member: member)
            router.addWatch(WatchService(member: member))
            router.addLease(LeaseService(member: member, forwarder: forwarder), member: member)
            router.addMaintenance(MaintenanceService(member: member))
            router.addCluster(ClusterService(member: member))
            router.addAuth(member: member)
            router.addLock(LockService(member: member), member: member)
            router.addElection(ElectionService(member: member), member: member)
            router.requireRoot(member)
            router.refuseOnLearner(member)
        }
        // One port, two protocols: after TLS (or plaintext), the HTTP/2
        // preface goes to gRPC and anything else to HTTP/1 (`HTTPService`);
        // on HTTP/2, requests that are not gRPC go to the same service.
        let service = HTTPService(member: member, router: router, scope: metricsOnly ? .metrics : .client, metrics: metricsExposition,
                                  maxRequestBytes: configuration.maxReceiveMessageBytes)
        configuration.plainBodyBytes = service.maxBodyBytes
        httpBodyLimit = service.maxBodyBytes
        configuration.plainRequests = { request, response in
            service.handle(HTTPRequest(method: request.method, target: request.path, authorization: request.headers.first(name: "authorization"),
                                       body: request.body, remotePeer: request.remotePeer, localPeer: request.localPeer,
                                       peerCommonName: request.peerCommonName), response)
        }
        // Every connection's first byte says whether it is TLS: served when
        // this port speaks it, else closed with a log line, never hung.
        let description = "\(address.host):\(address.port)"
        let logger = Logger(label: "etcd")
        configuration.connectionSetup = { channel, addGRPC in
            try SecureChannel.configureAccepted(channel, security: security, listener: description, logger: logger) { channel in
                try channel.pipeline.syncOperations.addHandler(ProtocolSniffer(service: service, idleTimeout: httpIdleTimeout, addGRPC: addGRPC))
            }
        }
        server = WireServer(configuration: configuration, router: router)
    }

    /// A `--listen-metrics-urls` listener: `/metrics` and the health
    /// endpoints over HTTP (HTTP/1.1, or h2 over TLS), nothing else.
    public static func metricsListener(address: ListenAddress, member: Member, security: ListenerSecurity = .plaintext) -> ClientListener {
        ClientListener(address: address, member: member, security: security, metricsOnly: true)
    }

    /// etcd's keepalive flags as it hands them to grpc-go: a zero min-time
    /// leaves grpc-go's default (5 minutes); a zero interval or timeout, no
    /// server pings.
    static func keepalive(_ config: ServerConfig) -> WireServer.Configuration.Keepalive {
        var keepalive = WireServer.Configuration.Keepalive()
        keepalive.minTime = config.grpcKeepaliveMinTimeMilliseconds > 0 ? .milliseconds(Int64(config.grpcKeepaliveMinTimeMilliseconds)) : .minutes(5)
        if config.grpcKeepaliveIntervalMilliseconds > 0 && config.grpcKeepaliveTimeoutMilliseconds > 0 {
            keepalive.interval = .milliseconds(Int64(config.grpcKeepaliveIntervalMilliseconds))
            keepalive.timeout = .milliseconds(Int64(config.grpcKeepaliveTimeoutMilliseconds))
        } else {
            keepalive.interval = nil
        }
        return keepalive
    }

    static func bindHost(_ address: ListenAddress) -> String {
        if address.host == "localhost" { return "127.0.0.1" }
        if address.host.hasPrefix("[") && address.host.hasSuffix("]") { return String(address.host.dropFirst().dropLast()) }
        return address.host
    }

    /// Serves until `stop()` is called.
    public func serve() async throws {
        do {
            let port = try await server.start()
            resolvePort(.success(port))
        } catch {
            resolvePort(.failure(error))
            throw error
        }
        await server.waitUntilClosed()
        forwarder?.close()
    }

    private func resolvePort(_ result: Result<Int, any Error>) {
        let waiters = bound.withLock { state in
            state.port = result
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(with: result.map { $0 }) }
    }

    /// The port actually bound (useful with port 0), once `serve()` has bound it.
    public func boundPort() async throws -> Int? {
        try await withCheckedThrowingContinuation { continuation in
            let ready = bound.withLock { state -> Result<Int, any Error>? in
                if state.port == nil { state.waiters.append(continuation) }
                return state.port
            }
            if let ready { continuation.resume(with: ready.map { $0 }) }
        }
    }

    public func stop() {
        server.stop()
        forwarder?.close()
    }
}

extension GRPCMethodMetrics: WireMethodObserver {
    public func recordHandled(code: Int, duration: TimeAmount?) {
        recordHandled(code: code, seconds: duration.map { Double($0.nanoseconds) / 1e9 })
    }
}
