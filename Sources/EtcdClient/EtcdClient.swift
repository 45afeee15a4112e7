import EtcdGRPC
import EtcdProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import HTTP2PingResponder
import Locks

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

/// One endpoint's gRPC connection.
final class EtcdEndpoint: Sendable {
    typealias Client = GRPCClient<HTTP2ClientTransport.Posix>
    let address: String
    let grpc: Client
    private let runner: Task<Void, Never>

    init(address: String, options: EtcdClientOptions) throws {
        self.address = address
        let (host, port, secure) = try Self.parse(address)
        var config = HTTP2ClientTransport.Posix.Config.defaults
        config.channelDebuggingCallbacks.onCreateTCPConnection = { channel in
            HTTP2PingResponder.install(on: channel, expectsClientPreface: false)
        }
        config.backoff = .init(initial: .milliseconds(100), max: .seconds(1), multiplier: 1.6, jitter: 0.1)
        if let time = options.keepAliveTime {
            config.connection.keepalive = .init(time: time, timeout: options.keepAliveTimeout, allowWithoutCalls: false)
        }
        let isIPv4 = host.split(separator: ".").count == 4 && host.allSatisfy({ $0.isNumber || $0 == "." })
        var security = HTTP2ClientTransport.Posix.TransportSecurity.plaintext
        if let tls = options.tls ?? (secure ? EtcdTLSOptions() : nil) {
            try tls.validate()
            // The name checked against the certificate (and sent as SNI); without
            // one, a DNS host's name or an IP address's SAN is checked.
            if let name = tls.serverName, !name.isEmpty { config.http2.authority = name }
            security = .tls { config in
                if let ca = tls.caFile { config.trustRoots = .certificates([.file(path: ca, format: .pem)]) }
                if let cert = tls.certFile { config.certificateChain = [.file(path: cert, format: .pem)] }
                if let key = tls.keyFile { config.privateKey = .file(path: key, format: .pem) }
                if tls.insecureSkipVerify { config.serverCertificateVerification = .noVerification }
            }
        }
        let transport: HTTP2ClientTransport.Posix
        do {
            transport = isIPv4
                ? try HTTP2ClientTransport.Posix(target: .ipv4(address: host, port: port), transportSecurity: security, config: config)
                : try HTTP2ClientTransport.Posix(target: .dns(host: host, port: port), transportSecurity: security, config: config)
        } catch {
            // The TLS context is built here: unparsable certificates, keys or CA bundles.
            let detail = EtcdClient.tlsFailure(error) ?? "\(error)"
            throw EtcdClientError.tlsConfiguration(message: "bad TLS configuration for \(address): \(detail)")
        }
        let grpc = GRPCClient(transport: transport)
        self.grpc = grpc
        runner = Task { try? await grpc.runConnections() }
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
        grpc.beginGracefulShutdown()
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

    func metadata() async throws -> Metadata {
        if let token = options.token { return ["token": .string(token)] }
        guard options.username != nil else { return [:] }
        let known = state.withLock { ($0.token, $0.authNotEnabled) }
        if let token = known.0 { return ["token": .string(token)] }
        if known.1 { return [:] }
        return try await authLock.withLock {
            if let token = state.withLock({ $0.token }) { return ["token": .string(token)] }
            do {
                let token = try await authenticateNow()
                return ["token": .string(token)]
            } catch let error where EtcdClientError(error) == .authNotEnabled {
                state.withLock { $0.authNotEnabled = true }
                return [:]
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
        let authRequest = request
        let response = try await call(.idempotent, authenticated: false) { grpc, callOptions, _ in
            try await Etcdserverpb_Auth.Client(wrapping: grpc).authenticate(authRequest, options: callOptions)
        }
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
        _ body: @Sendable (EtcdEndpoint.Client, CallOptions, Metadata) async throws -> R
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
            var callOptions = CallOptions.defaults
            if let deadline { callOptions.timeout = deadline - now }
            do {
                let metadata = authenticated ? try await metadata() : [:]
                return try await body(connection.grpc, callOptions, metadata)
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

    /// True when the RPC certainly never reached a server (no connection).
    static func neverSent(_ error: any Error) -> Bool {
        guard let rpc = error as? RPCError, rpc.code == .unavailable else { return false }
        let m = rpc.message
        return m.contains("Could not establish a connection") || m.contains("isn't ready") || m.contains("no subchannel")
            || m.contains("subchannel is unavailable") || m.contains("Failed to resolve") || m.contains("channel is shutdown")
            || m.contains("Subchannel shutdown")
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
            if let rpc = e as? RPCError { current = rpc.cause }
            else if let runtime = e as? RuntimeError { current = runtime.cause }
            else { return nil }
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

    // MARK: - Service clients

    func kv<R: Sendable>(_ safety: CallSafety, timeout: Duration?? = nil,
                         _ body: @Sendable @escaping (Etcdserverpb_KV.Client<HTTP2ClientTransport.Posix>, CallOptions, Metadata) async throws -> R) async throws -> R {
        try await call(safety, timeout: timeout) { grpc, o, m in try await body(Etcdserverpb_KV.Client(wrapping: grpc), o, m) }
    }
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
