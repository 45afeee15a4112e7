import EtcdGRPC
import EtcdProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Testing

/// Watch and Lease through the real Go `etcdctl` 3.4, against ours and —
/// for the same script — against the real etcd 3.4, comparing what the
/// user sees (lease ids, which are random, are replaced by `ID`).
@Suite(.serialized) struct WatchLeaseTests {
    /// Watch a key from a past revision, a prefix with prev-kv, and an
    /// interactive `watch -i`: the same event stream as the real etcd.
    @Test func watchOutputMatchesRealEtcd() throws {
        let ours = try EtcdProcess()
        defer { ours.terminate() }
        let theirs = try RealEtcdProcess()
        defer { theirs.terminate() }
        let outputs = try [ours.port, theirs.port].map { port in try Self.watchScript(port: port) }
        #expect(outputs[0] == outputs[1])
        // And the script saw what it should (so equality means something).
        #expect(outputs[1].keyFromRevision == "PUT\nfoo\n1\nPUT\nfoo\n2\nPUT\nfoo\n3\n")
        #expect(outputs[1].prefixWithPrevKV.contains("DELETE\nfa\nx\nfa\n\n"))
        #expect(outputs[1].interactive.contains("PUT\nwi\nv\n"))
    }

    struct WatchOutputs: Equatable {
        var keyFromRevision = "", prefixWithPrevKV = "", interactive = ""
    }

    static func watchScript(port: Int) throws -> WatchOutputs {
        var outputs = WatchOutputs()
        #expect(try etcdctl(port, ["put", "foo", "1"]).status == 0)
        #expect(try etcdctl(port, ["put", "foo", "2"]).status == 0)
        let fromRevision = try BackgroundProcess(etcdctlArguments(port, ["watch", "foo", "--rev=2"]))
        let prefix = try BackgroundProcess(etcdctlArguments(port, ["watch", "f", "--prefix", "--prev-kv"]))
        let interactive = try BackgroundProcess(etcdctlArguments(port, ["watch", "-i"]), keepStdinOpen: true)
        defer { fromRevision.stop(); prefix.stop(); interactive.stop() }
        #expect(fromRevision.waitForOutput(containing: "foo\n2\n"))
        interactive.write("watch wi\n")
        // Give the watchers time to be created before writing.
        Thread.sleep(forTimeInterval: 0.5)
        #expect(try etcdctl(port, ["put", "foo", "3"]).status == 0)
        #expect(try etcdctl(port, ["put", "fa", "x"]).status == 0)
        #expect(try etcdctl(port, ["del", "fa"]).status == 0)
        #expect(try etcdctl(port, ["put", "wi", "v"]).status == 0)
        #expect(fromRevision.waitForOutput(containing: "foo\n3\n"))
        #expect(prefix.waitForOutput(containing: "DELETE\nfa\nx\nfa\n\n"))
        #expect(interactive.waitForOutput(containing: "PUT\nwi\nv\n"))
        outputs.keyFromRevision = fromRevision.output
        outputs.prefixWithPrevKV = prefix.output
        outputs.interactive = interactive.output
        return outputs
    }

    /// grant, put --lease, timetolive --keys, list, keep-alive --once,
    /// revoke (which deletes the key): the same output as the real etcd.
    @Test func leaseCommandsMatchRealEtcd() throws {
        let ours = try EtcdProcess()
        defer { ours.terminate() }
        let theirs = try RealEtcdProcess()
        defer { theirs.terminate() }
        let transcripts = try [ours.port, theirs.port].map { port in try Self.leaseScript(port: port) }
        #expect(transcripts[0] == transcripts[1])
        #expect(transcripts[1].first == "lease ID granted with TTL(60s)\n")
        #expect(transcripts[1].contains { $0.contains("attached keys([lk])") })
        #expect(transcripts[1].contains { $0.contains("failed to revoke lease (etcdserver: requested lease not found)") })
    }

    static func leaseScript(port: Int) throws -> [String] {
        var transcript: [String] = []
        let grant = try etcdctl(port, ["lease", "grant", "60"])
        guard let id = grant.out.split(separator: " ").dropFirst().first.map(String.init) else {
            Issue.record("no lease id in \(grant)")
            return []
        }
        func record(_ arguments: [String]) throws {
            let result = try etcdctl(port, arguments)
            // clientv3's JSON log lines (retries) carry timestamps and client ids.
            let errors = result.err.split(separator: "\n").filter { !$0.hasPrefix("{") }.joined(separator: "\n")
            var text = "\(arguments.first ?? "") \(result.status): \(result.out)\(errors)"
            text = text.replacingOccurrences(of: id, with: "ID")
            // Remaining TTL depends on timing; keep only its presence.
            if let range = text.range(of: #"remaining\(\d+s\)"#, options: .regularExpression) {
                text.replaceSubrange(range, with: "remaining(Ns)")
            }
            transcript.append(text)
        }
        transcript.append(grant.out.replacingOccurrences(of: id, with: "ID"))
        try record(["put", "lk", "v", "--lease=\(id)"])
        try record(["lease", "timetolive", id, "--keys"])
        try record(["lease", "timetolive", id])
        try record(["lease", "list"])
        try record(["lease", "keep-alive", "--once", id])
        try record(["get", "lk"])
        try record(["lease", "revoke", id])
        try record(["get", "lk"])
        try record(["lease", "timetolive", id])
        try record(["lease", "revoke", id])
        try record(["put", "x", "y", "--lease=1234"])
        try record(["lease", "keep-alive", "--once", "1234"])
        return transcript
    }

    /// A lease with the shortest TTL runs out by itself: its key is deleted
    /// and a watcher sees the delete.
    @Test func expiringLeaseDeletesItsKeyAndWatchersSeeIt() throws {
        let ours = try EtcdProcess()
        defer { ours.terminate() }
        let watcher = try BackgroundProcess(Self.etcdctlArguments(ours.port, ["watch", "short"]))
        defer { watcher.stop() }
        Thread.sleep(forTimeInterval: 0.3)
        // The lease lives 2 s (the minimum); on a machine so busy that it ran
        // out before the put, take a new one (at most three tries).
        var id = ""
        for _ in 0..<3 {
            let grant = try Self.etcdctl(ours.port, ["lease", "grant", "1"])
            id = try #require(grant.out.split(separator: " ").dropFirst().first.map(String.init))
            if try Self.etcdctl(ours.port, ["put", "short", "lived", "--lease=\(id)"]).status == 0 { break }
        }
        #expect(watcher.waitForOutput(containing: "PUT\nshort\nlived\n"))
        #expect(watcher.waitForOutput(containing: "DELETE\nshort\n\n", seconds: 8))
        #expect(try Self.etcdctl(ours.port, ["get", "short"]).out == "")
        #expect(try Self.etcdctl(ours.port, ["lease", "timetolive", id]).out.contains("already expired"))
    }

    /// `lease keep-alive` keeps a short lease alive well past its TTL.
    @Test func keepAliveKeepsLeaseAlive() throws {
        let ours = try EtcdProcess()
        defer { ours.terminate() }
        let grant = try Self.etcdctl(ours.port, ["lease", "grant", "2"])
        let id = try #require(grant.out.split(separator: " ").dropFirst().first.map(String.init))
        #expect(try Self.etcdctl(ours.port, ["put", "kept", "alive", "--lease=\(id)"]).status == 0)
        let keeper = try BackgroundProcess(Self.etcdctlArguments(ours.port, ["lease", "keep-alive", id]))
        Thread.sleep(forTimeInterval: 5)
        #expect(keeper.output.contains("keepalived with TTL(2)"))
        #expect(try Self.etcdctl(ours.port, ["get", "kept", "--print-value-only"]).out == "alive\n")
        keeper.stop()
    }

    /// One Go `etcdctl watch` connection receives 10,000 events without
    /// reconnecting (the client PINGs after data frames; a server that
    /// counted those as a flood would drop it). The events come from 1,000
    /// txns of 10 puts each, so also 1,000 responses of 10 events.
    @Test func goWatchReceivesTenThousandEventsOnOneConnection() async throws {
        let ours = try EtcdProcess()
        defer { ours.terminate() }
        let watcher = try BackgroundProcess(Self.etcdctlArguments(ours.port, ["watch", "load/", "--prefix"]))
        defer { watcher.stop() }
        try await Task.sleep(for: .milliseconds(500))
        let total = 10_000
        try await withKVClients(ports: [ours.port]) { clients in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<16 {
                    group.addTask {
                        var i = worker * 10
                        while i < total {
                            var txn = Etcdserverpb_TxnRequest()
                            for j in i..<(i + 10) {
                                var op = Etcdserverpb_RequestOp()
                                op.requestPut.key = Data("load/\(j)".utf8)
                                op.requestPut.value = Data("v".utf8)
                                txn.success.append(op)
                            }
                            _ = try await clients[0].txn(txn)
                            i += 160
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        let deadline = Date().addingTimeInterval(30)
        var seen = 0
        while Date() < deadline {
            seen = watcher.output.components(separatedBy: "PUT\n").count - 1
            if seen >= total { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(seen == total)
        #expect(watcher.isRunning, "the watch process exited: \(watcher.errorOutput)")
        #expect(!watcher.errorOutput.contains("closing"), "\(watcher.errorOutput)")
    }

    static func etcdctlArguments(_ port: Int, _ arguments: [String]) -> [String] {
        ["--endpoints=127.0.0.1:\(port)", "--dial-timeout=1s", "--command-timeout=5s"] + arguments
    }

    static func etcdctl(_ port: Int, _ arguments: [String], input: String? = nil) throws -> (status: Int32, out: String, err: String) {
        try EtcdProcess.run("/usr/bin/etcdctl", etcdctlArguments(port, arguments), environment: ["ETCDCTL_API": "3"], input: input)
    }
}

/// A long-running command (the Go `etcdctl watch`, `lease keep-alive`)
/// whose output is collected as it comes; stopped by the test, and killed
/// after 120 s at the latest.
final class BackgroundProcess: @unchecked Sendable {
    private let process = Process()
    private let lock = NSLock()
    private var collected = Data()
    private var collectedErrors = Data()
    private let stdin = Pipe()

    init(
        _ arguments: [String], executable: String = "/usr/bin/etcdctl", environment: [String: String] = [:],
        keepStdinOpen: Bool = false
    ) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(["ETCDCTL_API": "3"].merging(environment) { $1 }) { $1 }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = stdin
        out.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self else { return }
            self.lock.withLock { self.collected.append(data) }
        }
        err.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self else { return }
            self.lock.withLock { self.collectedErrors.append(data) }
        }
        try process.run()
        if !keepStdinOpen { try stdin.fileHandleForWriting.close() }
        let process = self.process
        DispatchQueue.global().asyncAfter(deadline: .now() + 120) { if process.isRunning { process.terminate() } }
    }

    var output: String { lock.withLock { String(decoding: collected, as: UTF8.self) } }
    var errorOutput: String { lock.withLock { String(decoding: collectedErrors, as: UTF8.self) } }
    var isRunning: Bool { process.isRunning }

    func write(_ text: String) { stdin.fileHandleForWriting.write(Data(text.utf8)) }

    /// Waits (bounded) until the output contains `text`.
    func waitForOutput(containing text: String, seconds: Double = 5) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if output.contains(text) { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return output.contains(text)
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }
}
