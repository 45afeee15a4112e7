import EtcdClient
import Foundation
import Testing

/// The real etcd 3.4 (Debian's etcd-server) on free loopback ports with a temp data dir.
final class RealEtcd: @unchecked Sendable {
    static let binary = "/usr/bin/etcd"
    static let goEtcdctl = "/usr/bin/etcdctl"

    let name: String
    let clientPort: Int
    let peerPort: Int
    let dataDir: String
    var initialCluster: String
    var advertisePeer: String
    var advertiseClient: String
    var extraArguments: [String] = []
    /// Serve clients over https with these files (and require client certificates signed by `clientCA`).
    var tls: (cert: String, key: String, clientCA: String?)? {
        didSet { advertiseClient = "\(clientScheme)://127.0.0.1:\(clientPort)" }
    }
    /// The Go etcdctl's TLS flags for the readiness probe of a TLS server.
    var probeArguments: [String] = []
    private var process: Process?
    private let lock = NSLock()

    var endpoint: String { "127.0.0.1:\(clientPort)" }
    var clientScheme: String { tls == nil ? "http" : "https" }
    var clientURL: String { "\(clientScheme)://127.0.0.1:\(clientPort)" }

    init(name: String = "default", clientPort: Int? = nil, peerPort: Int? = nil) throws {
        self.name = name
        self.clientPort = try clientPort ?? freePort()
        self.peerPort = try peerPort ?? freePort()
        dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("etcd-client-test-\(UUID().uuidString)").path
        initialCluster = "\(name)=http://127.0.0.1:\(self.peerPort)"
        advertisePeer = "http://127.0.0.1:\(self.peerPort)"
        advertiseClient = "http://127.0.0.1:\(self.clientPort)"
    }

    /// Starts a single-member server and waits until it serves.
    static func started(configure: (RealEtcd) -> Void = { _ in }) throws -> RealEtcd {
        let etcd = try RealEtcd()
        configure(etcd)
        try etcd.start()
        try etcd.waitReady()
        return etcd
    }

    func start(newCluster: Bool = true) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary)
        p.arguments = ["--name", name, "--data-dir", dataDir,
                       "--listen-client-urls", clientURL, "--advertise-client-urls", advertiseClient,
                       "--listen-peer-urls", "http://127.0.0.1:\(peerPort)", "--initial-advertise-peer-urls", advertisePeer,
                       "--initial-cluster", initialCluster, "--initial-cluster-state", newCluster ? "new" : "existing",
                       "--heartbeat-interval", "100", "--election-timeout", "1000"] + tlsArguments + extraArguments
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        lock.withLock { process = p }
    }

    var tlsArguments: [String] {
        guard let tls else { return [] }
        var args = ["--cert-file", tls.cert, "--key-file", tls.key]
        if let ca = tls.clientCA { args += ["--client-cert-auth", "--trusted-ca-file", ca] }
        return args
    }

    /// Waits (at most 20 s) until a serializable read answers, then a linearizable one.
    func waitReady(statusOnly: Bool = false) throws {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            let args = ["--endpoints=\(clientURL)", "--dial-timeout=1s", "--command-timeout=1s"] + probeArguments + (statusOnly ? ["endpoint", "status"] : ["get", "ready"])
            if (try? runProcess(Self.goEtcdctl, args, timeout: 5).status) == 0 { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw TestError("etcd on \(clientPort) did not become ready")
    }

    /// SIGTERM and wait.
    func stop() {
        guard let p = lock.withLock({ process }) else { return }
        if p.isRunning { p.terminate() }
        p.waitUntilExit()
        lock.withLock { process = nil }
    }

    /// SIGKILL and wait.
    func kill9() {
        guard let p = lock.withLock({ process }) else { return }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        lock.withLock { process = nil }
    }

    func restart(statusOnly: Bool = false) throws {
        stop()
        try start(newCluster: false)
        try waitReady(statusOnly: statusOnly)
    }

    /// SIGTERM now; waiting and removing the data dir happen off the caller's thread.
    func cleanup() {
        let p = lock.withLock { () -> Process? in defer { process = nil }; return process }
        if let p, p.isRunning { p.terminate() }
        let dir = dataDir
        Thread.detachNewThread {
            p?.waitUntilExit()
            try? FileManager.default.removeItem(atPath: dir)
        }
    }

    func client(_ options: EtcdClientOptions = EtcdClientOptions(dialTimeout: .seconds(3), commandTimeout: .seconds(5))) throws -> EtcdClient {
        try EtcdClient(endpoints: [endpoint], options: options)
    }
}

/// A 3-member cluster of real etcd processes.
final class RealEtcdCluster: @unchecked Sendable {
    let members: [RealEtcd]

    init(size: Int = 3) throws {
        var list: [RealEtcd] = []
        for i in 0..<size { list.append(try RealEtcd(name: "m\(i)")) }
        let initial = list.map { "\($0.name)=http://127.0.0.1:\($0.peerPort)" }.joined(separator: ",")
        for m in list {
            m.initialCluster = initial
            m.extraArguments = ["--initial-cluster-token", "test-\(UUID().uuidString)"]
        }
        // One token for all.
        let token = ["--initial-cluster-token", "cluster-\(UUID().uuidString)"]
        for m in list { m.extraArguments = token }
        members = list
        do {
            for m in members { try m.start() }
            for m in members { try m.waitReady() }
        } catch {
            cleanup()
            throw error
        }
    }

    var endpoints: [String] { members.map(\.endpoint) }

    func cleanup() { members.forEach { $0.cleanup() } }
}

struct TestError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
            guard bind(fd, pointer, length) == 0 else { return -1 }
            return getsockname(fd, pointer, &length)
        }
    }
    guard bound == 0 else { throw TestError("no free port") }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Runs a process to completion (killed after `timeout` seconds).
@discardableResult
func runProcess(_ path: String, _ arguments: [String], input: String? = nil, environment: [String: String] = [:],
                timeout: Double = 20) throws -> (status: Int32, out: String, err: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("ETCDCTL_") }
    env["ETCDCTL_API"] = "3"
    process.environment = env.merging(environment) { $1 }
    let out = Pipe(), err = Pipe(), stdin = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = stdin
    try process.run()
    if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
    try stdin.fileHandleForWriting.close()
    let watchdog = DispatchWorkItem { if process.isRunning { process.terminate() } }
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: watchdog)
    let group = DispatchGroup()
    nonisolated(unsafe) var outData = Data()
    var errData = Data()
    group.enter()
    Thread.detachNewThread { outData = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    errData = err.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    process.waitUntilExit()
    watchdog.cancel()
    return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
}

/// Runs `body`, failing with a timeout error after `seconds`.
func withTimeout<T: Sendable>(_ seconds: Double, _ what: String = "operation", _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            throw TestError("\(what) timed out after \(seconds) s")
        }
        let first = try await group.next()!
        group.cancelAll()
        return first
    }
}

extension Data {
    var string: String { String(decoding: self, as: UTF8.self) }
}

/// A lock-protected value shareable with tasks.
final class Locked<T: Sendable>: @unchecked Sendable {
    private var value: T
    private let lock = NSLock()
    init(_ value: T) { self.value = value }
    func withLock<R>(_ body: (inout T) -> R) -> R { lock.lock(); defer { lock.unlock() }; return body(&value) }
}

/// Runs blocking work (process waits, sleeps) on a dispatch thread, not the cooperative pool.
func offload<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
    }
}

extension RealEtcd {
    /// Starts a server; once more on fresh ports if the first attempt fails (a port taken by a parallel test).
    static func start(configure: @escaping @Sendable (RealEtcd) -> Void = { _ in }) async throws -> RealEtcd {
        do { return try await offload { try RealEtcd.started(configure: configure) } } catch {
            return try await offload { try RealEtcd.started(configure: configure) }
        }
    }
    func restartAsync(statusOnly: Bool = false) async throws { try await offload { try self.restart(statusOnly: statusOnly) } }
    func stopAsync() async { _ = try? await offload { self.stop() } }
    func startAsync() async throws { try await offload { try self.start(newCluster: false); try self.waitReady() } }
    func kill9Async() async { _ = try? await offload { self.kill9() } }
    func cleanupAsync() async { _ = try? await offload { self.cleanup() } }
}

extension RealEtcdCluster {
    static func start(size: Int = 3) async throws -> RealEtcdCluster {
        do { return try await offload { try RealEtcdCluster(size: size) } } catch {
            return try await offload { try RealEtcdCluster(size: size) }
        }
    }
}

/// A loopback port bound but not listening: connections to it are refused, and
/// no other test can take it while `fd` stays open.
func deadPort() throws -> (port: Int, fd: Int32) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
            guard bind(fd, pointer, length) == 0 else { return -1 }
            return getsockname(fd, pointer, &length)
        }
    }
    guard bound == 0 else { close(fd); throw TestError("no port") }
    return (Int(UInt16(bigEndian: address.sin_port)), fd)
}

/// A loopback port that accepts connections (the kernel completes them into
/// the backlog) but never reads or answers: calls to it hang until their
/// deadline. Close the descriptor when done.
func silentPort() throws -> (port: Int, fd: Int32) {
    let (port, fd) = try deadPort()
    guard listen(fd, 16) == 0 else { close(fd); throw TestError("listen failed") }
    return (port, fd)
}
