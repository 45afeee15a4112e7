import Foundation
import Testing

/// A cluster of our `etcd` processes on loopback ports, each member's log
/// in `<root>/<name>.log`. Members can be killed, paused and restarted.
final class ClusterProcesses {
    struct Node {
        var name: String
        var clientPort: Int
        var peerPort: Int
        var process: Process?
        var paused = false
        /// With proxies: the port the others dial (the proxy's).
        var advertisedPeerPort: Int
    }

    let root: String
    private(set) var nodes: [Node]
    let token = "e2e-\(UUID().uuidString.prefix(8))"
    let extraArguments: [String]
    /// Extra environment per member (e.g. ETCD_FAILPOINTS for a slow disk).
    let environment: [Int: [String: String]]
    /// With `proxied`: one `PeerProxy` in front of each member's peer port.
    private(set) var proxies: [PeerProxy] = []

    /// "http" or "https" for the peer URLs (TLS flags come in `extraArguments`).
    let peerScheme: String
    /// Arguments for one member only (its own peer certificate, say).
    let memberArguments: [Int: [String]]
    /// "http" or "https" for the client URLs, and the Go etcdctl's TLS flags.
    let clientScheme: String
    let clientFlags: [String]

    init(size: Int, extraArguments: [String] = [], proxied: Bool = false, environment: [Int: [String: String]] = [:],
         peerScheme: String = "http", memberArguments: [Int: [String]] = [:], clientScheme: String = "http", clientFlags: [String] = []) throws {
        self.peerScheme = peerScheme
        self.clientScheme = clientScheme
        self.clientFlags = clientFlags
        self.memberArguments = memberArguments
        root = FileManager.default.temporaryDirectory.appendingPathComponent("cluster-e2e-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        var ports: [Int] = []
        while ports.count < 3 * size {
            let port = try EtcdProcess.freePort()
            if !ports.contains(port) { ports.append(port) }
        }
        nodes = (0..<size).map { i in
            Node(name: "n\(i)", clientPort: ports[3 * i], peerPort: ports[3 * i + 1],
                 advertisedPeerPort: proxied ? ports[3 * i + 2] : ports[3 * i + 1])
        }
        self.extraArguments = extraArguments
        self.environment = environment
        if proxied {
            proxies = try nodes.map { try PeerProxy(listenPort: $0.advertisedPeerPort, targetPort: $0.peerPort) }
        }
        for i in nodes.indices { try start(i) }
        for i in nodes.indices { try waitServing(i) }
    }

    var initialCluster: String { nodes.map { "\($0.name)=\(peerScheme)://127.0.0.1:\($0.advertisedPeerPort)" }.joined(separator: ",") }
    private var endpointPrefix: String { clientScheme == "https" ? "https://" : "" }
    var endpoints: String { nodes.indices.map(endpoint).joined(separator: ",") }
    func endpoint(_ i: Int) -> String { "\(endpointPrefix)127.0.0.1:\(nodes[i].clientPort)" }

    func start(_ i: Int) throws {
        let node = nodes[i]
        let process = Process()
        process.executableURL = URL(fileURLWithPath: EtcdProcess.binary)
        process.arguments = [
            "--name", node.name, "--data-dir", root + "/" + node.name,
            "--listen-client-urls", "\(clientScheme)://127.0.0.1:\(node.clientPort)",
            "--advertise-client-urls", "\(clientScheme)://127.0.0.1:\(node.clientPort)",
            "--listen-peer-urls", "\(peerScheme)://127.0.0.1:\(node.peerPort)",
            "--initial-advertise-peer-urls", "\(peerScheme)://127.0.0.1:\(node.advertisedPeerPort)",
            "--initial-cluster", initialCluster, "--initial-cluster-token", token,
            "--heartbeat-interval", "50", "--election-timeout", "500",
        ] + extraArguments + (memberArguments[i] ?? [])
        let log = root + "/" + node.name + ".log"
        if !FileManager.default.fileExists(atPath: log) { _ = FileManager.default.createFile(atPath: log, contents: nil) }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        handle.seekToEndOfFile()
        process.standardOutput = FileHandle.nullDevice
        process.standardError = handle
        if let extra = environment[i] {
            process.environment = ProcessInfo.processInfo.environment.merging(extra) { $1 }
        }
        try process.run()
        nodes[i].process = process
        nodes[i].paused = false
    }

    /// Waits until member `i` answers a serializable read (bounded: 15 s).
    func waitServing(_ i: Int) throws {
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            if try etcdctl(["get", "ready", "--consistency=s"], endpoint: endpoint(i)).status == 0 { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw EtcdProcess.ProcessError.notReady
    }

    func kill9(_ i: Int) {
        guard let process = nodes[i].process else { return }
        if nodes[i].paused { kill(process.processIdentifier, SIGCONT) }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        nodes[i].process = nil
    }

    func pause(_ i: Int) {
        guard let process = nodes[i].process, !nodes[i].paused else { return }
        kill(process.processIdentifier, SIGSTOP)
        nodes[i].paused = true
    }

    func resume(_ i: Int) {
        guard let process = nodes[i].process, nodes[i].paused else { return }
        kill(process.processIdentifier, SIGCONT)
        nodes[i].paused = false
    }

    func isRunning(_ i: Int) -> Bool { nodes[i].process != nil }

    func log(_ i: Int) -> String {
        (try? String(contentsOfFile: root + "/" + nodes[i].name + ".log", encoding: .utf8)) ?? ""
    }

    func shutDown() {
        for i in nodes.indices {
            resume(i)
            if let process = nodes[i].process, process.isRunning {
                process.terminate()
                process.waitUntilExit()
            }
            nodes[i].process = nil
        }
        for proxy in proxies { proxy.stop() }
        try? FileManager.default.removeItem(atPath: root)
    }

    // MARK: - Network faults (proxied clusters)

    /// Member ids by node, from each member's own status.
    func memberIDs() throws -> [UInt64] {
        try nodes.indices.map { i in
            let status = try etcdctl(["endpoint", "status", "-w", "json"], endpoint: endpoint(i))
            guard let id = Self.field("member_id", in: status.out).flatMap({ UInt64($0) }) else {
                throw EtcdProcess.ProcessError.notReady
            }
            return id
        }
    }

    /// Cuts member `i` off from the others, both ways.
    func isolate(_ i: Int, ids: [UInt64]) {
        proxies[i].block(from: Set(ids.enumerated().filter { $0.offset != i }.map(\.element)))
        for j in nodes.indices where j != i { proxies[j].block(from: [ids[i]]) }
    }

    /// Cuts only the traffic from member `from` to member `to`.
    func cut(from: Int, to: Int, ids: [UInt64]) {
        proxies[to].block(from: [ids[from]])
    }

    func healNetwork() {
        for proxy in proxies {
            proxy.block(from: [])
            proxy.setDelay(0)
        }
    }

    func etcdctl(_ arguments: [String], endpoint: String? = nil) throws -> (status: Int32, out: String, err: String) {
        try EtcdProcess.run("/usr/bin/etcdctl", ["--endpoints=\(endpoint ?? endpoints)", "--dial-timeout=1s", "--command-timeout=5s"] + clientFlags + arguments,
                            environment: ["ETCDCTL_API": "3"], input: nil)
    }

    /// The leader's member id in hex, as every running, unpaused member
    /// reports it (bounded wait).
    func waitForLeader(timeout: TimeInterval = 15, excluding old: String? = nil) throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            var leaders: Set<String> = []
            var answered = 0
            for i in nodes.indices where isRunning(i) && !nodes[i].paused {
                let status = try etcdctl(["endpoint", "status", "-w", "json"], endpoint: endpoint(i))
                guard status.status == 0, let leader = Self.field("leader", in: status.out) else { continue }
                answered += 1
                leaders.insert(leader)
            }
            if answered == nodes.indices.filter({ isRunning($0) && !nodes[$0].paused }).count, leaders.count == 1,
               let leader = leaders.first, leader != "0", leader != old {
                return leader
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw EtcdProcess.ProcessError.timedOut(["no agreed leader"])
    }

    /// Index of the member whose id (decimal, as etcdctl's JSON prints it) is `id`.
    func index(ofMemberID id: String) throws -> Int? {
        for i in nodes.indices where isRunning(i) && !nodes[i].paused {
            let status = try etcdctl(["endpoint", "status", "-w", "json"], endpoint: endpoint(i))
            if Self.field("member_id", in: status.out) == id { return i }
        }
        return nil
    }

    /// Every running member's hashKV at the same revision, once they agree
    /// on the revision (bounded wait). Empty when they never agreed.
    func convergedHashes(timeout: TimeInterval = 30) throws -> [String] {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            var revisions: Set<String> = []
            var hashes: [String] = []
            for i in nodes.indices where isRunning(i) {
                let result = try etcdctl(["endpoint", "hashkv", "-w", "json"], endpoint: endpoint(i))
                guard result.status == 0, let hash = Self.field("hash", in: result.out),
                      let revision = Self.field("revision", in: result.out) else { revisions.insert("?"); continue }
                revisions.insert(revision)
                hashes.append(hash)
            }
            if revisions.count == 1, !revisions.contains("?") { return hashes }
            Thread.sleep(forTimeInterval: 0.2)
        }
        return []
    }

    /// The first number after `"name":` in a JSON text.
    static func field(_ name: String, in json: String) -> String? {
        guard let range = json.range(of: "\"\(name)\":") else { return nil }
        let digits = json[range.upperBound...].prefix { $0.isNumber }
        return digits.isEmpty ? nil : String(digits)
    }
}
