import ArgumentParser
import EtcdAPI
import EtcdServer
import Foundation

/// `etcd`: starts a member. Flags follow etcd's names; each can also be set
/// through its `ETCD_*` environment variable (e.g. `ETCD_DATA_DIR`).
@main
struct EtcdCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "etcd",
        abstract: "A distributed, reliable key-value store (etcd in Swift)."
    )

    @Option(name: .customLong("name"), help: "Human-readable name for this member.")
    var name: String?

    @Option(name: .customLong("data-dir"), help: "Path to the data directory (default: <name>.etcd).")
    var dataDir: String?

    @Option(name: .customLong("listen-client-urls"), help: "Comma-separated URLs to listen on for client traffic.")
    var listenClientURLs: String?

    @Option(name: .customLong("advertise-client-urls"), help: "Comma-separated client URLs to advertise to the cluster.")
    var advertiseClientURLs: String?

    @Option(name: .customLong("initial-advertise-peer-urls"), help: "Comma-separated peer URLs of this member to advertise to the cluster.")
    var initialAdvertisePeerURLs: String?

    @Option(name: .customLong("initial-cluster-token"), help: "Initial cluster token; part of every member id (default: etcd-cluster).")
    var initialClusterToken: String?

    @Option(name: .customLong("snapshot-count"), help: "Applied entries between raft snapshots, which release the WAL (default: 10000).")
    var snapshotCount: String?

    @Option(name: .customLong("max-request-bytes"), help: "Maximum client request size in bytes (default: 1572864).")
    var maxRequestBytes: String?

    @Option(name: .customLong("max-txn-ops"), help: "Maximum number of operations in a txn request (default: 128).")
    var maxTxnOps: String?

    @Flag(name: .customLong("version"), help: "Print the version and exit.")
    var printVersion = false

    func run() async throws {
        if printVersion {
            print("etcd Version: \(EtcdVersion.server)")
            print("API Version: \(EtcdVersion.api)")
            return
        }
        let env = ProcessInfo.processInfo.environment
        func setting(_ flag: String?, _ variable: String) -> String? { flag ?? env[variable] }
        let split = { (s: String) in s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }

        var config = ServerConfig(
            name: setting(name, "ETCD_NAME") ?? "default",
            dataDir: setting(dataDir, "ETCD_DATA_DIR"),
            listenClientURLs: setting(listenClientURLs, "ETCD_LISTEN_CLIENT_URLS").map(split) ?? ["http://localhost:2379"],
            advertiseClientURLs: setting(advertiseClientURLs, "ETCD_ADVERTISE_CLIENT_URLS").map(split) ?? ["http://localhost:2379"]
        )
        if let urls = setting(initialAdvertisePeerURLs, "ETCD_INITIAL_ADVERTISE_PEER_URLS") { config.initialAdvertisePeerURLs = split(urls) }
        if let token = setting(initialClusterToken, "ETCD_INITIAL_CLUSTER_TOKEN") { config.initialClusterToken = token }
        func number<T: FixedWidthInteger>(_ flag: String?, _ variable: String, _ option: String, minimum: T) throws -> T? {
            guard let text = setting(flag, variable) else { return nil }
            guard let value = T(text), value >= minimum else { throw ValidationError("invalid value \"\(text)\" for --\(option)") }
            return value
        }
        if let n: UInt64 = try number(snapshotCount, "ETCD_SNAPSHOT_COUNT", "snapshot-count", minimum: 1) { config.snapshotCount = n }
        if let n: Int = try number(maxRequestBytes, "ETCD_MAX_REQUEST_BYTES", "max-request-bytes", minimum: 1) { config.maxRequestBytes = n }
        if let n: Int = try number(maxTxnOps, "ETCD_MAX_TXN_OPS", "max-txn-ops", minimum: 1) { config.maxTxnOps = n }
        let addresses: [ListenAddress]
        do {
            addresses = try config.listenClientURLs.map { try ListenAddress(parsing: $0) }
        } catch {
            throw ValidationError("--listen-client-urls: \(error)")
        }
        try FileManager.default.createDirectory(atPath: config.memberDir, withIntermediateDirectories: true)
        let member = try Member(config: config)
        defer { member.stop() }
        log("member \(String(member.memberID, radix: 16)) started in cluster \(String(member.clusterID, radix: 16)), data dir \(config.dataDir)")

        let listeners = addresses.map { ClientListener(address: $0, member: member) }
        // SIGTERM / SIGINT: stop accepting, finish in-flight calls, then the
        // deferred member.stop() commits the backend and closes the WAL.
        let signalSources = [SIGTERM, SIGINT].map { number -> any DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler {
                FileHandle.standardError.write(Data("etcd: received signal \(number), shutting down\n".utf8))
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
            for listener in listeners {
                let port = try await listener.boundPort() ?? listener.address.port
                log("serving insecure client requests on \(listener.address.host):\(port), this is strongly discouraged!")
            }
            // Operators' scripts wait for these lines, as with etcd.
            log("enabled capabilities for version \(EtcdVersion.api)")
            log("ready to serve client requests")
        }
    }

    private func log(_ message: String) {
        FileHandle.standardError.write(Data("etcd: \(message)\n".utf8))
    }
}
