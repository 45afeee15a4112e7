import EtcdAPI
import EtcdServer
import TransportSecurity
import Foundation
import Locks
import Logging
import Yams

/// `etcd`: starts a member. The command line is etcd's — Go's `flag`
/// syntax (`-name x`, `--name=x`, bare `--pre-vote`), with etcd's flag
/// names and defaults; each flag can also be set through its `ETCD_*`
/// environment variable (the flag wins), or all of them through
/// `--config-file` (then flags and environment are ignored). etcd settings
/// we do not implement refuse the start (see `SettingsSources`).
@main
enum EtcdCommand {
    static func main() async {
        let environment = ProcessInfo.processInfo.environment
        let flags: CommandLineFlags
        do { flags = try CommandLineFlags(parsing: Array(CommandLine.arguments.dropFirst())) } catch {
            if case .strayArgument = error {
                fail("etcd: \(error)", status: error.exitCode)
            }
            fail("\(error)\n\(usage)", status: error.exitCode)
        }
        if flags.help {
            // As etcd: Go's usage on standard error, the flags on standard output.
            FileHandle.standardError.write(Data(usage.utf8))
            print(help)
            exit(0)
        }
        if flags.values[EtcdFlag.version.name].flatMap(GoBool.parse) == true {
            print("etcd Version: \(EtcdVersion.server)")
            print("API Version: \(EtcdVersion.api)")
            exit(0)
        }

        let resolved: ResolvedSettings
        let config: ServerConfig
        do {
            // etcd reads ETCD_CONFIG_FILE too; an empty path means none.
            let configFile = flags.values[EtcdFlag.configFile.name] ?? environment[EtcdFlag.configFile.environmentVariable]
            if let configFile, !configFile.isEmpty {
                resolved = try SettingsSources.resolve(configFile: Self.configFile(at: configFile))
            } else {
                resolved = try SettingsSources.resolve(flags: flags, environment: environment)
            }
            config = try ServerConfig(settings: resolved.settings)
        } catch {
            fail("etcd: \(error)", status: 1)
        }
        do { try await run(config: config, warnings: resolved.warnings) } catch {
            fail("etcd: \(error)", status: 1)
        }
    }

    static func fail(_ message: String, status: Int32) -> Never {
        FileHandle.standardError.write(Data((message + "\n").utf8))
        exit(status)
    }

    /// Serves until a signal or the member stops.
    static func run(config: ServerConfig, warnings: [String]) async throws {
        let addresses = try config.listenClientURLs.map { try ListenAddress(parsing: $0) }
        let level = EtcdLogHandler.level(named: config.logLevel) ?? .info
        LoggingSystem.bootstrap { _ in EtcdLogHandler(level: level) }
        let logger = Logger(label: "etcd")
        for warning in warnings { logger.warning("\(warning)") }
        func log(_ message: String) { logger.info("\(message)") }

        // Certificates first: a bad file stops the start before the data dir is touched.
        var clientCredentials: TLSCredentials?
        let metricsAddresses = try config.listenMetricsURLs.map { try ListenAddress(parsing: $0) }
        if (addresses + metricsAddresses).contains(where: { $0.scheme == .https }) {
            clientCredentials = try TLSCredentials(settings: config.clientTLS, autoTLSDirectory: config.dataDir + "/fixtures/client",
                                                   hosts: (addresses + metricsAddresses).map(\.host), extendedUsage: .server)
        }
        let member = try await Member.open(config: config)
        defer { member.stop() }
        do { try await member.startPeers() } catch {
            throw StartupError("cannot listen for peer traffic: \(error)")
        }
        for url in config.listenPeerURLs { log("serving peer traffic on \(url)") }
        log("member \(String(member.memberID, radix: 16)) started in cluster \(String(member.clusterID, radix: 16)), data dir \(config.dataDir)")

        let listeners = clientListeners(addresses: addresses, credentials: clientCredentials, member: member)
            + metricsAddresses.map { address in
                let security: ListenerSecurity = address.scheme == .https ? clientCredentials.map { .tls($0) } ?? .plaintext : .plaintext
                return ClientListener.metricsListener(address: address, member: member, security: security)
            }
        // Announcing the member (its serving lines, publishing its
        // attributes through raft, "ready to serve"): a task of its own, so
        // a signal ends it too (without a leader, publishing waits forever).
        let announcing = Announcement()
        // SIGTERM / SIGINT: stop accepting, finish in-flight calls, then the
        // deferred member.stop() commits the backend and closes the WAL.
        let signalSources = [SIGTERM, SIGINT].map { number -> any DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler {
                logger.info("received signal; shutting down", metadata: ["signal": "\(number)"])
                announcing.cancel()
                for listener in listeners { listener.stop() }
            }
            source.resume()
            return source
        }
        defer { signalSources.forEach { $0.cancel() } }
        try await withThrowingDiscardingTaskGroup { group in
            for listener in listeners {
                group.addTask { try await listener.serve() }
            }
            // A member that stops by itself (removed from the cluster, a
            // storage error) takes the listeners down with it.
            Task {
                await member.waitUntilStopped()
                announcing.cancel()
                for listener in listeners { listener.stop() }
            }
            let announcement = Task {
                do {
                    try await Self.announce(member: member, listeners: listeners, logger: logger)
                } catch {
                    // Cancelled by a signal or the member's stop.
                }
            }
            announcing.set(announcement)
        }
    }

    /// The lines operators' scripts wait for, as etcd prints them: where
    /// it serves, then (once its attributes are published) that it is ready.
    static func announce(member: Member, listeners: [ClientListener], logger: Logger) async throws {
        func log(_ message: String) { logger.info("\(message)") }
        for listener in listeners {
            let port = try await listener.boundPort() ?? listener.address.port
            if listener.metricsOnly {
                log("serving metrics on \(listener.security.credentials == nil ? "http" : "https")://\(listener.address.host):\(port)")
                continue
            }
            switch listener.security {
            case .plaintext:
                log("serving insecure client requests on \(listener.address.host):\(port), this is strongly discouraged!")
            case .tls:
                log("serving client requests on \(listener.address.host):\(port)")
            case .both:
                log("serving client requests on \(listener.address.host):\(port)")
                log("serving insecure client requests on \(listener.address.host):\(port), this is strongly discouraged!")
            }
        }
        // As etcd, a member serves once its attributes are published.
        do { try await member.publish() } catch is CancellationError {
            throw CancellationError()
        } catch {
            logger.warning("failed to publish local member to cluster through raft", metadata: ["error": "\(error)"])
        }
        // Operators' scripts wait for these lines, as with etcd.
        log("enabled capabilities for version \(EtcdVersion.api)")
        log("ready to serve client requests")
        SystemdNotifier.notifyReady()
    }

    /// One listener per address; an address listed as both `http://` and
    /// `https://` serves both on its one port, as etcd does.
    static func clientListeners(addresses: [ListenAddress], credentials: TLSCredentials?, member: Member) -> [ClientListener] {
        var order: [String] = []
        var schemes: [String: (address: ListenAddress, plain: Bool, secure: Bool)] = [:]
        for address in addresses {
            let key = "\(address.host):\(address.port)"
            if schemes[key] == nil { order.append(key); schemes[key] = (address, false, false) }
            if address.scheme == .https { schemes[key]!.secure = true } else { schemes[key]!.plain = true }
        }
        return order.map { key in
            let entry = schemes[key]!
            let security: ListenerSecurity = switch (entry.plain, entry.secure, credentials) {
            case (true, true, let credentials?): .both(credentials)
            case (false, true, let credentials?): .tls(credentials)
            default: .plaintext
            }
            return ClientListener(address: entry.address, member: member, security: security, clientCredentials: credentials)
        }
    }

    /// etcd's YAML config file as values: the same names as the flags,
    /// TLS settings in their two blocks.
    static func configFile(at path: String) throws -> [String: ConfigFileValue] {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw StartupError("cannot read --config-file \(path): \(error.localizedDescription)")
        }
        let document: Any?
        do { document = try Yams.load(yaml: text) } catch {
            throw StartupError("--config-file \(path) is not valid YAML: \(error)")
        }
        guard case let .mapping(map) = configFileValue(document) else {
            throw StartupError("--config-file \(path) must be a YAML mapping of etcd settings")
        }
        return map
    }

    static func configFileValue(_ value: Any?) -> ConfigFileValue {
        guard let value, !(value is NSNull) else { return .null }
        switch value {
        case let list as [Any]: return .list(list.map(configFileValue))
        case let map as [String: Any]: return .mapping(map.mapValues(configFileValue))
        case let map as [AnyHashable: Any]:
            return .mapping(Dictionary(map.map { ("\($0.key.base)", configFileValue($0.value)) }, uniquingKeysWith: { first, _ in first }))
        default: return .scalar("\(value)")
        }
    }

    static let usage = """
        Usage:

          etcd [flags]
            Start an etcd server.

          etcd --version
            Show the version of etcd.

          etcd -h | --help
            Show the help information about etcd.

          etcd --config-file
            Path to the server configuration file. Note that if a configuration file is provided, other command line flags and environment variables will be ignored.

        """

    /// The flags we implement; `-name x`, `--name x` and `--name=x` alike.
    static let help: String = {
        let rows: [(String, String)] = [
            ("name 'default'", "Human-readable name for this member."),
            ("data-dir '${name}.etcd'", "Path to the data directory."),
            ("wal-dir ''", "Path to the dedicated wal directory."),
            ("snapshot-count '10000'", "Number of committed transactions to trigger a snapshot to disk."),
            ("heartbeat-interval '100'", "Time (in milliseconds) of a heartbeat interval."),
            ("election-timeout '1000'", "Time (in milliseconds) for an election to timeout."),
            ("listen-peer-urls 'http://localhost:2380'", "List of URLs to listen on for peer traffic."),
            ("listen-client-urls 'http://localhost:2379'", "List of URLs to listen on for client traffic."),
            ("listen-metrics-urls ''", "List of additional URLs to listen on that serve the /metrics and /health endpoints."),
            ("quota-backend-bytes '0'", "Raise alarms when backend size exceeds the given quota (0 defaults to 2 GiB)."),
            ("auto-compaction-retention '0'", "Auto compaction retention length. 0 means disable auto compaction."),
            ("auto-compaction-mode 'periodic'", "Interpret 'auto-compaction-retention' one of: periodic|revision. 'periodic' for duration based retention, defaulting to hours if no time unit is provided (e.g. '5m'). 'revision' for revision number based retention."),
            ("max-txn-ops '128'", "Maximum number of operations permitted in a transaction."),
            ("max-request-bytes '1572864'", "Maximum client request size in bytes the server will accept."),
            ("max-concurrent-streams 'math.MaxUint32'", "Maximum concurrent streams that each client can open at a time."),
            ("grpc-keepalive-min-time '5s'", "Minimum duration interval that a client should wait before pinging server."),
            ("grpc-keepalive-interval '2h'", "Frequency duration of server-to-client ping to check if a connection is alive."),
            ("grpc-keepalive-timeout '20s'", "Additional duration of wait before closing a non-responsive connection."),
            ("initial-advertise-peer-urls 'http://localhost:2380'", "List of this member's peer URLs to advertise to the rest of the cluster."),
            ("initial-cluster 'default=http://localhost:2380'", "Initial cluster configuration for bootstrapping."),
            ("initial-cluster-state 'new'", "Initial cluster state ('new' or 'existing')."),
            ("initial-cluster-token 'etcd-cluster'", "Initial cluster token for the etcd cluster during bootstrap."),
            ("advertise-client-urls 'http://localhost:2379'", "List of this member's client URLs to advertise to the public."),
            ("pre-vote 'true'", "Enable the raft Pre-Vote algorithm to prevent disruption when a node that has been partitioned away rejoins the cluster."),
            ("log-level 'info'", "Configures log level. Only supports debug, info, warn, error, panic, or fatal."),
            ("experimental-snapshot-catchup-entries '5000'", "Number of entries for a slow follower to catch up after compacting the raft storage entries."),
            ("experimental-watch-progress-notify-interval '10m'", "Duration of periodic watch progress notifications."),
            ("experimental-initial-corrupt-check 'false'", "Enable to check data corruption before serving any client/peer traffic."),
            ("experimental-corrupt-check-time '0s'", "Duration of time between cluster corruption check passes."),
            ("experimental-compact-hash-check-enabled 'false'", "Enable leader to periodically check followers compaction hashes."),
            ("experimental-compact-hash-check-time '1m0s'", "Duration of time between leader checks followers compaction hashes."),
            ("feature-gates ''", "A set of key=value pairs that describe server level feature gates for alpha/experimental features. Options are: CompactHashCheck=true|false (ALPHA - default=false), InitialCorruptCheck=true|false (ALPHA - default=false)"),
        ]
        return "\nFlags:\n" + rows.map { "  --\($0.0)\n    \($0.1)\n" }.joined(separator: "")
            + "\netcd's other flags (TLS, discovery, auth, metrics, ...) are recognised and refused while not supported,\n"
            + "as are their ETCD_* variables and config file keys, unless set to etcd's default.\n"
    }()
}

struct StartupError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The task announcing the member, cancellable from a signal handler.
final class Announcement: Sendable {
    private let state = Mutex<(task: Task<Void, Never>?, cancelled: Bool)>((nil, false))

    /// Also cancels `announcing` at once when a signal came first.
    func set(_ announcing: Task<Void, Never>) {
        let cancelled = state.withLock { state in
            state.task = announcing
            return state.cancelled
        }
        if cancelled { announcing.cancel() }
    }

    func cancel() {
        state.withLock { state in
            state.cancelled = true
            return state.task
        }?.cancel()
    }
}
