import ArgumentParser
import EtcdAPI
import EtcdServer
import Foundation
import Logging
import Yams

/// `etcd`: starts a member. Flags use etcd's names and defaults; each can
/// also be set through its `ETCD_*` environment variable (the flag wins), or
/// all of them through `--config-file` (then flags and environment are ignored).
@main
struct EtcdCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "etcd",
        abstract: "A distributed, reliable key-value store (etcd in Swift)."
    )

    @Option(name: .customLong("name"), help: "Human-readable name for this member (default: default).")
    var name: String?
    @Option(name: .customLong("data-dir"), help: "Path to the data directory (default: <name>.etcd).")
    var dataDir: String?
    @Option(name: .customLong("wal-dir"), help: "Path to a dedicated WAL directory.")
    var walDir: String?
    @Option(name: .customLong("listen-client-urls"), help: "URLs to listen on for client traffic (default: http://localhost:2379).")
    var listenClientURLs: String?
    @Option(name: .customLong("advertise-client-urls"), help: "Client URLs to advertise to the cluster (default: http://localhost:2379).")
    var advertiseClientURLs: String?
    @Option(name: .customLong("listen-peer-urls"), help: "URLs to listen on for peer traffic (default: http://localhost:2380).")
    var listenPeerURLs: String?
    @Option(name: .customLong("initial-advertise-peer-urls"), help: "This member's peer URLs to advertise (default: http://localhost:2380).")
    var initialAdvertisePeerURLs: String?
    @Option(name: .customLong("initial-cluster"), help: "Initial cluster configuration, name=url,... (default: <name>=<initial-advertise-peer-urls>).")
    var initialCluster: String?
    @Option(name: .customLong("initial-cluster-state"), help: "new or existing (default: new).")
    var initialClusterState: String?
    @Option(name: .customLong("initial-cluster-token"), help: "Initial cluster token; part of every member id (default: etcd-cluster).")
    var initialClusterToken: String?
    @Option(name: .customLong("snapshot-count"), help: "Applied entries between raft snapshots (default: 10000).")
    var snapshotCount: String?
    @Option(name: .customLong("heartbeat-interval"), help: "Time of a heartbeat interval, in milliseconds (default: 100).")
    var heartbeatInterval: String?
    @Option(name: .customLong("election-timeout"), help: "Time of an election timeout, in milliseconds (default: 1000).")
    var electionTimeout: String?
    @Option(name: .customLong("max-request-bytes"), help: "Maximum client request size in bytes (default: 1572864).")
    var maxRequestBytes: String?
    @Option(name: .customLong("max-txn-ops"), help: "Maximum number of operations in a txn request (default: 128).")
    var maxTxnOps: String?
    @Option(name: .customLong("quota-backend-bytes"), help: "Backend size limit in bytes (default: 2 GiB).")
    var quotaBackendBytes: String?
    @Option(name: .customLong("log-level"), help: "debug, info, warn, error, panic or fatal (default: info).")
    var logLevel: String?
    @Option(name: .customLong("experimental-watch-progress-notify-interval"), help: "Interval of progress notifications to watchers that asked for them (default: 10m).")
    var watchProgressNotifyInterval: String?
    @Option(name: .customLong("experimental-snapshot-catchup-entries"), help: "Entries kept for slow followers to catch up before they need a snapshot (default: 5000).")
    var snapshotCatchUpEntries: String?
    @Option(name: .customLong("pre-vote"), help: "Enable the raft pre-vote algorithm (default: true).")
    var preVote: String?
    @Option(name: .customLong("config-file"), help: "YAML configuration file with etcd's keys; flags and environment are then ignored.")
    var configFile: String?

    @Flag(name: .customLong("version"), help: "Print the version and exit.")
    var printVersion = false

    private var flags: [ConfigKey: String?] {
        [
            .name: name, .dataDir: dataDir, .walDir: walDir, .listenClientURLs: listenClientURLs,
            .advertiseClientURLs: advertiseClientURLs, .listenPeerURLs: listenPeerURLs,
            .initialAdvertisePeerURLs: initialAdvertisePeerURLs, .initialCluster: initialCluster,
            .initialClusterState: initialClusterState, .initialClusterToken: initialClusterToken,
            .snapshotCount: snapshotCount, .heartbeatInterval: heartbeatInterval, .electionTimeout: electionTimeout,
            .maxRequestBytes: maxRequestBytes, .maxTxnOps: maxTxnOps, .quotaBackendBytes: quotaBackendBytes,
            .logLevel: logLevel, .watchProgressNotifyInterval: watchProgressNotifyInterval, .preVote: preVote,
            .snapshotCatchUpEntries: snapshotCatchUpEntries,
        ]
    }

    func run() async throws {
        if printVersion {
            print("etcd Version: \(EtcdVersion.server)")
            print("API Version: \(EtcdVersion.api)")
            return
        }
        let settings = try configFile.map(Self.settings(fromFile:)) ?? Self.settings(flags: flags, environment: ProcessInfo.processInfo.environment)
        let config: ServerConfig
        do {
            config = try ServerConfig(settings: settings)
        } catch {
            throw ValidationError(error.description)
        }
        let addresses = try config.listenClientURLs.map { try ListenAddress(parsing: $0) }
        let level = EtcdLogHandler.level(named: config.logLevel) ?? .info
        LoggingSystem.bootstrap { _ in EtcdLogHandler(level: level) }
        let logger = Logger(label: "etcd")
        func log(_ message: String) { logger.info("\(message)") }

        let member = try await Member.open(config: config)
        defer { member.stop() }
        do { try await member.startPeers() } catch {
            throw ValidationError("cannot listen for peer traffic: \(error)")
        }
        for url in config.listenPeerURLs { log("serving peer traffic on \(url)") }
        log("member \(String(member.memberID, radix: 16)) started in cluster \(String(member.clusterID, radix: 16)), data dir \(config.dataDir)")

        let listeners = addresses.map { ClientListener(address: $0, member: member) }
        // SIGTERM / SIGINT: stop accepting, finish in-flight calls, then the
        // deferred member.stop() commits the backend and closes the WAL.
        let signalSources = [SIGTERM, SIGINT].map { number -> any DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler {
                logger.info("received signal; shutting down", metadata: ["signal": "\(number)"])
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
                for listener in listeners { listener.stop() }
            }
            for listener in listeners {
                let port = try await listener.boundPort() ?? listener.address.port
                log("serving insecure client requests on \(listener.address.host):\(port), this is strongly discouraged!")
            }
            // As etcd, a member serves once its attributes are published.
            do { try await member.publish() } catch {
                logger.warning("failed to publish local member to cluster through raft", metadata: ["error": "\(error)"])
            }
            // Operators' scripts wait for these lines, as with etcd.
            log("enabled capabilities for version \(EtcdVersion.api)")
            log("ready to serve client requests")
            SystemdNotifier.notifyReady()
        }
    }

    /// Flags win over `ETCD_*` variables.
    static func settings(flags: [ConfigKey: String?], environment: [String: String]) -> [ConfigKey: String] {
        var settings: [ConfigKey: String] = [:]
        for key in ConfigKey.allCases {
            if let value = (flags[key] ?? nil) ?? environment[key.environmentVariable] { settings[key] = value }
        }
        return settings
    }

    /// etcd's YAML config file: the same names as the flags; lists may be
    /// YAML sequences or comma-separated strings.
    static func settings(fromFile path: String) throws -> [ConfigKey: String] {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ValidationError("cannot read --config-file \(path): \(error.localizedDescription)")
        }
        let document: Any?
        do { document = try Yams.load(yaml: text) } catch {
            throw ValidationError("--config-file \(path) is not valid YAML: \(error)")
        }
        guard let map = document as? [String: Any] else {
            throw ValidationError("--config-file \(path) must be a YAML mapping of etcd settings")
        }
        var settings: [ConfigKey: String] = [:]
        for (name, value) in map {
            // etcd's file has keys we do not act on yet (tls, logging, ...); they are ignored, as unknown keys are by etcd.
            guard let key = ConfigKey(rawValue: name) else { continue }
            switch value {
            case let list as [Any]: settings[key] = list.map { "\($0)" }.joined(separator: ",")
            case is NSNull: continue
            default: settings[key] = "\(value)"
            }
        }
        return settings
    }
}
