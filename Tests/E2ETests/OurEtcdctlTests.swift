import Foundation
import Testing

/// Our `etcdctl` against our `etcd`, next to the Go `etcdctl` against the
/// same server: the same commands must print the same thing and exit the
/// same way (lease ids masked).
@Suite(.serialized) struct OurEtcdctlTests {
    static var ourEtcdctl: String {
        EtcdProcess.repositoryRoot.appendingPathComponent(".build/debug/etcdctl").path
    }

    @Test func sameOutputAsTheGoEtcdctlOnOurServer() throws {
        let server = try EtcdProcess()
        defer { server.terminate() }
        // Each step runs twice, first with the Go tool on keys under G/, then
        // with ours on keys under O/, so both sides see the same state.
        let script: [(arguments: [String], input: String?)] = [
            (["put", "K/a", "1"], nil),
            (["put", "K/b", "2", "--prev-kv"], nil),
            (["put", "K/b", "3", "--prev-kv"], nil),
            (["get", "K/", "--prefix"], nil),
            (["get", "K/", "--prefix", "--keys-only", "--limit", "1"], nil),
            (["get", "K/a", "-w", "json"], nil),
            (["get", "K/", "--prefix", "--count-only", "-w", "fields"], nil),
            (["txn"], "value(\"K/a\") = \"1\"\n\nput K/c ok\n\nput K/c no\n\n"),
            (["get", "K/c", "--print-value-only"], nil),
            (["del", "K/", "--prefix", "--prev-kv"], nil),
            (["get", "K/a", "--rev", "1000"], nil),
            (["lease", "timetolive", "1234"], nil),
            (["put", "K/x", "y", "--lease", "1234"], nil),
        ]
        var mismatches: [String] = []
        var goOutputs: [String] = []
        for step in script {
            let results = try ["/usr/bin/etcdctl", Self.ourEtcdctl].enumerated().map { side, tool in
                let prefix = side == 0 ? "G" : "O"
                let arguments = step.arguments.map { $0.replacingOccurrences(of: "K/", with: "\(prefix)/") }
                let input = step.input?.replacingOccurrences(of: "K/", with: "\(prefix)/")
                return try Self.normalized(
                    EtcdProcess.run(tool, ["--endpoints=127.0.0.1:\(server.port)", "--dial-timeout=1s", "--command-timeout=5s"] + arguments,
                                    environment: ["ETCDCTL_API": "3"], input: input),
                    prefix: "\(prefix)/")
            }
            goOutputs.append(results[0])
            if results[0] != results[1] {
                mismatches.append("\(step.arguments):\n  go:   \(results[0])\n  ours: \(results[1])")
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.joined(separator: "\n"))")
        // The script did what it should, so equality means something.
        #expect(goOutputs[3] == "0|K/a\n1\nK/b\n3\n|")
        #expect(goOutputs[7] == "0|SUCCESS\n\nOK\n|")
        #expect(goOutputs[9] == "0|3\nK/a\n1\nK/b\n3\nK/c\nok\n|")
        #expect(goOutputs[12].contains("etcdserver: requested lease not found"))
    }

    /// etcd 3.6's `etcdctl downgrade` (the Go etcdctl here is 3.4, which
    /// has no such command): its lines and errors as 3.6 prints them.
    @Test func downgradeCommandsAsEtcdctl36PrintsThem() throws {
        // The monitor's default 5 s: the second enable comes before it has
        // lowered the cluster version (after that, 3.5 is no longer the
        // allowed target and etcd says so first).
        let server = try EtcdProcess()
        defer { server.terminate() }
        // stderr's last line: before it come clientv3-style retry warnings.
        func ours(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
            let result = try EtcdProcess.run(Self.ourEtcdctl, ["--endpoints=127.0.0.1:\(server.port)", "--command-timeout=5s"] + arguments,
                                             environment: [:], input: nil)
            return (result.status, result.out, result.err.split(separator: "\n").last.map { $0 + "\n" } ?? "")
        }
        #expect(try ours(["downgrade", "validate", "3.5"]).out == "Downgrade validate success, cluster version 3.6\n")
        let wrong = try ours(["downgrade", "validate", "3.4"])
        #expect(wrong.status == 1)
        #expect(wrong.err == "Error: etcdserver: invalid downgrade target version\n")
        #expect(try ours(["downgrade", "cancel"]).err == "Error: etcdserver: no inflight downgrade job\n")
        #expect(try ours(["downgrade", "enable", "3.5"]).out == "Downgrade enable success, cluster version 3.6\n")
        #expect(try ours(["downgrade", "enable", "3.5"]).err == "Error: etcdserver: cluster has a downgrade job in progress\n")
        #expect(try ours(["downgrade"]).status == 0)
        #expect(try ours(["downgrade", "validate"]).err == "Error: TARGET_VERSION not provided\n")
    }

    /// Output with the side's key prefix (also inside base64 json keys),
    /// revisions (they differ: the two sides write one after the other) and
    /// clientv3's log lines taken out.
    static func normalized(_ result: (status: Int32, out: String, err: String), prefix: String) -> String {
        var text = "\(result.status)|" + result.out.replacingOccurrences(of: prefix, with: "K/")
            + "|" + result.err.split(separator: "\n").filter { !$0.hasPrefix("{") }.joined(separator: "\n")
        for pattern in [#""revision":\d+"#, #""create_revision":\d+"#, #""mod_revision":\d+"#, #""Revision" : \d+"#,
                        #""raft_term":\d+"#, #""RaftTerm" : \d+"#, #""key":"[^"]*""#] {
            text = text.replacingOccurrences(of: pattern, with: "#", options: .regularExpression)
        }
        return text
    }
}
