import EtcdProto
import Foundation
import GRPCCore
import GRPCWire
import HTTP2PingResponder
import Locks
import NIOCore
import SwiftProtobuf
import NIOPosix
import NIOSSL
import NIOTLS

/// Defaults shared by the library and `etcdctl`.
public enum EtcdClientDefaults {
    /// Where `etcdctl` and the library connect when given no endpoint.
    public static let endpoint = "127.0.0.1:2379"
}

/// TLS settings for the connections of an ``EtcdClient``.
public struct EtcdTLSOptions: Sendable, Equatable {
    /// PEM file with the CA certificates that sign the servers' certificates (system roots when nil).
    public var caFile: String?
    /// PEM file with the client certificate (mutual TLS).
    public var certFile: String?
    /// PEM file with the client certificate's private key.
    public var keyFile: String?
    /// Accept any server certificate (testing only).
    public var insecureSkipVerify: Bool
    /// Server name for SNI and verification (defaults to the endpoint's host).
    public var serverName: String?

    public init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil,
                insecureSkipVerify: Bool = false, serverName: String? = nil) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
        self.insecureSkipVerify = insecureSkipVerify
        self.serverName = serverName
    }

    /// Checks the files as etcd's client does before dialing: a certificate
    /// needs its key (and the other way round), and every file must be readable.
    /// - Throws: ``EtcdClientError/tlsConfiguration(message:)`` with etcd's message.
    public func validate() throws {
        if certFile != nil || keyFile != nil {
            guard let certFile, let keyFile else {
                throw EtcdClientError.tlsConfiguration(message: "KeyFile and CertFile must both be present[key: \(keyFile ?? ""), cert: \(certFile ?? "")]")
            }
            try Self.checkReadable(certFile, holding: "CERTIFICATE")
            try Self.checkReadable(keyFile, holding: "PRIVATE KEY")
        }
        if let caFile { try Self.checkReadable(caFile, holding: "CERTIFICATE") }
    }

    /// The file exists, is readable and has a PEM block whose label contains `label`.
    static func checkReadable(_ path: String, holding label: String) throws {
        guard FileManager.default.fileExists(atPath: path) else {
            throw EtcdClientError.tlsConfiguration(message: "open \(path): no such file or directory")
        }
        guard FileManager.default.isReadableFile(atPath: path), let contents = FileManager.default.contents(atPath: path) else {
            throw EtcdClientError.tlsConfiguration(message: "open \(path): permission denied")
        }
        let lines = String(decoding: contents, as: UTF8.self).split(whereSeparator: \.isNewline)
        guard lines.contains(where: { $0.hasPrefix("-----BEGIN ") && $0.contains(label) }) else {
            throw EtcdClientError.tlsConfiguration(message: "\(path): no PEM \(label.lowercased()) found")
        }
    }
}

/// How an ``EtcdClient`` connects, authenticates and times out.
public struct EtcdClientOptions: Sendable {
    /// How long to keep trying to reach some endpoint before a call fails with
    /// ``EtcdClientError/deadlineExceeded``.
    public var dialTimeout: Duration
    /// The default time limit of a single call (all its retries included); nil for none.
    public var commandTimeout: Duration?
    /// User name for `Auth.Authenticate`; calls then carry the returned token.
    public var username: String?
    /// Password for ``username``.
    public var password: String?
    /// An auth token obtained elsewhere (a JWT another member or tool
    /// made), sent as is on every call instead of authenticating.
    public var token: String?
    /// TLS for every connection; nil for plaintext.
    public var tls: EtcdTLSOptions?
    /// HTTP/2 keep-alive ping interval (nil: no keep-alive pings).
    public var keepAliveTime: Duration?
    /// How long to wait for a keep-alive ping's answer before the connection is closed.
    public var keepAliveTimeout: Duration
    /// Send `hasleader` metadata on watches so a member without a leader cancels them.
    public var requireLeader: Bool

    public init(dialTimeout: Duration = .seconds(2), commandTimeout: Duration? = .seconds(5),
                username: String? = nil, password: String? = nil, tls: EtcdTLSOptions? = nil,
                keepAliveTime: Duration? = nil, keepAliveTimeout: Duration = .seconds(6),
                requireLeader: Bool = false) {
        self.dialTimeout = dialTimeout
        self.commandTimeout = commandTimeout
        self.username = username
        self.password = password
        self.tls = tls
        self.keepAliveTime = keepAliveTime
        self.keepAliveTimeout = keepAliveTimeout
        self.requireLeader = requireLeader
    }
}

/// One endpoint's connection: a lean GRPCWire connection (made on the
/// first call, remade after it closes) that carries the unary calls and
/// the streams (Watch, LeaseKeepAlive, Snapshot) alike.
final class EtcdEndpoint: Sendable {
    let address: String
    private let host: String
    private let port: Int
    private let options: EtcdClientOptions
    /// The connection's TLS: its context and the name checked (nil: the IP address).
    private let tls: (context: NIOSSLContext, serverName: String?)?

    private enum WireState {
        case idle
        case connecting(EventLoopFuture<WireClient>)
        case ready(WireClient)
        case closed
    }
    private let wire = Mutex(WireState.idle)

    init(address: String, options: EtcdClientOptions) throws {
        self.address = address
        self.options = options
        let (host, port, secure) = try Self.parse(address)
        self.host = host
        self.port = port
        var wireTLS: (context: NIOSSLContext, serverName: String?)?
        if let tls = options.tls ?? (secure ? EtcdTLSOptions() : nil) {
            try tls.validate()
            // The name checked against the certificate (and sent as SNI); without
            // one, a DNS host's name or an IP address's SAN is checked.
            do {
                let isAddress = host.allSatisfy { $0.isHexDigit || $0 == "." || $0 == ":" } && host.contains(where: { $0 == "." || $0 == ":" })
                let name = tls.serverName.flatMap { $0.isEmpty ? nil : $0 } ?? (isAddress ? nil : host)
                wireTLS = (try Self.tlsContext(tls), name)
            } catch {
                // Unparsable certificates, keys or CA bundles.
                throw EtcdClientError.tlsConfiguration(message: "bad TLS configuration for \(address): \(EtcdClient.tlsFailure(error) ?? "\(error)")")
            }
        }
        tls = wireTLS
    }

    /// A client TLS context from the options' files (ALPN h2, as gRPC wants).
    static func tlsContext(_ tls: EtcdTLSOptions) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        if let ca = tls.caFile { configuration.trustRoots = .file(ca) }
        if let cert = tls.certFile { configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) } }
        if let key = tls.keyFile { configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)) }
        if tls.insecureSkipVerify { configuration.certificateVerification = .none }
        configuration.applicationProtocols = ["h2"]
        return try NIOSSLContext(configuration: configuration)
    }

    /// One unary call on the lean connection. Failures are `RPCError`s as
    /// grpc-swift reports them: a connection that could not be made (TLS
    /// handshake included) says "Could not establish a connection", with
    /// the cause; a call that never left says so (see `EtcdClient.neverSent`).
    func unary(_ path: String, _ request: ByteBuffer, token: String?, deadline: ContinuousClock.Instant?) async throws -> ByteBuffer {
        let client = try await wireClient(deadline: deadline)
        let metadata: [(name: String, value: String)] = token.map { [("token", $0)] } ?? []
        switch await client.unary(path, request, metadata: metadata, deadline: deadline?.nioDeadline) {
        case .success(let response):
            return response
        case .failure(let status):
            throw await rpcError(status, on: client)
        }
    }

    /// Opens a stream on the lean connection (see `WireClient.stream`):
    /// with `request` a server-streaming call, without a bidirectional one.
    func stream<Response: SwiftProtobuf.Message>(_ path: String, request: ByteBuffer? = nil, token: String?,
                                                 metadata extra: [(name: String, value: String)] = [],
                                                 deadline: ContinuousClock.Instant? = nil, windowBytes: Int? = nil,
                                                 of: Response.Type = Response.self) async throws -> EtcdStream<Response> {
        let client = try await wireClient(deadline: deadline)
        var metadata: [(name: String, value: String)] = token.map { [("token", $0)] } ?? []
        metadata += extra
        let wire = client.stream(path, request: request, metadata: metadata, deadline: deadline?.nioDeadline, windowBytes: windowBytes)
        return EtcdStream(wire: wire, client: client, endpoint: self)
    }

    /// A call's status as the `RPCError` the client's failover logic reads:
    /// a call that never left forgets the connection (the next call makes a
    /// new one); a lost connection carries the error that closed it.
    func rpcError(_ status: WireStatus, on client: WireClient) async -> RPCError {
        var cause: (any Error)?
        if status.code == .unavailable {
            if status.message == WireClient.notSentMessage || status.message == WireClient.notHandledMessage { dropWire(client) }
            cause = try? await client.eventLoop.submit { client.closeError }.get()
        }
        return RPCError(code: RPCError.Code(Status.Code(rawValue: status.code.rawValue) ?? .unknown) ?? .unknown,
                        message: status.message, cause: cause)
    }

    /// The open lean connection, or a new one (bounded by the dial timeout and `deadline`).
    private func wireClient(deadline: ContinuousClock.Instant?) async throws -> WireClient {
        enum Next { case ready(WireClient), wait(EventLoopFuture<WireClient>), connect }
        let next = try wire.withLock { state -> Next in
            switch state {
            case .closed: throw EtcdClientError.closed
            case .ready(let client) where client.isOpen: return .ready(client)
            case .connecting(let future): return .wait(future)
            default: return .connect
            }
        }
        switch next {
        case .ready(let client): return client
        case .wait(let future): return try await connected(future)
        case .connect:
            var limit = options.dialTimeout
            if let deadline { limit = min(limit, max(.milliseconds(1), deadline - .now)) }
            let future = connect(limit: limit.timeAmount)
            let raced = wire.withLock { state -> EventLoopFuture<WireClient>? in
                switch state {
                case .closed: return nil
                case .connecting(let other): return other
                case .idle, .ready: state = .connecting(future); return future
                }
            }
            guard let raced else {
                future.whenSuccess { _ = $0.close() }
                throw EtcdClientError.closed
            }
            if raced === future {
                future.whenComplete { [weak self] (result: Result<WireClient, any Error>) in
                    self?.wire.withLock { state in
                        guard case .connecting(let current) = state, current === future else {
                            if case .success(let client) = result { _ = client.close() }
                            return
                        }
                        switch result {
                        case .success(let client): state = .ready(client)
                        case .failure: state = .idle
                        }
                    }
                }
            } else {
                future.whenSuccess { _ = $0.close() }
            }
            return try await connected(raced)
        }
    }

    private func connected(_ future: EventLoopFuture<WireClient>) async throws -> WireClient {
        do {
            return try await future.get()
        } catch {
            throw RPCError(code: .unavailable, message: "Could not establish a connection to \(address): \(error)", cause: error)
        }
    }

    /// Forgets a connection that can take no more calls (the next call makes a new one).
    private func dropWire(_ client: WireClient) {
        wire.withLock { state in
            if case .ready(let current) = state, current === client { state = .idle }
        }
        _ = client.close()
    }

    /// TCP connect, then (with TLS) the handshake, both within `limit`.
    private func connect(limit: TimeAmount) -> EventLoopFuture<WireClient> {
        var configuration = WireClient.Configuration(host: host, port: port)
        configuration.connectTimeout = limit
        if let time = options.keepAliveTime {
            configuration.keepalive = (time.timeAmount, options.keepAliveTimeout.timeAmount)
        }
        let tls = tls
        configuration.scheme = tls == nil ? "http" : "https"
        let handshake = Mutex<EventLoopFuture<Void>?>(nil)
        configuration.onConnect = { channel in
            let sync = channel.pipeline.syncOperations
            if let tls {
                try sync.addHandler(NIOSSLClientHandler(context: tls.context, serverHostname: tls.serverName))
                let watcher = TLSHandshakeWatcher(promise: channel.eventLoop.makePromise(), limit: limit)
                try sync.addHandler(watcher)
                handshake.withLock { $0 = watcher.promise.futureResult }
            }
            // A Go server (real etcd) sends a BDP PING with most responses; answer them before NIOHTTP2 counts them.
            try sync.addHandler(HTTP2PingResponder(expectsClientPreface: false))
        }
        return WireClient.connect(configuration, group: MultiThreadedEventLoopGroup.singleton).flatMap { client in
            guard let done = handshake.withLock({ $0 }) else { return client.eventLoop.makeSucceededFuture(client) }
            return done.map { client }.flatMapError { error in
                client.close().flatMapThrowing { throw error }
            }
        }
    }

    /// Splits `host:port`, `http://host:port` or `https://host:port`.
    static func parse(_ endpoint: String) throws -> (host: String, port: Int, secure: Bool) {
        var rest = Substring(endpoint)
        var secure = false
        if rest.hasPrefix("https://") { rest = rest.dropFirst(8); secure = true }
        else if rest.hasPrefix("http://") { rest = rest.dropFirst(7) }
        else if rest.hasPrefix("unix://") || rest.hasPrefix("unixs://") {
            throw EtcdClientError.rpc(code: .invalidArgument, message: "unix endpoints are not supported: \(endpoint)")
        }
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]), port > 0, port < 65536 else {
            throw EtcdClientError.rpc(code: .invalidArgument, message: "bad endpoint \(endpoint)")
        }
        var host = String(rest[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "127.0.0.1" }
        return (host, port, secure)
    }

    func close() {
        let open = wire.withLock { state -> WireClient? in
            defer { state = .closed }
            if case .ready(let client) = state { return client }
            return nil
        }
        _ = open?.close()
    }
}

extension ContinuousClock.Instant {
    /// The same moment as NIO's deadline.
    var nioDeadline: NIODeadline { NIODeadline.now() + (self - .now).timeAmount }
}

/// A stream of one endpoint's lean connection, with etcd's messages: sends
/// and receives protobuf messages, and fails with the `RPCError`s the
/// client's failover logic reads (as unary calls do).
struct EtcdStream<Response: SwiftProtobuf.Message>: Sendable {
    let wire: WireStream
    let client: WireClient
    let endpoint: EtcdEndpoint

    /// Sends one request (waiting while the server is not taking them).
    func send(_ request: some SwiftProtobuf.Message) async throws {
        let framed = try request.framed()
        do {
            try await wire.send(framed)
        } catch let status as WireStatus {
            throw await endpoint.rpcError(status, on: client)
        }
    }

    /// Calls `body` with each response until the call ends; throws its
    /// error status (or what `body` throws).
    func forEach(_ body: (Response) async throws -> Void) async throws {
        var iterator = wire.makeAsyncIterator()
        while let message = try await next(&iterator) { try await body(message) }
    }

    /// The next response, nil at the call's OK end.
    func next(_ iterator: inout WireStream.AsyncIterator) async throws -> Response? {
        let bytes: ByteBuffer?
        do {
            bytes = try await iterator.next()
        } catch let status as WireStatus {
            throw await endpoint.rpcError(status, on: client)
        }
        guard let bytes else { return nil }
        do {
            return try Response(grpcMessage: bytes)
        } catch {
            wire.cancel()
            throw RPCError(code: .internalError, message: "grpc: failed to unmarshal the received message: \(error)")
        }
    }

    /// Closes the request side.
    func finishSending() { wire.finishSending() }

    /// Resets the call (nothing happens once it has ended).
    func cancel() { wire.cancel() }
}

extension Duration {
    /// As NIO's TimeAmount (nanoseconds, saturating at about 292 years).
    var timeAmount: TimeAmount {
        let (seconds, attoseconds) = components
        guard seconds < Int64.max / 1_000_000_000 else { return .nanoseconds(.max) }
        return .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

/// Completes its promise when the TLS handshake does (or fails: an alert,
/// the connection closing, or `limit` passing first).
final class TLSHandshakeWatcher: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = NIOAny
    let promise: EventLoopPromise<Void>
    private let limit: TimeAmount
    private var timer: Scheduled<Void>?

    init(promise: EventLoopPromise<Void>, limit: TimeAmount) {
        self.promise = promise
        self.limit = limit
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let promise = promise
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: limit) {
            promise.fail(RPCError(code: .deadlineExceeded, message: "the TLS handshake did not finish in time"))
            channel.close(promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            timer?.cancel()
            promise.succeed()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        timer?.cancel()
        promise.fail(error)
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        promise.fail(RPCError(code: .unavailable, message: "EOF during handshake: the connection closed"))
        context.fireChannelInactive()
    }
}

/// Whether a call may be sent again after a failure that may have reached the server.
enum CallSafety { case idempotent, mutating }

/// A client for etcd's v3 API over gRPC.
///
/// Create it with one or more endpoints; calls go to one endpoint and fail
/// over to the next on connection failures or `etcdserver: no leader`. Reads
/// (and other idempotent calls) are retried there; writes are re-sent only
/// when they certainly never left the client. With a username the client
/// authenticates first and re-authenticates when the server reports
/// `etcdserver: invalid auth token`.
///
/// ```swift
/// let client = try EtcdClient(endpoints: ["127.0.0.1:2379"])
/// defer { client.close() }
/// try await client.put("greeting", "hello")
/// let value = try await client.get("greeting").kvs.first?.value
/// ```
public final class EtcdClient: Sendable {
    /// The endpoints in the order they are tried.
    public let endpoints: [String]
    /// The options the client was created with.
    public let options: EtcdClientOptions

    let connections: [EtcdEndpoint]
    private struct State {
        var current = 0
        var token: String?
        /// The server answered Authenticate with "authentication is not
        /// enabled": calls go without a token, as Go's clientv3 does.
        var authNotEnabled = false
        /// Authenticate failed (the error was the call's).
        var authenticationFailed = false
        var extra: [String: EtcdEndpoint] = [:]
        var closed = false
    }
    private let state = Mutex(State())
    private let authLock = AsyncLock()

    /// Creates a client; connections are made lazily by the first calls.
    /// - Throws: ``EtcdClientError/noAvailableEndpoints`` for an empty list, or an error for a malformed endpoint.
    public init(endpoints: [String], options: EtcdClientOptions = EtcdClientOptions()) throws {
        let cleaned = endpoints.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !cleaned.isEmpty else { throw EtcdClientError.noAvailableEndpoints }
        self.endpoints = cleaned
        self.options = options
        connections = try cleaned.map { try EtcdEndpoint(address: $0, options: options) }
    }

    deinit {
        close()
    }

    /// Closes every connection; running calls fail.
    public func close() {
        let extra = state.withLock { state -> [EtcdEndpoint] in
            state.closed = true
            return Array(state.extra.values)
        }
        for connection in connections + extra { connection.close() }
    }

    /// The endpoint calls currently go to.
    public var activeEndpoint: String { endpoints[state.withLock { $0.current }] }

    /// Whether a call failed because Authenticate did (with the user name
    /// and password given): Go's clientv3 fails while it is created then,
    /// which etcdctl reports as a bad connection.
    public var authenticationFailed: Bool { state.withLock { $0.authenticationFailed } }

    /// The current auth token (nil without authentication).
    public var authToken: String? { state.withLock { $0.token } }

    // MARK: - Calls

    /// The connection for a specific endpoint (one of ours or a new one).
    func connection(for endpoint: String) throws -> EtcdEndpoint {
        if let index = endpoints.firstIndex(of: endpoint) { return connections[index] }
        return try state.withLock { state in
            if let existing = state.extra[endpoint] { return existing }
            let created = try EtcdEndpoint(address: endpoint, options: options)
            state.extra[endpoint] = created
            return created
        }
    }

    /// The auth token calls carry: the given one, the one Authenticate
    /// returned (authenticating first when there is none yet), or nil.
    func token() async throws -> String? {
        if let token = options.token { return token }
        guard options.username != nil else { return nil }
        let known = state.withLock { ($0.token, $0.authNotEnabled) }
        if let token = known.0 { return token }
        if known.1 { return nil }
        return try await authLock.withLock {
            if let token = state.withLock({ $0.token }) { return token }
            do {
                return try await authenticateNow()
            } catch let error where EtcdClientError(error) == .authNotEnabled {
                state.withLock { $0.authNotEnabled = true }
                return nil
            } catch {
                state.withLock { $0.authenticationFailed = true }
                throw EtcdAuthenticationFailure(error: EtcdClientError(error))
            }
        }
    }

    private func authenticateNow() async throws -> String {
        var request = Etcdserverpb_AuthenticateRequest()
        request.name = options.username ?? ""
        request.password = options.password ?? ""
        let response: Etcdserverpb_AuthenticateResponse = try await unary("/etcdserverpb.Auth/Authenticate", request, .idempotent, authenticated: false)
        state.withLock { $0.token = response.token }
        return response.token
    }

    /// Runs `body` against an endpoint, failing over and retrying as the call's safety allows.
    ///
    /// - Parameters:
    ///   - endpoint: pin the call to this endpoint (no failover).
    ///   - timeout: overrides ``EtcdClientOptions/commandTimeout``.
    func call<R: Sendable>(
        _ safety: CallSafety,
        endpoint: String? = nil,
        timeout: Duration?? = nil,
        authenticated: Bool = true,
        _ body: @Sendable (EtcdEndpoint, CallContext) async throws -> R
    ) async throws -> R {
        let clock = ContinuousClock()
        let start = clock.now
        let limit: Duration? = timeout ?? options.commandTimeout
        let deadline = limit.map { start + $0 }
        let dialDeadline = start + options.dialTimeout
        var reauthenticated = false
        var failuresInRow = 0
        var tlsFailuresInRow = 0
        var lastError: EtcdClientError?
        let pinned = try endpoint.map { try connection(for: $0) }
        while true {
            if state.withLock({ $0.closed }) { throw EtcdClientError.closed }
            try Task.checkCancellation()
            let now = clock.now
            if let deadline, now >= deadline { throw EtcdClientError.deadlineExceeded }
            let index = state.withLock { $0.current }
            let connection = pinned ?? connections[index]
            do {
                let token = authenticated ? try await token() : nil
                return try await body(connection, CallContext(deadline: deadline, token: token))
            } catch {
                // Authenticate already failed over and retried on its own.
                if let failure = error as? EtcdAuthenticationFailure { throw failure.error }
                let mapped = EtcdClientError(error)
                if Self.debug { FileHandle.standardError.write(Data("etcd-client: \(connection.address) after \(clock.now - start): \(error)\n".utf8)) }
                lastError = mapped
                if mapped == .invalidAuthToken, authenticated, options.username != nil, !reauthenticated {
                    reauthenticated = true
                    state.withLock { $0.token = nil }
                    continue
                }
                let notSent = Self.neverSent(error)
                let unreachable = notSent || Self.connectionLost(error)
                // A failed TLS handshake will fail again: once every endpoint
                // refused ours (or we theirs), report it instead of waiting out the deadline.
                if let reason = Self.tlsFailure(error) {
                    tlsFailuresInRow += 1
                    let round = pinned == nil ? connections.count : 1
                    if tlsFailuresInRow >= round { throw EtcdClientError.tlsHandshakeFailed(endpoint: connection.address, reason: reason) }
                } else {
                    tlsFailuresInRow = 0
                }
                if unreachable || mapped.isEndpointUnavailable {
                    guard notSent || safety == .idempotent else { throw mapped }
                    if pinned == nil { advance(from: index) }
                    failuresInRow += 1
                    if failuresInRow % max(1, pinned == nil ? connections.count : 1) == 0 {
                        // Every endpoint failed once: wait a little, bounded by the dial timeout.
                        if unreachable, clock.now >= dialDeadline { throw EtcdClientError.deadlineExceeded }
                        var pause = Duration.milliseconds(100)
                        if let deadline { pause = min(pause, max(.zero, deadline - clock.now)) }
                        try await Task.sleep(for: pause)
                    }
                    continue
                }
                _ = lastError
                throw mapped
            }
        }
    }

    func stateCurrent() -> Int { state.withLock { $0.current } }

    func clearToken() { state.withLock { $0.token = nil } }

    func advance(from index: Int) {
        state.withLock { state in
            if state.current == index { state.current = (index + 1) % connections.count }
        }
    }

    /// True when the RPC certainly never reached a server: no connection
    /// could be made, or the connection was closed or going away before
    /// the call left (GRPCWire's messages for those).
    static func neverSent(_ error: any Error) -> Bool {
        guard let rpc = error as? RPCError, rpc.code == .unavailable else { return false }
        let m = rpc.message
        return m.hasPrefix("Could not establish a connection") || m == WireClient.notSentMessage || m == WireClient.notHandledMessage
    }

    /// True when the connection broke (the request may or may not have been applied).
    static func connectionLost(_ error: any Error) -> Bool {
        guard let rpc = error as? RPCError, rpc.code == .unavailable else { return false }
        return !rpc.message.hasPrefix("etcdserver:")
    }

    /// What went wrong in TLS, when `error` (or an error it was caused by) comes from NIOSSL/BoringSSL.
    static func tlsFailure(_ error: any Error) -> String? {
        var current: (any Error)? = error
        for _ in 0..<8 {
            guard let e = current else { return nil }
            let typeName = String(reflecting: type(of: e))
            if typeName.contains("NIOSSL") || typeName.contains("BoringSSL") { return describeTLS(e) }
            guard let rpc = e as? RPCError else { return nil }
            current = rpc.cause
        }
        return nil
    }

    /// A short reason for a NIOSSL/BoringSSL error, naming the usual causes in words.
    static func describeTLS(_ error: any Error) -> String {
        let text = String(describing: error)
        let known: [(String, String)] = [
            ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed: the server's certificate is not signed by a trusted CA"),
            ("unableToValidateCertificate", "certificate verify failed: the server's certificate is not signed by a trusted CA"),
            ("failedToValidateHostname", "the server's certificate is not valid for this host name or IP address"),
            ("TLSV1_CERTIFICATE_REQUIRED", "the server requires a client certificate"),
            ("TLSV1_ALERT_UNKNOWN_CA", "the server does not trust the client certificate's CA"),
            ("SSLV3_ALERT_BAD_CERTIFICATE", "the server rejected the client certificate (none, or not from a CA it trusts)"),
            ("SSLV3_ALERT_HANDSHAKE_FAILURE", "handshake failure alert from the server"),
            ("WRONG_VERSION_NUMBER", "the server does not speak TLS (a plaintext endpoint?)"),
            ("EOF during handshake", "the server closed the connection during the handshake (a plaintext endpoint?)"),
        ]
        for (needle, reason) in known where text.contains(needle) { return "\(reason) [\(needle)]" }
        // Drop BoringSSL's source locations (" at /path/file.cc:123").
        return text.replacing(#/ at /[^\])]*:[0-9]+/#, with: "")
    }

    static let debug = ProcessInfo.processInfo.environment["ETCD_CLIENT_DEBUG"] != nil

    // MARK: - Unary calls

    /// A unary call on the lean connection (see ``call(_:endpoint:timeout:authenticated:_:)``).
    func unary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message & Sendable>(
        _ path: String, _ request: Request, _ safety: CallSafety, endpoint: String? = nil,
        timeout: Duration?? = nil, authenticated: Bool = true
    ) async throws -> Response {
        let framed = try request.framed()
        return try await call(safety, endpoint: endpoint, timeout: timeout, authenticated: authenticated) { connection, context in
            let bytes = try await connection.unary(path, framed, token: context.token, deadline: context.deadline)
            do {
                return try Response(grpcMessage: bytes)
            } catch {
                throw RPCError(code: .internalError, message: "grpc: failed to unmarshal the received message: \(error)")
            }
        }
    }
}

/// What one attempt of a call carries: its deadline and auth token.
struct CallContext: Sendable {
    let deadline: ContinuousClock.Instant?
    let token: String?
}

/// A lock usable across suspension points (FIFO, not reentrant).
final class AsyncLock: Sendable {
    private let state = Mutex<(locked: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func withLock<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        await acquire()
        defer { release() }
        return try await body()
    }

    private func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let acquired = state.withLock { state -> Bool in
                if !state.locked { state.locked = true; return true }
                state.waiters.append(continuation)
                return false
            }
            if acquired { continuation.resume() }
        }
    }

    private func release() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.waiters.isEmpty { state.locked = false; return nil }
            return state.waiters.removeFirst()
        }
        next?.resume()
    }
}

/// Anything usable as an etcd key or value.
public protocol EtcdBytes: Sendable {
    /// The raw bytes.
    var etcdBytes: Data { get }
}

extension String: EtcdBytes { public var etcdBytes: Data { Data(utf8) } }
extension Substring: EtcdBytes { public var etcdBytes: Data { Data(utf8) } }
extension Data: EtcdBytes { public var etcdBytes: Data { self } }
extension Array: EtcdBytes where Element == UInt8 { public var etcdBytes: Data { Data(self) } }
