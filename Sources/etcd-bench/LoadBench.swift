import ArgumentParser
import EtcdClient
import EtcdGRPC
import EtcdProto
import Foundation
import GRPCWire
import NIOCore
import NIOPosix
import GRPCCore
import GRPCNIOTransportHTTP2
import HTTP2PingResponder
import NIOSSL

/// Options shared by the load generators that talk to a running server.
struct LoadOptions: ParsableArguments {
    @Option(name: [.customLong("endpoints"), .customLong("endpoint")],
            help: "Server addresses host:port[,host:port...] (ours or etcd's); connections are spread over them.")
    var endpoint = "127.0.0.1:2379"

    @Option(help: "gRPC connections.")
    var conns = 1

    @Option(help: "Concurrent clients (spread over the connections).")
    var clients = 16

    @Option(help: "Requests in total.")
    var total = 10_000

    @Option(help: "Key size in bytes.")
    var keySize = 8

    @Option(help: "Number of distinct keys.")
    var keySpaceSize = 10_000

    @Flag(help: "Each client writes keys in order (from its own offset) instead of spreading them over the key space.")
    var sequentialKeys = false

    @Option(help: "TLS: the CA bundle that verifies the server (turns TLS on).")
    var cacert: String?

    @Option(help: "TLS: client certificate (mutual TLS).")
    var cert: String?

    @Option(help: "TLS: client key (mutual TLS).")
    var key: String?

    /// A client TLS context from --cacert/--cert/--key; nil: plaintext.
    func tlsContext() throws -> NIOSSLContext? {
        guard cacert != nil || cert != nil || key != nil else { return nil }
        var tls = TLSConfiguration.makeClientConfiguration()
        if let cacert { tls.trustRoots = .file(cacert) }
        if let cert { tls.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) } }
        if let key { tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)) }
        tls.applicationProtocols = ["h2"]
        return try NIOSSLContext(configuration: tls)
    }

    @Option(help: "name:password to authenticate as (the token then goes with every request).")
    var user: String?

    @Option(help: "lean (GRPCWire's client driven from its completions on the event loop) or etcdclient (the EtcdClient library, one task per client awaiting each call).")
    var client = "lean"

    @Flag(help: "Print the result as one JSON object instead of text.")
    var json = false

    func validate() throws {
        guard conns > 0, clients > 0, total > 0, keySize >= 4, keySpaceSize > 0 else {
            throw ValidationError("conns, clients, total and key-space-size must be positive; key-size at least 4")
        }
        guard client == "lean" || client == "etcdclient" else {
            throw ValidationError("--client must be lean or etcdclient")
        }
    }

    /// `--endpoints` as (host, port) pairs.
    func addresses() throws -> [(String, Int)] {
        let addresses = try endpoint.split(separator: ",").map { endpoint -> (String, Int) in
            let parts = endpoint.split(separator: ":")
            guard parts.count == 2, let port = Int(parts[1]) else { throw ValidationError("endpoint must be host:port") }
            return (String(parts[0]), port)
        }
        guard !addresses.isEmpty else { throw ValidationError("no endpoint given") }
        return addresses
    }

    /// The key for request `n` of a worker (`n` already mixes in the worker).
    func key(_ n: Int) -> Data {
        var key = Data(count: keySize)
        let spread = sequentialKeys ? UInt64(truncatingIfNeeded: n) : UInt64(truncatingIfNeeded: n) &* 0x9E37_79B9_7F4A_7C15
        let value = UInt32(spread % UInt64(keySpaceSize))
        key.withUnsafeMutableBytes { $0.storeBytes(of: value.bigEndian, toByteOffset: keySize - 4, as: UInt32.self) }
        return key
    }
}

/// Runs `total` requests from `clients` concurrent clients and prints
/// throughput and latency percentiles, in the style of etcd's benchmark tool.
enum LoadRunner {
    /// The unary load: `request(n)` builds the framed request for request
    /// number `n` (which mixes in the worker). Clients are driven from their
    /// completions on the connections' event loops through `WireClient`, so
    /// the load generator spends little CPU per request and leaves the cores
    /// to the server being measured.
    static func run(
        _ options: LoadOptions, label: String, path: String,
        request: @escaping @Sendable (Int) throws -> ByteBuffer,
        etcdClient call: (@Sendable (EtcdClient, Int) async throws -> Void)? = nil
    ) async throws {
        if options.client == "etcdclient" {
            guard let call else { throw ValidationError("--client etcdclient is not available for \(label)") }
            return try await EtcdClientLoad.run(options, label: label, call: call)
        }
        let addresses = try options.addresses()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: min(max(options.conns, addresses.count), System.coreCount))
        do {
            try await measure(options, label: label, path: path, addresses: addresses, group: group, request: request)
            try await group.shutdownGracefully()
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private static func measure(
        _ options: LoadOptions, label: String, path: String, addresses: [(String, Int)],
        group: MultiThreadedEventLoopGroup, request: @escaping @Sendable (Int) throws -> ByteBuffer
    ) async throws {
        var connections: [WireClient] = []
        let tls = try options.tlsContext()
        var token: String?
        for connection in 0..<max(options.conns, addresses.count) {
            let (host, port) = addresses[connection % addresses.count]
            var configuration = WireClient.Configuration(host: host, port: port)
            // A Go server (real etcd) sends a BDP PING with most responses; answer them before NIOHTTP2 counts them.
            configuration.onConnect = { channel in
                if let tls {
                    // An IP literal is checked against the certificate's IP addresses (no SNI).
                    let name = host.allSatisfy({ $0.isNumber || $0 == "." || $0 == ":" }) ? nil : host
                    try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: name))
                }
                try channel.pipeline.syncOperations.addHandler(HTTP2PingResponder(expectsClientPreface: false))
            }
            if let token { configuration.metadata = [("token", token)] }
            var client = try await WireClient.connect(configuration, group: group).get()
            if token == nil, let user = options.user {
                // Authenticate once on the first connection; every connection then sends the token.
                token = try await authenticate(user, on: client)
                try? await client.close().get()
                configuration.metadata = [("token", token!)]
                client = try await WireClient.connect(configuration, group: group).get()
            }
            connections.append(client)
        }

        let perClient = options.total / options.clients
        let cpu = ProcessCPU.now()
        let start = NIODeadline.now()
        let results = try await withThrowingTaskGroup(of: ([Duration], Int).self) { tasks in
            for (index, connection) in connections.enumerated() {
                let workers = stride(from: index, to: options.clients, by: connections.count).map { worker in
                    (worker, perClient + (worker < options.total % options.clients ? 1 : 0))
                }
                let done = connection.eventLoop.makePromise(of: ([Duration], Int).self)
                connection.eventLoop.execute {
                    LoadDriver(connection: connection, path: path, request: request, workers: workers, done: done).start()
                }
                tasks.addTask { try await done.futureResult.get() }
            }
            return try await LoadRunner.gather(&tasks)
        }
        let elapsed = Duration.nanoseconds(Int64((NIODeadline.now() - start).nanoseconds))
        let cpuSeconds = ProcessCPU.now() - cpu
        for connection in connections { try? await connection.close().get() }
        report(label: label, latencies: results.0, errors: results.1, elapsed: elapsed, cpuSeconds: cpuSeconds, options: options)
    }

    /// Auth.Authenticate as `user` (name:password); returns the token.
    static func authenticate(_ user: String, on client: WireClient) async throws -> String {
        let parts = user.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { throw ValidationError("--user must be name:password") }
        var request = Etcdserverpb_AuthenticateRequest()
        request.name = parts[0]
        request.password = parts[1]
        let framed = try request.framed()
        let promise = client.eventLoop.makePromise(of: ByteBuffer.self)
        client.eventLoop.execute {
            client.unary("/etcdserverpb.Auth/Authenticate", framed) { result in
                switch result {
                case .success(let bytes): promise.succeed(bytes)
                case .failure(let status): promise.fail(status)
                }
            }
        }
        let response = try Etcdserverpb_AuthenticateResponse(serializedBytes: Array(buffer: try await promise.futureResult.get()))
        return response.token
    }

    /// Runs one task per `--clients`, each with its number, its share of
    /// `--total` and a connection (round-robin); gathers their latencies and
    /// error counts and the elapsed time of the whole.
    static func runWorkers(
        _ options: LoadOptions, _ clients: [GRPCClient<HTTP2ClientTransport.Posix>],
        _ work: @escaping @Sendable (_ worker: Int, _ count: Int, _ client: GRPCClient<HTTP2ClientTransport.Posix>) async throws -> ([Duration], Int)
    ) async throws -> ([Duration], Int, Duration) {
        let clock = ContinuousClock()
        let start = clock.now
        let perClient = options.total / options.clients
        let outcome = try await withThrowingTaskGroup(of: ([Duration], Int).self) { workers in
            for worker in 0..<options.clients {
                let client = clients[worker % clients.count]
                let count = perClient + (worker < options.total % options.clients ? 1 : 0)
                workers.addTask { try await work(worker, count, client) }
            }
            return try await LoadRunner.gather(&workers)
        }
        return (outcome.0, outcome.1, clock.now - start)
    }

    /// Opens `--conns` gRPC connections to `--endpoint`, runs `body` with
    /// them, and closes them.
    static func withConnections<T: Sendable>(
        _ options: LoadOptions, _ body: ([GRPCClient<HTTP2ClientTransport.Posix>]) async throws -> T
    ) async throws -> T {
        let addresses = try options.addresses()

        var transports: [HTTP2ClientTransport.Posix] = []
        for connection in 0..<max(options.conns, addresses.count) {
            let (host, port) = addresses[connection % addresses.count]
            var config = HTTP2ClientTransport.Posix.Config.defaults
            // A Go server (real etcd) sends BDP pings too; answer them here.
            config.channelDebuggingCallbacks.onCreateTCPConnection = { channel in
                HTTP2PingResponder.install(on: channel, expectsClientPreface: false)
            }
            transports.append(try HTTP2ClientTransport.Posix(
                target: .ipv4(address: host, port: port), transportSecurity: .plaintext, config: config))
        }
        let grpcClients = transports.map { GRPCClient(transport: $0) }
        return try await withThrowingTaskGroup(of: Void.self) { connections in
            for client in grpcClients { connections.addTask { try await client.runConnections() } }
            defer { grpcClients.forEach { $0.beginGracefulShutdown() } }
            return try await body(grpcClients)
        }
    }

    /// Every worker's latencies and error count, together.
    static func gather(_ group: inout ThrowingTaskGroup<([Duration], Int), any Error>) async throws -> ([Duration], Int) {
        var all: [Duration] = []
        var errors = 0
        for try await (latencies, failed) in group {
            all += latencies
            errors += failed
        }
        return (all, errors)
    }

    /// Prints the run: throughput, latency percentiles and histogram, and
    /// (given `cpuSeconds`, this process's user+system CPU over the run) the
    /// load generator's CPU per request; as one JSON object with `--json`.
    static func report(label: String, latencies: [Duration], errors: Int, elapsed: Duration,
                       cpuSeconds: Double? = nil, options: LoadOptions? = nil) {
        let seconds = elapsed.seconds
        let sorted = latencies.map { Double($0.components.seconds) * 1e3 + Double($0.components.attoseconds) / 1e15 }.sorted()
        func percentile(_ p: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        let average = sorted.isEmpty ? 0 : sorted.reduce(0, +) / Double(sorted.count)
        let cpuPerCall = cpuSeconds.map { latencies.isEmpty ? 0 : $0 * 1e6 / Double(latencies.count) }
        if options?.json == true {
            var object: [String: Any] = [
                "label": label, "client": options?.client ?? "lean", "requests": latencies.count, "errors": errors,
                "seconds": seconds, "requestsPerSecond": Double(latencies.count) / seconds,
                "latencyMs": ["avg": average, "p50": percentile(0.5), "p90": percentile(0.9), "p99": percentile(0.99),
                              "p999": percentile(0.999), "max": sorted.last ?? 0],
            ]
            if let options { object["clients"] = options.clients; object["conns"] = options.conns }
            if let cpuSeconds, let cpuPerCall { object["clientCPUSeconds"] = cpuSeconds; object["clientCPUMicrosPerRequest"] = cpuPerCall }
            if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) {
                print(String(decoding: data, as: UTF8.self))
            }
            return
        }
        print("\(label): \(latencies.count) requests, \(errors) errors, \(String(format: "%.2f", seconds)) s")
        print(String(format: "  requests/s: %.0f", Double(latencies.count) / seconds))
        print(String(format: "  latency ms: avg %.3f  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f",
                     average, percentile(0.5), percentile(0.9), percentile(0.99), percentile(0.999), sorted.last ?? 0))
        if let cpuSeconds, let cpuPerCall {
            print(String(format: "  client CPU: %.2f s, %.1f µs/request (%@ client)", cpuSeconds, cpuPerCall, options?.client ?? "lean"))
        }
        printHistogram(sorted)
    }

    /// Counts per latency bucket (powers of two in milliseconds), as bars.
    static func printHistogram(_ sortedMilliseconds: [Double]) {
        guard let slowest = sortedMilliseconds.last, !sortedMilliseconds.isEmpty else { return }
        var bounds: [Double] = [0.125]
        while bounds.last! < slowest { bounds.append(bounds.last! * 2) }
        var counts = [Int](repeating: 0, count: bounds.count)
        var bucket = 0
        for value in sortedMilliseconds {
            while value > bounds[bucket] { bucket += 1 }
            counts[bucket] += 1
        }
        let widest = counts.max() ?? 1
        print("  histogram (ms):")
        for (i, count) in counts.enumerated() where count > 0 {
            let bar = String(repeating: "∎", count: max(1, count * 40 / widest))
            print(String(format: "  %8.3f - %8.3f [%7d] ", i == 0 ? 0 : bounds[i - 1], bounds[i], count) + bar)
        }
    }
}

struct PutLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "put", abstract: "Puts against a running server (ours or etcd).")

    @OptionGroup var options: LoadOptions

    @Option(help: "Value size in bytes.")
    var valSize = 256

    @Flag(help: "Through the JSON gateway (POST /v3/kv/put), one HTTP/1.1 connection per client.")
    var gateway = false

    func run() async throws {
        let options = options
        let value = Data(repeating: 0x61, count: valSize)
        if gateway {
            let text = value.base64EncodedString()
            return try await GatewayLoad.run(options, label: "gateway put", path: "/v3/kv/put") { n in
                #"{"key":"\#(options.key(n).base64EncodedString())","value":"\#(text)"}"#
            }
        }
        @Sendable func request(_ n: Int) -> Etcdserverpb_PutRequest {
            var request = Etcdserverpb_PutRequest()
            request.key = options.key(n)
            request.value = value
            return request
        }
        try await LoadRunner.run(options, label: "put", path: "/etcdserverpb.KV/Put",
                                 request: { try request($0).framed() },
                                 etcdClient: { client, n in try await client.put(request(n)) })
    }
}

struct RangeLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "range", abstract: "Single-key ranges against a running server.")

    @OptionGroup var options: LoadOptions

    @Option(help: "l (linearizable) or s (serializable).")
    var consistency = "l"

    @Flag(help: "Through the JSON gateway (POST /v3/kv/range), one HTTP/1.1 connection per client.")
    var gateway = false

    func run() async throws {
        let options = options
        let serializable = consistency == "s"
        if gateway {
            return try await GatewayLoad.run(options, label: serializable ? "gateway range (serializable)" : "gateway range (linearizable)",
                                             path: "/v3/kv/range") { n in
                #"{"key":"\#(options.key(n).base64EncodedString())"\#(serializable ? #","serializable":true"# : "")}"#
            }
        }
        @Sendable func request(_ n: Int) -> Etcdserverpb_RangeRequest {
            var request = Etcdserverpb_RangeRequest()
            request.key = options.key(n)
            request.serializable = serializable
            return request
        }
        try await LoadRunner.run(options, label: serializable ? "range (serializable)" : "range (linearizable)",
                                 path: "/etcdserverpb.KV/Range",
                                 request: { try request($0).framed() },
                                 etcdClient: { client, n in _ = try await client.range(request(n)) })
    }
}

struct TxnPutLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "txn-put", abstract: "Txns of puts against a running server.")

    @OptionGroup var options: LoadOptions

    @Option(help: "Value size in bytes.")
    var valSize = 256

    @Option(help: "Puts per txn.")
    var txnOps = 1

    func run() async throws {
        let options = options
        let value = Data(repeating: 0x61, count: valSize)
        let ops = txnOps
        try await LoadRunner.run(options, label: "txn-put", path: "/etcdserverpb.KV/Txn") { n in
            var txn = Etcdserverpb_TxnRequest()
            var keys = Set<Data>()
            for i in 0..<ops {
                // A txn may not write one key twice; skip the rare repeat.
                let key = options.key(n &* ops &+ i)
                guard keys.insert(key).inserted else { continue }
                var op = Etcdserverpb_RequestOp()
                var put = Etcdserverpb_PutRequest()
                put.key = key
                put.value = value
                op.requestPut = put
                txn.success.append(op)
            }
            return try txn.framed()
        }
    }
}

/// Drives one connection's clients on its event loop: each client sends its
/// next request from the completion of the last, until its count is done.
final class LoadDriver: @unchecked Sendable {
    private let connection: WireClient
    private let path: String
    private let request: @Sendable (Int) throws -> ByteBuffer
    private let workers: [(worker: Int, count: Int)]
    private let done: EventLoopPromise<([Duration], Int)>
    private var latencies: [Duration] = []
    private var errors = 0
    private var running = 0

    init(connection: WireClient, path: String, request: @escaping @Sendable (Int) throws -> ByteBuffer,
         workers: [(Int, Int)], done: EventLoopPromise<([Duration], Int)>) {
        self.connection = connection
        self.path = path
        self.request = request
        self.workers = workers.map { (worker: $0.0, count: $0.1) }
        self.done = done
        latencies.reserveCapacity(workers.reduce(0) { $0 + $1.1 })
    }

    func start() {
        for (worker, count) in workers where count > 0 {
            running += 1
            send(worker: worker, sent: 0, count: count)
        }
        if running == 0 { done.succeed((latencies, errors)) }
    }

    private func send(worker: Int, sent: Int, count: Int) {
        let message: ByteBuffer
        do {
            message = try request(worker &* 1_000_003 &+ sent)
        } catch {
            errors += 1
            next(worker: worker, sent: sent + 1, count: count)
            return
        }
        let begin = NIODeadline.now()
        connection.unary(path, message) { result in
            self.latencies.append(.nanoseconds(Int64((NIODeadline.now() - begin).nanoseconds)))
            if case .failure = result { self.errors += 1 }
            self.next(worker: worker, sent: sent + 1, count: count)
        }
    }

    private func next(worker: Int, sent: Int, count: Int) {
        if sent < count {
            send(worker: worker, sent: sent, count: count)
        } else {
            running -= 1
            if running == 0 { done.succeed((latencies, errors)) }
        }
    }
}

/// This process's CPU time (user + system), in seconds.
enum ProcessCPU {
    static func now() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }
}

/// The unary load through the EtcdClient library (`--client etcdclient`):
/// `--conns` clients (one connection per endpoint each), `--clients` tasks
/// spread over them, each awaiting its calls one after another, as an
/// application would.
enum EtcdClientLoad {
    static func run(_ options: LoadOptions, label: String,
                    call: @escaping @Sendable (EtcdClient, Int) async throws -> Void) async throws {
        let clients = try makeClients(options)
        defer { clients.forEach { $0.close() } }
        // Connect (and authenticate) before the clock starts, as the lean mode does.
        for client in clients { _ = try await client.status() }

        let perClient = options.total / options.clients
        let clock = ContinuousClock()
        let cpu = ProcessCPU.now()
        let start = clock.now
        let (latencies, errors) = try await withThrowingTaskGroup(of: ([Duration], Int).self) { tasks in
            for worker in 0..<options.clients {
                let client = clients[worker % clients.count]
                let count = perClient + (worker < options.total % options.clients ? 1 : 0)
                tasks.addTask {
                    var latencies: [Duration] = []
                    latencies.reserveCapacity(count)
                    var errors = 0
                    for sent in 0..<count {
                        let begin = clock.now
                        do { try await call(client, worker &* 1_000_003 &+ sent) } catch { errors += 1 }
                        latencies.append(clock.now - begin)
                    }
                    return (latencies, errors)
                }
            }
            return try await LoadRunner.gather(&tasks)
        }
        let elapsed = clock.now - start
        let cpuSeconds = ProcessCPU.now() - cpu
        LoadRunner.report(label: label, latencies: latencies, errors: errors, elapsed: elapsed, cpuSeconds: cpuSeconds, options: options)
    }

    /// `--conns` clients (TLS and user from the options), each starting at
    /// another endpoint so connections spread as the lean mode's do.
    static func makeClients(_ options: LoadOptions) throws -> [EtcdClient] {
        var clientOptions = EtcdClientOptions(dialTimeout: .seconds(5), commandTimeout: .seconds(30))
        if let user = options.user {
            let parts = user.split(separator: ":", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw ValidationError("--user must be name:password") }
            (clientOptions.username, clientOptions.password) = (parts[0], parts[1])
        }
        if options.cacert != nil || options.cert != nil || options.key != nil {
            clientOptions.tls = EtcdTLSOptions(caFile: options.cacert, certFile: options.cert, keyFile: options.key)
        }
        let endpoints = try options.addresses().map { "\($0.0):\($0.1)" }
        return try (0..<options.conns).map { index in
            let rotated = Array(endpoints[(index % endpoints.count)...] + endpoints[..<(index % endpoints.count)])
            return try EtcdClient(endpoints: rotated, options: clientOptions)
        }
    }
}
