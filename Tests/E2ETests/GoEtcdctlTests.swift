import Foundation
import Testing

/// Our `etcd` binary driven by the real Go `etcdctl` 3.4 (Debian's
/// etcd-client): what users and their tools see.
@Suite(.serialized) struct GoEtcdctlTests {
    @Test func putGetDeleteTxnAndErrors() throws {
        let server = try EtcdProcess()
        defer { server.terminate() }

        #expect(try server.etcdctl(["put", "foo", "bar"]).out == "OK\n")
        #expect(try server.etcdctl(["get", "foo"]).out == "foo\nbar\n")
        #expect(try server.etcdctl(["put", "foo", "baz", "--prev-kv"]).out == "OK\nfoo\nbar\n")
        let json = try server.etcdctl(["get", "foo", "-w", "json"]).out
        #expect(json.contains(#""kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":3,"version":2,"value":"YmF6"}]"#))
        #expect(try server.etcdctl(["put", "fop", "1"]).status == 0)
        #expect(try server.etcdctl(["get", "fo", "--prefix", "--keys-only"]).out == "foo\n\nfop\n\n")
        #expect(try server.etcdctl(["del", "fo", "--prefix"]).out == "2\n")
        #expect(try server.etcdctl(["get", "foo"]).out == "")

        let txn = try server.etcdctl(["txn"], input: "value(\"x\") = \"1\"\n\nput a 1\n\nput b 2\n\n")
        #expect(txn.out == "FAILURE\n\nOK\n")
        #expect(try server.etcdctl(["get", "b", "--print-value-only"]).out == "2\n")

        #expect(try server.etcdctl(["compact", "3"]).out == "compacted revision 3\n")
        let compacted = try server.etcdctl(["get", "foo", "--rev=2"])
        #expect(compacted.status != 0)
        #expect(compacted.err.contains("etcdserver: mvcc: required revision has been compacted"))
        let future = try server.etcdctl(["get", "foo", "--rev=1000"])
        #expect(future.err.contains("etcdserver: mvcc: required revision is a future revision"))

        #expect(try server.etcdctl(["endpoint", "health"]).err.contains("is healthy"))
        let status = try server.etcdctl(["endpoint", "status", "-w", "fields"]).out
        #expect(status.contains(#""Version" : "3.6.0""#))
        #expect(try server.etcdctl(["member", "list"]).out.contains("started, default"))
    }

    @Test func killNineLosesNoAcknowledgedWrite() throws {
        let dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("e2e-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        var server = try EtcdProcess(dataDir: dataDir)
        for i in 0..<40 { #expect(try server.etcdctl(["put", "key\(i)", "value\(i)"]).status == 0) }
        server.kill9()
        server = try EtcdProcess(dataDir: dataDir)
        defer { server.terminate() }
        #expect(try server.etcdctl(["get", "key39", "--print-value-only"]).out == "value39\n")
        #expect(try server.etcdctl(["get", "key", "--prefix", "--keys-only"]).out.split(separator: "\n").count == 40)
        let json = try server.etcdctl(["put", "after", "restart", "-w", "json"]).out
        #expect(json.contains(#""revision":42"#))
    }
}

extension GoEtcdctlTests {
    @Test func sigtermShutsDownCleanlyAndKeepsData() throws {
        let dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("e2e-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        var server = try EtcdProcess(dataDir: dataDir, extraArguments: ["--snapshot-count", "5"])
        for i in 0..<12 { #expect(try server.etcdctl(["put", "t\(i)", "v\(i)"]).status == 0) }
        server.terminate()
        #expect(server.process.terminationReason == .exit)
        #expect(server.process.terminationStatus == 0)
        let snapFiles = try FileManager.default.contentsOfDirectory(atPath: dataDir + "/member/snap").filter { $0.hasSuffix(".snap") }
        #expect(snapFiles.count == 2)
        server = try EtcdProcess(dataDir: dataDir)
        defer { server.terminate() }
        #expect(try server.etcdctl(["get", "t", "--prefix", "--keys-only"]).out.split(separator: "\n").count == 12)
    }
}

extension GoEtcdctlTests {
    /// Settings from ETCD_* variables and from --config-file, and a bad flag.
    @Test func environmentConfigFileAndBadFlags() throws {
        let dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("e2e-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let server = try EtcdProcess(dataDir: dataDir, environment: ["ETCD_NAME": "envname", "ETCD_SNAPSHOT_COUNT": "3"])
        for i in 0..<7 { #expect(try server.etcdctl(["put", "e\(i)", "v"]).status == 0) }
        #expect(try server.etcdctl(["member", "list"]).out.contains("started, envname"))
        server.terminate()
        // 7 puts (and the member's own entries) at a snapshot count of 3:
        // several snapshots; the default count would give none.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dataDir + "/member/snap").filter { $0.hasSuffix(".snap") }.count >= 2)

        let port = try EtcdProcess.freePort()
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("etcd-\(UUID().uuidString).yaml").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        try """
        name: fromfile
        data-dir: \(dataDir)-file
        listen-client-urls: http://127.0.0.1:\(port)
        advertise-client-urls: [http://127.0.0.1:\(port)]
        listen-peer-urls: http://127.0.0.1:\(try EtcdProcess.freePort())
        snapshot-count: 1000
        client-transport-security:
          auto-tls: false
        """.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: dataDir + "-file") }
        let fromFile = try EtcdProcess(arguments: ["--config-file", file], port: port)
        defer { fromFile.terminate() }
        #expect(try fromFile.etcdctl(["member", "list"]).out.contains("started, fromfile"))

        let bad = try EtcdProcess.run(EtcdProcess.binary, ["--snapshot-count", "lots"], environment: [:], input: nil)
        #expect(bad.status != 0)
        #expect(bad.err.contains("--snapshot-count"))
        let unknown = try EtcdProcess.run(EtcdProcess.binary, ["--no-such-flag"], environment: [:], input: nil)
        #expect(unknown.status != 0)
        #expect(unknown.err.contains("no-such-flag"))
    }
}

/// Our etcd on a free loopback port with a temporary data dir.
final class EtcdProcess {
    let process = Process()
    let port: Int
    let dataDir: String
    private let ownsDataDir: Bool
    /// How the Go etcdctl reaches it: "http" or "https", and its TLS flags.
    let scheme: String
    let clientFlags: [String]

    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static var binary: String {
        ProcessInfo.processInfo.environment["ETCD_SWIFT_BINARY"] ?? repositoryRoot.appendingPathComponent(".build/debug/etcd").path
    }

    convenience init(dataDir: String? = nil, extraArguments: [String] = [], environment: [String: String] = [:]) throws {
        let port = try Self.freePort()
        let dir = dataDir ?? FileManager.default.temporaryDirectory.appendingPathComponent("e2e-\(UUID().uuidString)").path
        try self.init(
            // Peers listen on a free port; the advertised peer URL stays the
            // default, so the member id is the default member's, as etcd's.
            arguments: ["--data-dir", dir, "--listen-client-urls", "http://127.0.0.1:\(port)",
                        "--advertise-client-urls", "http://127.0.0.1:\(port)",
                        "--listen-peer-urls", "http://127.0.0.1:\(try Self.freePort())"] + extraArguments,
            port: port, dataDir: dir, ownsDataDir: dataDir == nil, environment: environment
        )
    }

    /// Starts `etcd` with exactly `arguments`; `port` is where it will serve.
    /// With `logFile`, its standard error goes there.
    init(arguments: [String], port: Int, dataDir: String = "", ownsDataDir: Bool = false, environment: [String: String] = [:],
         scheme: String = "http", clientFlags: [String] = [], logFile: String? = nil) throws {
        self.port = port
        self.ownsDataDir = ownsDataDir
        self.dataDir = dataDir
        self.scheme = scheme
        self.clientFlags = clientFlags
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = FileHandle.nullDevice
        if let logFile {
            _ = FileManager.default.createFile(atPath: logFile, contents: nil)
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: logFile))
        } else {
            process.standardError = FileHandle.nullDevice
        }
        try process.run()
        // Ready when a serializable read answers (bounded: 30 s, for a
        // debug build starting over TLS while the E2E phase fills both
        // cores; one that exits is not waited for).
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline, process.isRunning {
            if try etcdctl(["get", "ready", "--consistency=s"]).status == 0 { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        terminate()
        throw ProcessError.notReady
    }

    func etcdctl(_ arguments: [String], input: String? = nil) throws -> (status: Int32, out: String, err: String) {
        try Self.run("/usr/bin/etcdctl", ["--endpoints=\(scheme)://127.0.0.1:\(port)", "--dial-timeout=1s", "--command-timeout=5s"]
                         + clientFlags + arguments,
                     environment: ["ETCDCTL_API": "3"], input: input)
    }

    func kill9() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func terminate() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        if ownsDataDir { try? FileManager.default.removeItem(atPath: dataDir) }
    }

    enum ProcessError: Error { case notReady, timedOut([String]), missing(String) }

    /// Runs a command to completion, killing it after 20 s.
    static func run(_ path: String, _ arguments: [String], environment: [String: String], input: String?) throws -> (status: Int32, out: String, err: String) {
        guard FileManager.default.isExecutableFile(atPath: path) else {
            Issue.record("\(path) is missing (Debian package etcd-client; scripts/test.sh installs it)")
            return (127, "", "")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let out = Pipe(), err = Pipe(), stdin = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = stdin
        try process.run()
        if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try stdin.fileHandleForWriting.close()
        // SIGKILL: a child can inherit a signal mask with SIGTERM blocked
        // from the test's thread (Go programs unblock it, Python does not).
        let pid = process.processIdentifier
        let watchdog = DispatchWorkItem { if process.isRunning { kill(pid, SIGKILL) } }
        DispatchQueue.global().asyncAfter(deadline: .now() + 20, execute: watchdog)
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        watchdog.cancel()
        return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
    }

    static func freePort() throws -> Int {
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
        guard bound == 0 else { throw ProcessError.notReady }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

extension GoEtcdctlTests {
    /// etcd's JSON log lines on stderr, filtered by --log-level, and
    /// systemd's READY=1 on $NOTIFY_SOCKET once the member serves.
    @Test func logsJSONByLevelAndNotifiesSystemd() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("e2e-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let socketPath = dir + "/notify.sock"
        let fd = try Self.datagramSocket(boundTo: socketPath)
        defer { close(fd) }

        for level in ["info", "warn"] {
            let port = try EtcdProcess.freePort()
            let server = try BackgroundProcess(
                ["--data-dir", dir + "/data", "--listen-client-urls", "http://127.0.0.1:\(port)",
                 "--advertise-client-urls", "http://127.0.0.1:\(port)", "--log-level", level,
                 "--listen-peer-urls", "http://127.0.0.1:\(try EtcdProcess.freePort())"],
                executable: EtcdProcess.binary, environment: ["NOTIFY_SOCKET": socketPath])
            defer { server.stop() }
            var buffer = [UInt8](repeating: 0, count: 64)
            let received = recv(fd, &buffer, buffer.count, 0)
            #expect(received > 0 && String(decoding: buffer.prefix(max(received, 0)), as: UTF8.self) == "READY=1")
            // READY comes right after the log line, so it is written by now.
            Thread.sleep(forTimeInterval: 0.2)
            let lines = server.errorOutput.split(separator: "\n")
            let ready = lines.first { $0.contains("ready to serve client requests") }
            if level == "info" {
                let line = try #require(ready)
                let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                #expect(object?["level"] as? String == "info")
                #expect(object?["msg"] as? String == "ready to serve client requests")
                #expect((object?["ts"] as? String)?.hasSuffix("Z") == true)
                #expect(lines.contains { $0.contains(#""msg":"published local member to cluster through raft""#) })
            } else {
                #expect(ready == nil, "an info line at --log-level=warn: \(server.errorOutput)")
            }
        }
    }

    static func datagramSocket(boundTo path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard fd >= 0, bound == 0 else { throw EtcdProcess.ProcessError.notReady }
        return fd
    }
}
