import Foundation
import Testing

/// Authentication and RBAC end to end: one script of Go `etcdctl` (3.4)
/// commands run against our `etcd` and against the real etcd 3.4 side by
/// side; stdout, stderr (without clientv3's JSON retry logs) and exit codes
/// must be equal once lease ids are masked. Then our `etcdctl` runs the
/// same script against ours and must print what the Go one printed.
@Suite(.serialized) struct AuthE2ETests {
    /// (user for --user or nil, arguments, stdin). Users: root (rootpw),
    /// alice (a reader of foo/ with readwrite on bar), bob (writes k1..k5).
    static let script: [(user: String?, arguments: [String], input: String?)] = [
        // Before any user exists: enabling fails, everything is open.
        (nil, ["auth", "enable"], nil),
        (nil, ["put", "foo/a", "1"], nil),
        (nil, ["user", "add", "root:rootpw"], nil),
        (nil, ["user", "add", "alice:alicepw"], nil),
        (nil, ["user", "add", "bob:bobpw"], nil),
        (nil, ["user", "add", "alice:again"], nil),
        (nil, ["user", "add", "nopw", "--no-password"], nil),
        (nil, ["role", "add", "reader"], nil),
        (nil, ["role", "add", "reader"], nil),
        (nil, ["role", "add", "writer"], nil),
        (nil, ["role", "grant-permission", "reader", "read", "foo/", "--prefix"], nil),
        (nil, ["role", "grant-permission", "reader", "readwrite", "bar"], nil),
        (nil, ["role", "grant-permission", "writer", "write", "k1", "k5"], nil),
        (nil, ["role", "grant-permission", "writer", "read", "k", "--from-key"], nil),
        (nil, ["role", "grant-permission", "nosuch", "read", "x"], nil),
        (nil, ["user", "grant-role", "alice", "reader"], nil),
        (nil, ["user", "grant-role", "bob", "writer"], nil),
        (nil, ["user", "grant-role", "bob", "nosuch"], nil),
        (nil, ["user", "grant-role", "ghost", "reader"], nil),
        (nil, ["user", "list"], nil),
        (nil, ["role", "list"], nil),
        (nil, ["user", "get", "alice"], nil),
        (nil, ["role", "get", "reader"], nil),
        (nil, ["role", "get", "writer"], nil),
        // etcdctl's auth enable adds the root role and grants it, then enables.
        (nil, ["auth", "enable"], nil),
        (nil, ["auth", "enable"], nil),
        // Enabled: no user, a wrong password, an unknown user.
        (nil, ["get", "foo/a"], nil),
        (nil, ["put", "foo/a", "2"], nil),
        ("alice:wrong", ["get", "foo/a"], nil),
        ("ghost:x", ["get", "foo/a"], nil),
        ("nopw:x", ["get", "foo/a"], nil),
        // alice: reads foo/, not writes; bar both ways; nothing else.
        ("alice:alicepw", ["get", "foo/a"], nil),
        ("alice:alicepw", ["get", "foo/", "--prefix"], nil),
        ("alice:alicepw", ["get", "foo", "--prefix"], nil),
        ("alice:alicepw", ["put", "foo/b", "2"], nil),
        ("alice:alicepw", ["del", "foo/a"], nil),
        ("alice:alicepw", ["put", "bar", "1"], nil),
        ("alice:alicepw", ["get", "bar"], nil),
        ("alice:alicepw", ["put", "bar", "2", "--prev-kv"], nil),
        ("alice:alicepw", ["get", "baz"], nil),
        ("alice:alicepw", ["txn"], "value(\"foo/a\") = \"1\"\n\nput bar 3\n\nget foo/a\n\n"),
        ("alice:alicepw", ["txn"], "value(\"foo/a\") = \"1\"\n\nput foo/a 3\n\n\n"),
        ("alice:alicepw", ["txn"], "value(\"zzz\") = \"1\"\n\nput bar 3\n\n\n"),
        ("alice:alicepw", ["user", "get", "alice"], nil),
        ("alice:alicepw", ["user", "get", "bob"], nil),
        ("alice:alicepw", ["role", "get", "reader"], nil),
        ("alice:alicepw", ["role", "get", "writer"], nil),
        ("alice:alicepw", ["user", "list"], nil),
        ("alice:alicepw", ["role", "list"], nil),
        ("alice:alicepw", ["user", "add", "eve:evepw"], nil),
        ("alice:alicepw", ["auth", "disable"], nil),
        ("alice:alicepw", ["endpoint", "hashkv"], nil),
        ("alice:alicepw", ["defrag"], nil),
        ("alice:alicepw", ["alarm", "list"], nil),
        ("alice:alicepw", ["lease", "list"], nil),
        // bob: writes k1..k5, reads from k on.
        ("bob:bobpw", ["put", "k1", "v"], nil),
        ("bob:bobpw", ["put", "k4z", "v"], nil),
        ("bob:bobpw", ["put", "k5", "v"], nil),
        ("bob:bobpw", ["get", "k", "--from-key"], nil),
        ("bob:bobpw", ["get", "a", "--from-key"], nil),
        ("bob:bobpw", ["del", "k1", "k5"], nil),
        ("bob:bobpw", ["del", "k1", "k6"], nil),
        // Root: everything, but not root's own removal.
        ("root:rootpw", ["get", "", "--prefix"], nil),
        ("root:rootpw", ["user", "delete", "root"], nil),
        ("root:rootpw", ["role", "delete", "root"], nil),
        ("root:rootpw", ["user", "revoke-role", "root", "root"], nil),
        ("root:rootpw", ["user", "revoke-role", "alice", "writer"], nil),
        ("root:rootpw", ["role", "revoke-permission", "reader", "nosuch"], nil),
        ("root:rootpw", ["role", "get", "nosuch"], nil),
        ("root:rootpw", ["user", "get", "nosuch"], nil),
        ("root:rootpw", ["endpoint", "hashkv", "-w", "json"], nil),
        // Permission changes take effect for the next command.
        ("root:rootpw", ["role", "revoke-permission", "reader", "foo/", "foo0"], nil),
        ("alice:alicepw", ["get", "foo/a"], nil),
        ("root:rootpw", ["role", "grant-permission", "reader", "write", "foo/", "--prefix"], nil),
        ("alice:alicepw", ["put", "foo/c", "3"], nil),
        ("root:rootpw", ["user", "revoke-role", "alice", "reader"], nil),
        ("alice:alicepw", ["put", "foo/c", "4"], nil),
        ("root:rootpw", ["user", "passwd", "bob", "--interactive=false"], "newpw\n"),
        ("bob:bobpw", ["get", "k1"], nil),
        ("bob:newpw", ["get", "k1"], nil),
        ("root:rootpw", ["user", "delete", "bob"], nil),
        ("bob:newpw", ["get", "k1"], nil),
        ("root:rootpw", ["role", "delete", "writer"], nil),
        ("root:rootpw", ["user", "list"], nil),
        ("root:rootpw", ["role", "list"], nil),
        ("root:rootpw", ["get", "", "--prefix", "--keys-only"], nil),
        // Disabled again: open to all, credentials or not.
        ("root:rootpw", ["auth", "disable"], nil),
        ("root:rootpw", ["auth", "disable"], nil),
        (nil, ["put", "foo/a", "after"], nil),
        (nil, ["get", "foo/a"], nil),
        ("alice:alicepw", ["get", "foo/a"], nil),
        (nil, ["user", "list"], nil),
    ]

    @Test func goEtcdctlScriptMatchesRealEtcd() throws {
        let ours = try EtcdProcess(extraArguments: ["--bcrypt-cost", "4"])
        defer { ours.terminate() }
        let theirs = try RealEtcdProcess(extraArguments: ["--bcrypt-cost", "4"])
        defer { theirs.terminate() }
        #expect(Self.script.count >= 60)
        var mismatches: [String] = []
        var outputs: [String] = []
        for (index, step) in Self.script.enumerated() {
            let results = try [ours.port, theirs.port].map { port in
                Self.normalized(try Self.run("/usr/bin/etcdctl", port: port, step))
            }
            outputs.append(results[1])
            if results[0] != results[1] {
                mismatches.append("step \(index) \(step.user ?? "-") \(step.arguments):\n  ours: \(results[0])\n  etcd: \(results[1])")
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.joined(separator: "\n"))")
        // The script exercised what it should (real etcd's answers), so equality means something.
        #expect(outputs[24] == "0|Authentication Enabled\n|")
        #expect(outputs[27].contains("etcdserver: user name is empty"))
        #expect(outputs[28].hasPrefix("2|") && outputs[28].contains("authentication failed, invalid user ID or password"))
        #expect(outputs[34].contains("etcdserver: permission denied"))
        #expect(outputs[36] == "0|OK\n|")
        #expect(outputs.contains { $0.contains("auth: permission denied") })
    }

    /// Our etcdctl prints what the Go etcdctl prints, on our server.
    @Test func ourEtcdctlMatchesTheGoOneOnOurServer() throws {
        let servers = try (0..<2).map { _ in try EtcdProcess(extraArguments: ["--bcrypt-cost", "4"]) }
        defer { servers.forEach { $0.terminate() } }
        var mismatches: [String] = []
        for (index, step) in Self.script.enumerated() {
            let go = Self.normalized(try Self.run("/usr/bin/etcdctl", port: servers[0].port, step))
            let mine = Self.normalized(try Self.run(OurEtcdctlTests.ourEtcdctl, port: servers[1].port, step))
            if go != mine { mismatches.append("step \(index) \(step.user ?? "-") \(step.arguments):\n  ours: \(mine)\n  go:   \(go)") }
        }
        #expect(mismatches.isEmpty, "\(mismatches.joined(separator: "\n"))")
    }

    static func run(_ tool: String, port: Int, _ step: (user: String?, arguments: [String], input: String?)) throws -> (status: Int32, out: String, err: String) {
        let user = step.user.map { ["--user", $0] } ?? []
        return try EtcdProcess.run(tool, ["--endpoints=127.0.0.1:\(port)", "--dial-timeout=2s", "--command-timeout=5s"] + user + step.arguments,
                                   environment: ["ETCDCTL_API": "3"], input: step.input)
    }

    /// Exit code, stdout and stderr without clientv3's JSON log lines, with
    /// hashes, revisions and member ids masked.
    static func normalized(_ result: (status: Int32, out: String, err: String)) -> String {
        var text = "\(result.status)|\(result.out)|" + result.err.split(separator: "\n").filter { !$0.hasPrefix("{") }.joined(separator: "\n")
        for pattern in [#""hash":\d+"#, #""revision":\d+"#, #""compact_revision":\d+"#, #""hash_revision":\d+"#,
                        #""member_id":\d+"#, #""cluster_id":\d+"#, #""raft_term":\d+"#, #"127\.0\.0\.1:\d+"#] {
            text = text.replacingOccurrences(of: pattern, with: "#", options: .regularExpression)
        }
        return text
    }
}
