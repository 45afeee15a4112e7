import EtcdClient
import Foundation
import Testing

/// A tool left running (make-mirror), its stdout collected as it comes.
final class BackgroundTool: @unchecked Sendable {
    private let process = Process()
    private let lock = NSLock()
    private var collected = Data()

    init(_ path: String, _ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("ETCDCTL_") }
        env["ETCDCTL_API"] = "3"
        process.environment = env
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        out.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let chunk = handle.availableData
            guard let self, !chunk.isEmpty else { return }
            self.lock.withLock { self.collected.append(chunk) }
        }
        try process.run()
    }

    var output: String { lock.withLock { String(decoding: collected, as: UTF8.self) } }
    var isRunning: Bool { process.isRunning }

    /// SIGTERM, then SIGKILL if still running after 5 s.
    func stop() {
        if process.isRunning { process.terminate() }
        for _ in 0..<50 where process.isRunning { Thread.sleep(forTimeInterval: 0.1) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}

/// Polls `condition` every 100 ms for at most `seconds`.
func eventually(_ seconds: Double, _ condition: () async throws -> Bool) async throws -> Bool {
    for _ in 0..<Int(seconds * 10) {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(100))
    }
    return try await condition()
}

func keysAndValues(_ client: EtcdClient, prefix: String = "") async throws -> [String: String] {
    var out: [String: String] = [:]
    for kv in try await client.get(prefix, options: .prefix).kvs { out[kv.key.string] = kv.value.string }
    return out
}

extension Data {
    var string: String { String(decoding: self, as: UTF8.self) }
}

@Suite(.serialized) struct MakeMirrorTests {
    /// Our make-mirror and the Go one from the same source into twin destinations:
    /// the base copy, then puts, deletes and a multi-key txn replayed, leaving both
    /// destinations equal down to their revisions.
    @Test func mirrorsAPrefixLikeTheGoEtcdctl() async throws {
        let (source, ours, theirs) = try await offload { (try TwinEtcd(), try TwinEtcd(), try TwinEtcd()) }
        defer { source.cleanup(); ours.cleanup(); theirs.cleanup() }
        let src = try EtcdClient(endpoints: [source.endpoint])
        let dst = try EtcdClient(endpoints: [ours.endpoint])
        let goDst = try EtcdClient(endpoints: [theirs.endpoint])
        defer { src.close(); dst.close(); goDst.close() }
        try await src.put("/a/1", "one")
        try await src.put("/a/2", "two")
        try await src.put("/b/x", "outside")

        let flags = ["--prefix=/a/", "--dest-prefix=/m/"]
        let ourMirror = try BackgroundTool(ourEtcdctl, ["--endpoints=\(source.endpoint)", "make-mirror", "--progress-interval=200ms"] + flags + [ours.endpoint])
        let goMirror = try BackgroundTool(goEtcdctl, ["--endpoints=\(source.endpoint)", "make-mirror"] + flags + [theirs.endpoint])
        defer { ourMirror.stop(); goMirror.stop() }

        let base = ["/m/1": "one", "/m/2": "two"]
        #expect(try await eventually(10) { try await keysAndValues(dst) == base })
        #expect(try await eventually(10) { try await keysAndValues(goDst) == base })

        try await src.put("/a/3", "three")
        try await src.delete("/a/1")
        try await src.txn(Txn().then(.put("/a/t1", "x"), .put("/a/t2", "y"), .delete("/a/2")))
        try await src.put("/b/y", "outside too")
        try await src.put("/a/end", "done")
        let final = ["/m/3": "three", "/m/t1": "x", "/m/t2": "y", "/m/end": "done"]
        #expect(try await eventually(10) { try await keysAndValues(dst) == final })
        #expect(try await eventually(10) { try await keysAndValues(goDst) == final })
        // One destination txn per source revision, as the Go tool writes them: equal revisions, versions and all.
        let ourJSON = try await offload { try runTool(goEtcdctl, ["--endpoints=\(ours.endpoint)", "get", "", "--prefix", "-w", "json"]) }
        let goJSON = try await offload { try runTool(goEtcdctl, ["--endpoints=\(theirs.endpoint)", "get", "", "--prefix", "-w", "json"]) }
        #expect(ourJSON.status == 0 && ourJSON.out == goJSON.out, "ours:\n\(ourJSON.out)\ngo:\n\(goJSON.out)")
        #expect(try await dst.get("x").header.revision == 7) // 1 + 2 base puts + 4 replayed revisions

        // The count of keys processed: 2 copied, then 1 + 1 + 3 + 1 events.
        #expect(try await eventually(5) { ourMirror.output.split(separator: "\n").last == "8" }, "\(ourMirror.output)")
        #expect(ourMirror.output.split(separator: "\n").allSatisfy { Int($0) != nil })
        #expect(ourMirror.isRunning)
        try await offload { ourMirror.stop() }
        #expect(!ourMirror.isRunning)
    }

    /// --rev skips the base copy; --no-dest-prefix strips the prefix; a txn larger
    /// than --max-txn-ops is written as several.
    @Test func revisionNoDestPrefixAndMaxTxnOps() async throws {
        let (source, dest) = try await offload { (try TwinEtcd(), try TwinEtcd()) }
        defer { source.cleanup(); dest.cleanup() }
        let src = try EtcdClient(endpoints: [source.endpoint])
        let dst = try EtcdClient(endpoints: [dest.endpoint])
        defer { src.close(); dst.close() }
        let before = try await src.put("/c/old", "not copied").header.revision
        let mirror = try BackgroundTool(ourEtcdctl, ["--endpoints=\(source.endpoint)", "make-mirror", "--prefix=/c/", "--no-dest-prefix",
                                                     "--rev=\(before)", "--max-txn-ops=2", dest.endpoint])
        defer { mirror.stop() }
        let start = try await dst.get("x").header.revision
        // The mirror's watch may start after the writes: it replays from --rev + 1 anyway.
        try await src.txn(Txn().then(.put("/c/p1", "1"), .put("/c/p2", "2"), .put("/c/p3", "3"), .put("/c/p4", "4"), .put("/c/p5", "5")))
        let expected = ["p1": "1", "p2": "2", "p3": "3", "p4": "4", "p5": "5"]
        #expect(try await eventually(10) { try await keysAndValues(dst) == expected })
        // 5 operations in txns of at most 2: three destination revisions.
        #expect(try await dst.get("x").header.revision == start + 3)
        #expect(try await dst.get("p4").kvs.first?.modRevision == start + 2)
    }

    @Test func badArgumentsLikeTheGoEtcdctl() async throws {
        let server = try await offload { try TwinEtcd() }
        defer { server.cleanup() }
        for args in [["make-mirror"], ["make-mirror", "a", "b"], ["make-mirror", "--prefix=/a/", "--dest-prefix=/b/", "--no-dest-prefix", server.endpoint]] {
            let ours = try await offload { try runTool(ourEtcdctl, ["--endpoints=\(server.endpoint)"] + args) }
            let go = try await offload { try runTool(goEtcdctl, ["--endpoints=\(server.endpoint)"] + args) }
            #expect(ours.status == 128 && ours.status == go.status && ours.out == go.out && ours.err == go.err, "ours: \(ours)\ngo: \(go)")
        }
        // An unreachable destination ends the mirror within the dial timeout (etcd 3.4's waits
        // forever when there is nothing to copy), as does a --max-txn-ops of 0.
        let (port, fd) = try deadPort()
        defer { close(fd) }
        let started = Date()
        let dead = try await offload { try runTool(ourEtcdctl, ["--endpoints=\(server.endpoint)", "--dial-timeout=1s", "make-mirror", "127.0.0.1:\(port)"], timeout: 10) }
        #expect(dead.status == 2 && dead.err == "Error: context deadline exceeded\n" && Date().timeIntervalSince(started) < 5, "\(dead)")
        let zero = try await offload { try runTool(ourEtcdctl, ["--endpoints=\(server.endpoint)", "make-mirror", "--max-txn-ops=0", server.endpoint]) }
        #expect(zero.status == 128 && zero.err == "Error: --max-txn-ops must be positive, got 0\n", "\(zero)")
    }
}
