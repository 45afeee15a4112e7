import EtcdProto
@testable import EtcdServer
import Foundation
import Testing

/// Several members in one test process, talking over loopback TCP through
/// the real peer transport. Short raft timings keep the tests quick.
final class TestCluster: @unchecked Sendable {
    private(set) var configs: [ServerConfig]
    private(set) var members: [Member?]
    let root: String

    static let heartbeatMilliseconds = 20
    static let electionMilliseconds = 200

    /// `size` members of a new cluster, started.
    static func start(size: Int, configure: (inout ServerConfig) -> Void = { _ in }) async throws -> TestCluster {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("cluster-\(UUID().uuidString)").path
        let ports = try freePorts(size)
        let initial = (0..<size).map { ("m\($0)", ["http://127.0.0.1:\(ports[$0])"]) }
        let token = "test-\(UUID().uuidString)"
        var configs: [ServerConfig] = []
        for i in 0..<size {
            var config = ServerConfig(name: "m\(i)", dataDir: root + "/m\(i)",
                                      listenClientURLs: ["http://127.0.0.1:\(30000 + i)"],
                                      advertiseClientURLs: ["http://127.0.0.1:\(30000 + i)"])
            config.initialAdvertisePeerURLs = initial[i].1
            config.listenPeerURLs = initial[i].1
            config.initialCluster = initial
            config.initialClusterToken = token
            config.heartbeatIntervalMilliseconds = heartbeatMilliseconds
            config.electionTimeoutMilliseconds = electionMilliseconds
            configure(&config)
            configs.append(config)
        }
        let cluster = TestCluster(root: root, configs: configs)
        for i in 0..<size { try await cluster.startMember(i) }
        return cluster
    }

    /// Runs `body` with a started cluster and always shuts it down (and
    /// deletes its files) before returning.
    static func with(size: Int, configure: (inout ServerConfig) -> Void = { _ in },
                     _ body: (TestCluster) async throws -> Void) async throws {
        let cluster = try await start(size: size, configure: configure)
        do {
            try await body(cluster)
        } catch {
            await cluster.shutDown()
            throw error
        }
        await cluster.shutDown()
    }

    private init(root: String, configs: [ServerConfig]) {
        self.root = root
        self.configs = configs
        self.members = Array(repeating: nil, count: configs.count)
    }

    func startMember(_ i: Int) async throws {
        let member = try await Member.open(config: configs[i])
        try await member.startPeers()
        members[i] = member
    }

    func stopMember(_ i: Int) async {
        await members[i]?.stopAndWait()
        members[i] = nil
    }

    /// Adds the config of a member that joins the running cluster.
    func addConfig(name: String, peerPort: Int) -> Int {
        var config = configs[0]
        config.name = name
        config.dataDir = root + "/" + name
        config.initialAdvertisePeerURLs = ["http://127.0.0.1:\(peerPort)"]
        config.listenPeerURLs = config.initialAdvertisePeerURLs
        config.initialCluster = configs.map { ($0.name, $0.initialAdvertisePeerURLs) } + [(name, config.initialAdvertisePeerURLs)]
        config.initialClusterState = "existing"
        configs.append(config)
        members.append(nil)
        return configs.count - 1
    }

    /// Changes member `i`'s config for its next start.
    func reconfigure(_ i: Int, _ change: (inout ServerConfig) -> Void) {
        change(&configs[i])
    }

    func shutDown() async {
        for i in members.indices { await stopMember(i) }
        try? FileManager.default.removeItem(atPath: root)
    }

    var running: [Member] { members.compactMap { $0 } }

    /// The index of the member every running member agrees leads, waiting
    /// up to `timeout` (generous: in the in-process test phase the CPU-bound
    /// simulation suites can hold both cores for tens of seconds while
    /// members start).
    func waitForLeader(timeout: Duration = .seconds(30)) async throws -> Int {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let leaders = Set(running.map { $0.raftStatus().leader })
            if leaders.count == 1, let leader = leaders.first, leader != 0,
               let index = members.firstIndex(where: { $0?.memberID == leader }) {
                return index
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestFailure("no agreed leader within \(timeout): \(running.map { $0.raftStatus().leader })")
    }

    /// Runs `round` with the leader's index until a round passes with the
    /// same leader and term on every member (an election in the middle, as
    /// a loaded machine causes, voids what the round measured), at most
    /// `attempts` times; then runs the checks that round returned.
    func withSteadyLeader(attempts: Int = 3, _ round: (_ leader: Int) async throws -> () throws -> Void) async throws {
        for _ in 0..<attempts {
            let leader = try await waitForLeader()
            let before = running.map { $0.raftStatus() }
            let checks = try await round(leader)
            let after = running.map { $0.raftStatus() }
            if zip(before, after).allSatisfy({ $0.term == $1.term && $0.leader == $1.leader }) { return try checks() }
        }
        Issue.record("leadership changed in every one of \(attempts) attempts")
    }

    /// Retries `body` while it fails with an "unavailable" etcd error (no
    /// leader yet, a lost proposal) for up to `timeout`.
    func retrying<T>(timeout: Duration = .seconds(10), _ body: () async throws -> T) async throws -> T {
        let deadline = ContinuousClock.now + timeout
        while true {
            do { return try await body() } catch let error as EtcdError where error.code == .unavailable {
                if ContinuousClock.now >= deadline { throw error }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    /// Waits until every running member has applied up to the same index
    /// and returns their hashKV at `revision`.
    func converged(timeout: Duration = .seconds(15)) async throws -> [UInt32] {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let applied = Set(running.map { $0.raftStatus().appliedIndex })
            let revisions = Set(running.map { $0.header().revision })
            if applied.count == 1, revisions.count == 1 {
                let revision = revisions.first!
                return try running.map { try $0.hashKV(revision: revision).hash }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestFailure("members did not converge: applied \(running.map { $0.raftStatus().appliedIndex })")
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// `count` distinct free ports (a closed probe socket's port can come back).
func freePorts(_ count: Int) throws -> [Int] {
    var ports: [Int] = []
    while ports.count < count {
        let port = try freePort()
        if !ports.contains(port) { ports.append(port) }
    }
    return ports
}

func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket failed") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
    }
    guard bound == 0 else { throw TestFailure("bind failed") }
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

func putRequest(_ key: String, _ value: String) -> Etcdserverpb_PutRequest {
    var request = Etcdserverpb_PutRequest()
    request.key = Data(key.utf8)
    request.value = Data(value.utf8)
    return request
}

func rangeRequest(_ key: String, prefix: Bool = false, serializable: Bool = false) -> Etcdserverpb_RangeRequest {
    var request = Etcdserverpb_RangeRequest()
    request.key = Data(key.utf8)
    if prefix {
        var end = Array(key.utf8)
        end[end.count - 1] += 1
        request.rangeEnd = Data(end)
    }
    request.serializable = serializable
    return request
}
