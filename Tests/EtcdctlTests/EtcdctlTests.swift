import Foundation
import Testing

/// Our etcdctl next to the test binary.
let ourEtcdctl: String = {
    let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    var candidates = [dir.appendingPathComponent("etcdctl").path]
    // The test bundle may sit one level deeper (xctest bundles on macOS).
    candidates.append(dir.deletingLastPathComponent().appendingPathComponent("etcdctl").path)
    candidates.append(FileManager.default.currentDirectoryPath + "/.build/debug/etcdctl")
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
}()
let goEtcdctl = "/usr/bin/etcdctl"

/// A real etcd whose advertised URLs are fixed, so that two of them have the
/// same member and cluster IDs and their outputs can be compared byte for byte.
final class TwinEtcd: @unchecked Sendable {
    let clientPort: Int
    let peerPort: Int
    let dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("etcdctl-test-\(UUID().uuidString)").path
    private let process = Process()

    var endpoint: String { "127.0.0.1:\(clientPort)" }

    init() throws {
        clientPort = try freePort()
        peerPort = try freePort()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/etcd")
        process.arguments = ["--data-dir", dataDir,
                             "--listen-client-urls", "http://127.0.0.1:\(clientPort)", "--advertise-client-urls", "http://127.0.0.1:2379",
                             "--listen-peer-urls", "http://127.0.0.1:\(peerPort)", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                             "--initial-cluster", "default=http://127.0.0.1:2380"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if (try? runTool(goEtcdctl, ["--endpoints=\(endpoint)", "--dial-timeout=1s", "--command-timeout=1s", "get", "ready"], timeout: 5).status) == 0 { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        cleanup()
        throw TestError("etcd did not start")
    }

    func cleanup() {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: dataDir)
    }
}

struct Result: Equatable, CustomStringConvertible {
    var status: Int32
    var out: String
    var err: String
    var description: String { "exit \(status)\n--- stdout\n\(out)--- stderr\n\(err)" }
}

/// One etcdctl invocation of the script.
struct Step {
    var args: [String]
    var input: String? = nil
    var env: [String: String] = [:]
    var timeout: Double = 20
    /// Capture a lease ID ("lease <hex> granted") or member ID ("Member <hex> added") for later `{LEASE}`/`{MEMBER}`.
    var capture = false
    /// Longer dial/command timeouts (for a busy machine); off where the timeout itself is tested.
    var generous = true
    init(_ args: String..., input: String? = nil, env: [String: String] = [:], timeout: Double = 20, capture: Bool = false, generous: Bool = true) {
        self.generous = generous
        self.args = args
        self.input = input
        self.env = env
        self.timeout = timeout
        self.capture = capture
    }
}

final class Side: @unchecked Sendable {
    let binary: String
    let etcd: TwinEtcd
    var lease = ""
    var member = ""
    init(binary: String, etcd: TwinEtcd) { self.binary = binary; self.etcd = etcd }

    func run(_ step: Step) throws -> Result {
        let extraGlobal = step.generous && !step.args.contains(where: { $0.hasPrefix("--dial-timeout") }) && step.env["ETCDCTL_DIAL_TIMEOUT"] == nil
            ? ["--dial-timeout=4s", "--command-timeout=10s"] : []
        let args = step.args.map { $0.replacingOccurrences(of: "{LEASE}", with: lease).replacingOccurrences(of: "{MEMBER}", with: member) }
        let r = try runTool(binary, ["--endpoints=\(etcd.endpoint)"] + extraGlobal + args, input: step.input, environment: step.env, timeout: step.timeout)
        if step.capture {
            if let m = r.out.firstMatch(of: /lease ([0-9a-f]+) granted/) { lease = String(m.1) }
            if let m = r.out.firstMatch(of: /Member +([0-9a-f]+) added/) { member = String(m.1) }
        }
        return Result(status: r.status, out: mask(r.out, self), err: mask(r.err, self))
    }
}

/// Blanks what must differ between two servers and two runs.
func mask(_ text: String, _ side: Side) -> String {
    var s = text.replacingOccurrences(of: side.etcd.endpoint, with: "ENDPOINT")
    if !side.lease.isEmpty {
        s = s.replacingOccurrences(of: side.lease, with: "LEASE")
        if let decimal = Int64(side.lease, radix: 16) { s = s.replacingOccurrences(of: String(decimal), with: "LEASEID") }
    }
    if !side.member.isEmpty {
        s = s.replacingOccurrences(of: side.member, with: "NEWMEMBER")
        if let decimal = UInt64(side.member, radix: 16) { s = s.replacingOccurrences(of: String(decimal), with: "NEWMEMBERID") }
    }
    s = s.replacing(/"ts":("[^"]*"|[0-9.e+]+)/, with: "\"ts\":TS")
    s = s.replacing(/client-[0-9a-f-]{36}/, with: "client-UUID")
    s = s.replacing(/(myelection|mylock)\/[0-9a-f]+/, with: "SESSIONKEY")
    s = s.replacing(try! Regex("^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:.]+ ").anchorsMatchLineEndings(), with: "TIME ")
    s = s.replacing(/took = [0-9.]+[µnm]?s/, with: "took = DURATION")
    s = s.replacing(/"took":("[^"]*"|[0-9.e-]+)/, with: "\"took\":DURATION")
    s = s.replacing(/\| +[0-9.]+[µnm]?s \|/, with: "| DURATION |")
    // bbolt's file size is not deterministic.
    s = s.replacing(/[0-9.]+ kB/, with: "N kB")
    s = s.replacing(/"dbSize":[0-9]+/, with: "\"dbSize\":N")
    s = s.replacing(/"dbSizeInUse":[0-9]+/, with: "\"dbSizeInUse\":N")
    s = s.replacing(/"DBSize" : [0-9]+/, with: "\"DBSize\" : N")
    // Remaining lease TTLs depend on when each side ran.
    s = s.replacing(/remaining\([0-9]+s\)/, with: "remaining(Ns)")
    s = s.replacing(/"ttl":[0-9]+/, with: "\"ttl\":N")
    s = s.replacing(/"TTL" : [0-9]+\n"GrantedTTL"/, with: "\"TTL\" : N\n\"GrantedTTL\"")
    // The API version of our etcdctl is newer.
    s = s.replacing(/API VERSION:\n\t3\.[0-9]+/, with: "API VERSION:\n\tX")
    // Members are listed by id, and the added member's id hashes the clock's
    // second: when the two sides ran in different seconds the order differs.
    if !side.member.isEmpty && s.contains("NEWMEMBER") {
        s = s.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            guard line.hasPrefix("ETCD_INITIAL_CLUSTER=\""), line.hasSuffix("\"") else { return String(line) }
            let members = line.dropFirst("ETCD_INITIAL_CLUSTER=\"".count).dropLast().split(separator: ",").sorted()
            return "ETCD_INITIAL_CLUSTER=\"" + members.joined(separator: ",") + "\""
        }.joined(separator: "\n")
        // `member list`'s simple rows.
        var lines = s.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let rows = lines.indices.filter { lines[$0].contains(", started, ") || lines[$0].contains(", unstarted, ") }
        for (index, line) in zip(rows, rows.map { lines[$0] }.sorted()) { lines[index] = line }
        s = lines.joined(separator: "\n")
    }
    return s
}

@Suite(.serialized) struct EtcdctlOutputTests {
    /// The same script through Go's etcdctl (one server) and ours (its twin).
    static let script: [Step] = [
        Step("put", "foo", "bar"),
        Step("put", "foo", "bar2", "--prev-kv"),
        Step("put", "foo", "bar3", "--prev-kv", "-w", "json"),
        Step("put", "-w", "fields", "foo", "bar4", "--prev-kv"),
        Step("put", "k with space", "v<&>\"\u{1}"),
        Step("put", "stdin-key", input: "from stdin\n"),
        Step("put", "a", "1"), Step("put", "b", "2"), Step("put", "c", "3"),
        Step("endpoint", "status"), Step("endpoint", "status", "-w", "json"), Step("endpoint", "status", "-w", "table"),
        Step("endpoint", "status", "-w", "fields"),
        Step("endpoint", "hashkv"), Step("endpoint", "hashkv", "-w", "json"), Step("endpoint", "hashkv", "-w", "table"), Step("endpoint", "hashkv", "--rev=4"),
        Step("get", "foo"),
        Step("get", "foo", "-w", "json"),
        Step("get", "foo", "-w", "fields"),
        Step("get", "foo", "-w", "protobuf"),
        Step("get", "foo", "-w", "table"),
        Step("get", "foo", "--hex"),
        Step("get", "k with space", "-w", "fields"),
        Step("get", "k with space", "-w", "json"),
        Step("get", "--prefix", ""),
        Step("get", "--from-key", "b", "-w", "json"),
        Step("get", "a", "z", "--sort-by=MODIFY", "--order=DESCEND", "--limit=2"),
        Step("get", "a", "z", "--sort-by=value", "--keys-only"),
        Step("get", "foo", "--rev=2"),
        Step("get", "foo", "--print-value-only"),
        Step("get", "foo", "--print-value-only", "-w", "json"),
        Step("get", "foo", "--consistency=s", "-w", "json"),
        Step("get", "foo", "--prefix", "--from-key"),
        Step("get", "foo", "bar", "--prefix"),
        Step("del", "nothing"),
        Step("del", "a", "--prev-kv", "-w", "json"),
        Step("del", "b", "--prev-kv"),
        Step("del", "c", "--prev-kv", "-w", "fields"),
        // txn
        Step("txn", input: "value(\"foo\") = \"bar4\"\n\nput t1 v1\nget foo\n\ndel nothing\n\n"),
        Step("txn", "-i", input: "mod(\"foo\") > \"0\"\nver(\"zz\") = \"0\"\n\nput \"t 2\" \"v 2\"\ndel t1 --prev-kv\n\nget nothing\n\n"),
        Step("txn", "-w", "json", input: "create(\"nope\") != \"0\"\n\nput x y\n\nget foo --prefix\nput t3 v3\n\n"),
        Step("txn", "-w", "fields", input: "val(\"foo\") < \"c\"\n\nget foo\n\n\n"),
        Step("txn", input: "bad\n\n"),
        Step("txn", input: "value(\"foo\") = \"bar4\"\n"),
        Step("txn", input: "\nfoo bar\n\n"),
        Step("txn", "extra"),
        // compaction and compacted reads / watches
        Step("compaction", "3"),
        Step("compaction", "3"),
        Step("compaction", "x"),
        Step("compaction"),
        Step("compaction", "--physical", "999999"),
        Step("get", "foo", "--rev=2"),
        Step("watch", "foo", "--rev=1"),
        Step("watch", "foo", "--rev=4", "--prev-kv", timeout: 1.5),
        Step("watch", "--prefix", "", "--rev=4", "-w", "json", timeout: 1.5),
        Step("watch", "foo", "--rev=4", "--", "sh", "-c", "echo \"$ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE $ETCD_WATCH_REVISION\"", timeout: 1.5),
        Step("watch", "--rev=4", "--", "sh", "-c", "echo $ETCD_WATCH_KEY", env: ["ETCDCTL_WATCH_KEY": "foo"], timeout: 1.5),
        Step("watch", "foo", "--rev=4", "--", "sh", "-c", "exit 3", timeout: 3),
        Step("watch"),
        Step("watch", "foo", "--"),
        Step("watch", "a", "b", "--prefix"),
        Step("watch", "-i", input: "watch foo\n"),
        // leases
        Step("lease", "grant", "100", capture: true),
        Step("put", "leased", "v", "--lease={LEASE}"),
        Step("lease", "timetolive", "{LEASE}"),
        Step("lease", "timetolive", "{LEASE}", "--keys"),
        Step("lease", "timetolive", "{LEASE}", "--keys", "-w", "json"),
        Step("lease", "timetolive", "{LEASE}", "-w", "fields"),
        Step("lease", "keep-alive", "--once", "{LEASE}"),
        Step("lease", "keep-alive", "--once", "{LEASE}", "-w", "json"),
        Step("lease", "list"),
        Step("lease", "list", "-w", "json"),
        Step("lease", "revoke", "{LEASE}"),
        Step("lease", "revoke", "{LEASE}"),
        Step("lease", "revoke", "{LEASE}", "-w", "json"),
        Step("lease", "timetolive", "{LEASE}"),
        Step("lease", "timetolive", "{LEASE}", "-w", "json"),
        Step("lease", "keep-alive", "--once", "{LEASE}"),
        Step("lease", "keep-alive", "{LEASE}"),
        Step("lease", "grant", "x"), Step("lease", "grant"), Step("lease", "revoke", "zz"), Step("lease", "timetolive"),
        Step("lease", "grant", "-5"),
        Step("put", "k", "v", "--lease=zz"), Step("put", "k", "v", "--lease=1234"),
        Step("lease", "grant", "-w", "table", "10"),
        // cluster and maintenance
        Step("member", "list"), Step("member", "list", "-w", "json"), Step("member", "list", "-w", "table"), Step("member", "list", "-w", "fields"),
        Step("member", "add", "newbie", "--learner", "--peer-urls=http://127.0.0.1:1", capture: true),
        Step("member", "list"),
        Step("member", "update", "{MEMBER}", "--peer-urls=http://127.0.0.1:2"),
        Step("member", "promote", "{MEMBER}"),
        Step("member", "remove", "{MEMBER}"),
        Step("member", "remove", "{MEMBER}"),
        Step("member", "add"), Step("member", "add", "x", "http://a"), Step("member", "add", "x"), Step("member", "remove", "zz"),
        Step("member", "remove"), Step("member", "update", "1"),
        Step("endpoint", "health"), Step("endpoint", "health", "-w", "json"),
        Step("endpoint", "health", "--cluster", generous: false),
        Step("alarm", "list"), Step("alarm", "list", "-w", "json"), Step("alarm", "disarm"), Step("alarm", "list", "x"),
        Step("defrag"),
        Step("move-leader", "1"), Step("move-leader", "zz"), Step("move-leader"),
        // auth
        Step("user", "add", "u1:pw"), Step("user", "add", "u1:pw"), Step("user", "add", "u2", "--new-user-password=pw2", "-w", "json"),
        Step("user", "add", ":x"), Step("user", "add", "u3", "--interactive=false", input: "secret\n"),
        Step("user", "get", "u1"), Step("user", "get", "nobody"), Step("user", "list"), Step("user", "list", "-w", "json"),
        Step("role", "add", "r1"), Step("role", "add", "r1"), Step("role", "add", "r2", "-w", "json"),
        Step("role", "grant-permission", "r1", "readwrite", "a", "b"),
        Step("role", "grant-permission", "r1", "read", "p", "--prefix"),
        Step("role", "grant-permission", "r1", "write", "f", "--from-key"),
        Step("role", "grant-permission", "r1", "bad", "x"),
        Step("role", "grant-permission", "r1", "read"),
        Step("role", "get", "r1"), Step("role", "get", "r1", "-w", "json"), Step("role", "get", "r1", "-w", "fields"), Step("role", "get", "nobody"),
        Step("user", "grant-role", "u1", "r1"), Step("user", "grant-role", "u1", "nosuch"),
        Step("user", "get", "u1"), Step("user", "get", "u1", "--detail"), Step("user", "get", "u1", "-w", "json"),
        Step("role", "revoke-permission", "r1", "a", "b"), Step("role", "revoke-permission", "r1", "p", "--prefix"),
        Step("role", "revoke-permission", "r1", "nothere"),
        Step("role", "list"), Step("role", "list", "-w", "json"), Step("role", "list", "-w", "fields"),
        Step("user", "revoke-role", "u1", "r1"), Step("user", "delete", "u1"), Step("user", "delete", "u1"), Step("role", "delete", "r1"),
        Step("user", "passwd", "u2", "--interactive=false", input: "pw3\n"),
        Step("auth", "enable"),
        Step("user", "add", "root:rootpw"), Step("user", "grant-role", "root", "root"),
        Step("auth", "enable"),
        Step("get", "foo"),
        Step("--user=root:rootpw", "get", "foo"),
        Step("--user=root", "--password=rootpw", "put", "foo", "authed"),
        Step("--user=root:wrong", "get", "foo"),
        Step("--user=u2:pw3", "get", "foo"),
        Step("--user=root:rootpw", "auth", "disable"),
        Step("auth", "disable", "x"),
        // environment variables
        Step("get", "foo", env: ["ETCDCTL_WRITE_OUT": "json"]),
        Step("get", "foo", env: ["ETCDCTL_HEX": "true"]),
        Step("get", "foo", "-w", "json", env: ["ETCDCTL_WRITE_OUT": "fields"]),
        Step("get", "foo", env: ["ETCDCTL_BOGUS": "1"]),
        Step("get", "foo", env: ["ETCDCTL_DIAL_TIMEOUT": "abc"]),
        // bad input
        Step("get", "foo", "--bogus"), Step("bogus"), Step("get"), Step("put"), Step("del"), Step("-w", "bad", "get", "foo"),
        Step("get", "foo", "--consistency=x"), Step("get", "foo", "--order=x"), Step("get", "foo", "--sort-by=x"),
        Step("get", "foo", "--rev=abc"), Step("get", "foo", "-w"), Step("get", "foo", "-x"), Step("get", "--limit"),
        Step("get", "foo", "--prefix=maybe"), Step("--dial-timeout=xyz", "get", "foo"),
        Step("lease"), Step("lease", "bogus"), Step("get", "-h"), Step("put", "--help"), Step("help", "watch"),
        Step("member"), Step("endpoint", "health", "-h"), Step("snapshot", "save"),
        Step("memb", "list"), Step("ge", "foo"),
        Step("lock"), Step("elect"), Step("elect", "e"), Step("elect", "e", "p", "-l"),
        Step("--cert=", "get", "foo"),
        // concurrency commands (killed after a while; keys carry the lease in hex)
        Step("lock", "mylock", "sh", "-c", "echo locked $ETCD_LOCK_KEY"),
        Step("lock", "mylock", "sh", "-c", "exit 4"),
        Step("elect", "myelection", "proposal", timeout: 1.5),
        Step("lock", "mylock", timeout: 1.5),
    ]

    @Test func scriptMatchesGoEtcdctl() async throws {
        #expect(FileManager.default.isExecutableFile(atPath: ourEtcdctl), "build etcdctl first: \(ourEtcdctl)")
        let mismatches = try await offload { try Self.runScript() }
        #expect(mismatches.isEmpty, "\(mismatches.count) of \(Self.script.count) differ:\n\(mismatches.prefix(8).joined(separator: "\n\n"))")
    }

    static func runScript() throws -> [String] {
        let goServer = try TwinEtcd()
        defer { goServer.cleanup() }
        let ourServer = try TwinEtcd()
        defer { ourServer.cleanup() }
        let go = Side(binary: goEtcdctl, etcd: goServer)
        let ours = Side(binary: ourEtcdctl, etcd: ourServer)
        var mismatches: [String] = []
        for step in Self.script {
            // Both sides at once (separate servers): halves the suite's time.
            nonisolated(unsafe) var theirsResult: Swift.Result<Result, any Error>!
            let group = DispatchGroup()
            group.enter()
            Thread.detachNewThread { theirsResult = Swift.Result { try go.run(step) }; group.leave() }
            let mine = try ours.run(step)
            group.wait()
            let theirs = try theirsResult.get()
            if theirs != mine {
                mismatches.append("etcdctl \(step.args.joined(separator: " "))\n=== go:\n\(theirs)\n=== ours:\n\(mine)")
            }
        }
        return mismatches
    }

    @Test func unreachableEndpointExitsWithinDialTimeout() async throws {
        try await offload { try Self.unreachable() }
    }

    static func unreachable() throws {
        let (port, fd) = try deadPort()
        defer { close(fd) }
        let start = Date()
        let ours = try runTool(ourEtcdctl, ["--endpoints=127.0.0.1:\(port)", "--dial-timeout=1s", "get", "foo"])
        let took = Date().timeIntervalSince(start)
        let theirs = try runTool(goEtcdctl, ["--endpoints=127.0.0.1:\(port)", "--dial-timeout=1s", "--command-timeout=1500ms", "get", "foo"])
        #expect(took < 2.5, "took \(took) s")
        #expect(ours.status == theirs.status && ours.status == 1)
        #expect(ours.out == theirs.out)
        let masked = { (s: String) in s.replacing(/"ts":"[^"]*"/, with: "TS").replacing(/client-[0-9a-f-]{36}/, with: "UUID") }
        #expect(masked(ours.err) == masked(theirs.err), "ours:\n\(ours.err)\ngo:\n\(theirs.err)")
        #expect(ours.err.hasSuffix("Error: context deadline exceeded\n"))
    }

    @Test func snapshotSaveWritesTheBackend() async throws {
        try await offload { try Self.snapshot() }
    }

    static func snapshot() throws {
        let server = try TwinEtcd()
        defer { server.cleanup() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("snap-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try runTool(ourEtcdctl, ["--endpoints=\(server.endpoint)", "put", "snap", "shot"])
        let r = try runTool(ourEtcdctl, ["--endpoints=\(server.endpoint)", "snapshot", "save", "\(dir)/ours.db"])
        let g = try runTool(goEtcdctl, ["--endpoints=\(server.endpoint)", "snapshot", "save", "\(dir)/go.db"])
        #expect(r.status == 0 && g.status == 0)
        #expect(r.out == "Snapshot saved at \(dir)/ours.db\n")
        #expect(g.out == "Snapshot saved at \(dir)/go.db\n")
        let ourSize = (try FileManager.default.attributesOfItem(atPath: "\(dir)/ours.db")[.size] as? Int) ?? 0
        let goSize = (try FileManager.default.attributesOfItem(atPath: "\(dir)/go.db")[.size] as? Int) ?? 0
        #expect(ourSize > 16_000 && ourSize == goSize)
        // The Go tool accepts our file as a valid snapshot.
        let status = try runTool(goEtcdctl, ["snapshot", "status", "\(dir)/ours.db", "-w", "json"])
        #expect(status.status == 0 && status.out.contains("\"totalKey\""), "\(status)")
        let logLines = r.err.split(separator: "\n").map { $0.replacing(/"ts":[^,]*,/, with: "").replacing(/"took":[0-9.e-]+/, with: "") }
        let goLines = g.err.split(separator: "\n").map { $0.replacing(/"ts":[^,]*,/, with: "").replacing(/"took":[0-9.e-]+/, with: "") }
        #expect(logLines.map { $0.replacingOccurrences(of: "ours.db", with: "X") } == goLines.map { $0.replacingOccurrences(of: "go.db", with: "X") })
    }

    @Test func versionIsOurs() throws {
        let r = try runTool(ourEtcdctl, ["version"])
        #expect(r.status == 0 && r.out == "etcdctl version: 3.6.0\nAPI version: 3.6\n")
    }
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

/// Runs a process to completion; SIGTERM after `timeout` seconds.
func runTool(_ path: String, _ arguments: [String], input: String? = nil, environment: [String: String] = [:],
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
    group.enter()
    Thread.detachNewThread { outData = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    process.waitUntilExit()
    watchdog.cancel()
    return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
}

/// Runs blocking work (process waits) on a dispatch thread, not the cooperative pool.
func offload<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Swift.Result { try body() }) }
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
