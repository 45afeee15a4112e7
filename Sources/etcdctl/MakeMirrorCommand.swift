import EtcdClient
import EtcdProto
import Foundation
import Locks

func makeMirrorCommand(_ g: @escaping (Invocation) -> Globals) -> Command {
    let c = Command("make-mirror [options] <destination>", "Makes a mirror at the destination etcd cluster") { inv in
        try await runMakeMirror(inv, g(inv))
    }
    c.flag("prefix", .string, "", "Key-value prefix to mirror")
    c.flag("rev", .int, "0", "Specify the kv revision to start to mirror")
    c.flag("max-txn-ops", .int, "128", "Maximum number of operations permitted in a transaction during syncing updates.")
    c.flag("dest-prefix", .string, "", "destination prefix to mirror a prefix to a different prefix in the destination cluster")
    c.flag("no-dest-prefix", .bool, "false", "mirror key-values to the root of the destination cluster")
    c.flag("dest-cert", .string, "", "Identify secure client using this TLS certificate file for the destination cluster")
    c.flag("dest-key", .string, "", "Identify secure client using this TLS key file")
    c.flag("dest-cacert", .string, "", "Verify certificates of TLS enabled secure servers using this CA bundle")
    c.flag("dest-insecure-transport", .bool, "true", "Disable transport security for client connections")
    c.flag("dest-user", .string, "", "Destination username[:password] for authentication (prompt if password is not supplied)")
    c.flag("dest-password", .string, "", "Destination password for authentication (if this option is used, --user option shouldn't include password)")
    // How often the number of keys processed is printed (etcd: every 30 s); shorter in tests.
    c.flag("progress-interval", .duration, "30s", "How often to print the number of keys processed", hidden: true)
    return c
}

/// Copies the keys under `--prefix` at one revision to the destination, then
/// replays every later put and delete there, one txn per source revision
/// (split at `--max-txn-ops`), as etcd's make-mirror does. Runs until killed
/// or an error (a compacted watch, a failed write) ends it.
func runMakeMirror(_ inv: Invocation, _ globals: Globals) async throws {
    guard inv.args.count == 1 else { throw fail(ExitCode.badArgs, "make-mirror takes one destination argument") }
    let prefix = Data(inv.flag("prefix").string.utf8)
    var destPrefix = Data(inv.flag("dest-prefix").string.utf8)
    let noDestPrefix = inv.flag("no-dest-prefix").bool
    if noDestPrefix && !destPrefix.isEmpty {
        throw fail(ExitCode.badArgs, "`--dest-prefix` and `--no-dest-prefix` cannot be set at the same time, choose one")
    }
    if !noDestPrefix && destPrefix.isEmpty { destPrefix = prefix }
    let maxTxnOps = inv.flag("max-txn-ops").int
    guard maxTxnOps > 0 else { throw fail(ExitCode.badArgs, "--max-txn-ops must be positive, got \(maxTxnOps)") }
    let startRevision = inv.flag("rev").int
    guard startRevision >= 0 else { throw fail(ExitCode.badArgs, "--rev must not be negative, got \(startRevision)") }

    // The destination first, as etcd does: no auth or TLS from the global flags.
    try globals.applyEnvironment()
    var destOptions = EtcdClientOptions(dialTimeout: globals.flag("dial-timeout").duration, commandTimeout: nil)
    destOptions.keepAliveTime = globals.flag("keepalive-time").duration
    destOptions.keepAliveTimeout = globals.flag("keepalive-timeout").duration
    for name in ["dest-cert", "dest-key", "dest-cacert"] where inv.flag(name).changed && inv.flag(name).string.isEmpty {
        throw fail(ExitCode.badArgs, "empty string is passed to --\(name) option")
    }
    destOptions.tls = Globals.tlsOptions(cert: inv.flag("dest-cert").string, key: inv.flag("dest-key").string,
                                         cacert: inv.flag("dest-cacert").string,
                                         insecureTransport: inv.flag("dest-insecure-transport").bool, skipVerify: false)
    if let (user, password) = Globals.credentials(user: inv.flag("dest-user").string, password: inv.flag("dest-password").string,
                                                   prompt: "Destination Password: ") {
        destOptions.username = user
        destOptions.password = password
    }
    let destination: EtcdClient
    do { destination = try EtcdClient(endpoints: [inv.args[0]], options: destOptions) } catch { throw globals.clientCreationFailure(error) }
    let source = try globals.makeClient()
    // etcd's clients dial (and authenticate) when they are created: an unreachable
    // destination or source fails here, not once the first key needs writing.
    // (etcd 3.4's make-mirror waits forever for an unreachable destination when there is nothing to copy.)
    for client in [destination, source] {
        do { _ = try await client.status() } catch {
            throw fail(ExitCode.badConnection, "\(EtcdClientError(error))")
        }
    }

    let mirror = Mirror(source: source, destination: destination, prefix: prefix, destPrefix: destPrefix, maxTxnOps: Int(maxTxnOps))
    let interval = inv.flag("progress-interval").duration
    let progress = Task {
        while !Task.isCancelled {
            try? await Task.sleep(for: interval > .zero ? interval : .seconds(30))
            if Task.isCancelled { break }
            Out.print("\(mirror.total)")
        }
    }
    defer { progress.cancel() }
    do {
        try await mirror.run(startRevision: startRevision)
    } catch {
        throw fail(ExitCode.error, "\(EtcdClientError(error))")
    }
}

/// The replication loop of make-mirror.
final class Mirror: Sendable {
    let source: EtcdClient
    let destination: EtcdClient
    let prefix: Data
    let destPrefix: Data
    let maxTxnOps: Int
    /// Keys read from the source at a revision in one range call (etcd's mirror batch).
    static let baseBatchLimit: Int64 = 1000
    private let processed = Atomic<Int64>(0)

    /// Keys copied plus events replayed so far.
    var total: Int64 { processed.load(ordering: .relaxed) }

    init(source: EtcdClient, destination: EtcdClient, prefix: Data, destPrefix: Data, maxTxnOps: Int) {
        self.source = source
        self.destination = destination
        self.prefix = prefix
        self.destPrefix = destPrefix
        self.maxTxnOps = maxTxnOps
    }

    /// The key under the destination prefix: the first occurrence of the
    /// source prefix replaced (etcd's strings.Replace(key, prefix, dest, 1)).
    func destinationKey(_ key: Data) -> Data {
        if prefix.isEmpty { return destPrefix + key }
        guard let found = key.firstRange(of: prefix) else { return key }
        var out = Data(key[key.startIndex..<found.lowerBound])
        out.append(destPrefix)
        out.append(key[found.upperBound...])
        return out
    }

    func run(startRevision: Int64) async throws {
        var revision = startRevision
        if revision == 0 {
            revision = try await source.get("foo").header.revision
            try await copyBase(at: revision)
        }
        try await replicate(after: revision)
    }

    /// Every key under the prefix at `revision`, put one by one.
    func copyBase(at revision: Int64) async throws {
        var key = prefix.isEmpty ? Data([0]) : prefix
        let end = prefix.isEmpty ? Data([0]) : KeyRange.prefixEnd(prefix)
        for _ in 0..<Int.max {
            let page = try await source.get(key, options: GetOptions(range: .end(end), limit: Self.baseBatchLimit, revision: revision))
            for kv in page.kvs {
                try await destination.put(destinationKey(kv.key), kv.value)
                processed.add(1, ordering: .relaxed)
            }
            guard page.more, let last = page.kvs.last else { return }
            key = last.key + Data([0])
        }
    }

    /// Watches from `revision + 1` and writes each source revision as one txn
    /// (or several of at most `maxTxnOps` operations).
    func replicate(after revision: Int64) async throws {
        let watch = try await source.watch(prefix, options: WatchOptions(range: .prefix, startRevision: revision + 1))
        defer { watch.cancel() }
        for try await response in watch {
            if response.compactRevision != 0 { throw EtcdClientError.compacted }
            var ops: [Op] = []
            var lastRevision: Int64 = 0
            for event in response.events {
                let eventRevision = event.kv.modRevision
                if (lastRevision != 0 && eventRevision > lastRevision) || ops.count == maxTxnOps {
                    try await commit(ops)
                    ops = []
                }
                lastRevision = eventRevision
                switch event.type {
                case .put: ops.append(.put(destinationKey(event.kv.key), event.kv.value))
                case .delete: ops.append(.delete(destinationKey(event.kv.key)))
                default: throw EtcdClientError.rpc(code: .internalError, message: "unexpected event type \(event.type)")
                }
                processed.add(1, ordering: .relaxed)
            }
            try await commit(ops)
        }
    }

    func commit(_ ops: [Op]) async throws {
        guard !ops.isEmpty else { return }
        _ = try await destination.txn(Txn().then(ops))
    }
}
