import Foundation
import Testing

/// Snapshots across systems: ours saved and restored by the real etcd 3.4's
/// tools and served by the real etcd, and the real etcd's snapshot restored
/// by our etcdutl and served by ours.
@Suite(.serialized) struct SnapshotE2ETests {
    static let goEtcdctl = "/usr/bin/etcdctl"
    static let goEtcd = "/usr/bin/etcd"
    static var etcdutl: String { EtcdProcess.repositoryRoot.appendingPathComponent(".build/debug/etcdutl").path }
    static var ourEtcdctl: String { EtcdProcess.repositoryRoot.appendingPathComponent(".build/debug/etcdctl").path }

    /// A new empty scratch directory (the caller removes it).
    static func scratch(_ label: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(label)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    static func go(_ endpoint: String, _ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
        try EtcdProcess.run(goEtcdctl, ["--endpoints=\(endpoint)", "--dial-timeout=2s", "--command-timeout=10s"] + arguments,
                            environment: ["ETCDCTL_API": "3"], input: nil)
    }

    /// Puts with history, deletes, a lease with keys, a compaction.
    static func fill(_ endpoint: String) throws -> String {
        for round in 0..<3 {
            for i in 0..<40 { #expect(try go(endpoint, ["put", "key\(i)", "value-\(round)-\(i)"]).status == 0) }
        }
        #expect(try go(endpoint, ["del", "key1", "--prefix"]).status == 0)
        let grant = try go(endpoint, ["lease", "grant", "3600"])
        let lease = try #require(grant.out.firstMatch(of: /lease ([0-9a-f]+) granted/)).1
        #expect(try go(endpoint, ["put", "leased", "by-lease", "--lease=\(lease)"]).status == 0)
        let revision = try #require(try go(endpoint, ["get", "key0", "-w", "json"]).out.firstMatch(of: /"revision":(\d+)/)).1
        #expect(try go(endpoint, ["compact", String(Int(revision)! - 50)]).status == 0)
        #expect(try go(endpoint, ["put", "after-compaction", "x"]).status == 0)
        // Auth records (auth stays disabled, so the rest reads without a user).
        for step in [["user", "add", "root:rootpw"], ["role", "add", "reader"], ["role", "grant-permission", "reader", "read", "key", "kez"],
                     ["role", "grant-permission", "reader", "readwrite", "leased", "--prefix"], ["user", "add", "alice:alicepw"],
                     ["user", "grant-role", "alice", "reader"]] {
            #expect(try go(endpoint, step).status == 0, "\(step)")
        }
        return String(lease)
    }

    /// The restored passwords work: with auth enabled, alice logs in with
    /// hers (and reads what her role grants), not with a wrong one.
    static func checkLogins(_ endpoint: String) throws {
        #expect(try go(endpoint, ["auth", "enable"]).status == 0)
        let granted = try go(endpoint, ["--user", "alice:alicepw", "get", "key0", "--print-value-only"])
        #expect(granted.status == 0 && granted.out == "value-2-0\n", "\(granted)")
        #expect(try go(endpoint, ["--user", "alice:wrong", "get", "key0"]).status != 0)
    }

    /// What must survive a snapshot: every key with its revisions and
    /// version, the leases, and HashKV at the current revision.
    struct Observed: Equatable, CustomStringConvertible {
        var kvs: String
        var revision: String
        var leases: String
        var hashKV: String
        var auth: String
        var description: String { "revision \(revision)\nleases \(leases)\nhashKV \(hashKV)\nauth \(auth)\nkvs \(kvs)" }
    }

    static func observe(_ endpoint: String) throws -> Observed {
        let get = try go(endpoint, ["get", "", "--prefix", "-w", "json"])
        #expect(get.status == 0, "\(get.err)")
        let kvs = String(try #require(get.out.firstMatch(of: /"kvs":(\[.*\])/)).1)
        let revision = String(try #require(get.out.firstMatch(of: /"revision":(\d+)/)).1)
        let leases = try go(endpoint, ["lease", "list"]).out
        let hash = try go(endpoint, ["endpoint", "hashkv", "--rev", revision, "-w", "json"])
        let hashKV = String(try #require(hash.out.firstMatch(of: /"hash":(\d+)/), "\(hash)").1)
        // Users, roles and permissions (the password is checked by logging in once auth is on elsewhere).
        let auth = try [["user", "list"], ["role", "list"], ["role", "get", "reader"], ["user", "get", "alice"]].map { try go(endpoint, $0).out }
        #expect(auth[0].contains("alice") && auth[2].contains("[key, kez)"), "\(auth)")
        return Observed(kvs: kvs, revision: revision, leases: leases, hashKV: hashKV, auth: auth.joined(separator: "|"))
    }

    /// A real etcd 3.4 on a given data dir and peer port.
    static func startRealEtcd(dataDir: String, peerPort: Int, clientPort: Int) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: goEtcd)
        process.arguments = ["--name", "default", "--data-dir", dataDir,
                             "--listen-client-urls", "http://127.0.0.1:\(clientPort)", "--advertise-client-urls", "http://127.0.0.1:\(clientPort)",
                             "--listen-peer-urls", "http://127.0.0.1:\(peerPort)", "--initial-advertise-peer-urls", "http://127.0.0.1:\(peerPort)",
                             "--initial-cluster", "default=http://127.0.0.1:\(peerPort)"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if try go("127.0.0.1:\(clientPort)", ["get", "ready"]).status == 0 { return process }
            Thread.sleep(forTimeInterval: 0.2)
        }
        process.terminate()
        process.waitUntilExit()
        throw EtcdProcess.ProcessError.notReady
    }

    static func restoreArguments(_ dataDir: String, peerPort: Int) -> [String] {
        ["--data-dir", dataDir, "--name", "default",
         "--initial-cluster", "default=http://127.0.0.1:\(peerPort)",
         "--initial-advertise-peer-urls", "http://127.0.0.1:\(peerPort)"]
    }

    /// Ours → real: Go etcdctl saves a snapshot from our server, its status
    /// accepts it (and ours reads the same numbers), Go's restore makes a
    /// data dir the real etcd 3.4 starts on, and it serves our keys with
    /// their revisions and versions, our lease and our HashKV.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: goEtcd)))
    func oursSnapshotRestoresIntoTheRealEtcd() throws {
        let ours = try EtcdProcess()
        defer { ours.terminate() }
        let endpoint = "127.0.0.1:\(ours.port)"
        _ = try Self.fill(endpoint)
        let before = try Self.observe(endpoint)
        let dir = try Self.scratch("snap-ours")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = dir + "/ours.db"
        let saved = try Self.go(endpoint, ["snapshot", "save", file])
        #expect(saved.status == 0, "\(saved.err)")

        let goStatus = try EtcdProcess.run(Self.goEtcdctl, ["snapshot", "status", file, "-w", "json"], environment: ["ETCDCTL_API": "3"], input: nil)
        #expect(goStatus.status == 0, "\(goStatus.err)")
        #expect(goStatus.out.contains("\"revision\":\(before.revision),"), "\(goStatus.out)")
        let ourStatus = try EtcdProcess.run(Self.ourEtcdctl, ["snapshot", "status", file, "-w", "json"], environment: [:], input: nil)
        #expect(ourStatus.out == goStatus.out)
        let utlStatus = try EtcdProcess.run(Self.etcdutl, ["snapshot", "status", file, "-w", "json"], environment: [:], input: nil)
        #expect(utlStatus.out.hasPrefix(String(goStatus.out.dropLast(2))), "\(utlStatus.out)")

        let peer = try EtcdProcess.freePort(), client = try EtcdProcess.freePort()
        let restored = dir + "/real.etcd"
        let restore = try EtcdProcess.run(Self.goEtcdctl, ["snapshot", "restore", file] + Self.restoreArguments(restored, peerPort: peer),
                                          environment: ["ETCDCTL_API": "3"], input: nil)
        #expect(restore.status == 0, "\(restore.err)")
        let real = try Self.startRealEtcd(dataDir: restored, peerPort: peer, clientPort: client)
        defer { real.terminate(); real.waitUntilExit() }
        let after = try Self.observe("127.0.0.1:\(client)")
        #expect(after == before)
        try Self.checkLogins("127.0.0.1:\(client)")
    }

    /// Real → ours: the real etcd's snapshot, our etcdutl's status (equal
    /// to Go's) and restore, our server on the restored dir serves the same
    /// keys, revisions, lease and HashKV.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: goEtcd)))
    func realSnapshotRestoresIntoOurs() throws {
        let real = try RealEtcdProcess()
        defer { real.terminate() }
        let endpoint = "127.0.0.1:\(real.port)"
        _ = try Self.fill(endpoint)
        let before = try Self.observe(endpoint)
        let dir = try Self.scratch("snap-real")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = dir + "/real.db"
        #expect(try Self.go(endpoint, ["snapshot", "save", file]).status == 0)

        let goStatus = try EtcdProcess.run(Self.goEtcdctl, ["snapshot", "status", file, "-w", "json"], environment: ["ETCDCTL_API": "3"], input: nil)
        let ourStatus = try EtcdProcess.run(Self.ourEtcdctl, ["snapshot", "status", file, "-w", "json"], environment: [:], input: nil)
        #expect(ourStatus.out == goStatus.out && goStatus.status == 0, "ours \(ourStatus)\ngo \(goStatus)")
        for format in ["table", "simple"] {
            let g = try EtcdProcess.run(Self.goEtcdctl, ["snapshot", "status", file, "-w", format], environment: ["ETCDCTL_API": "3"], input: nil)
            let o = try EtcdProcess.run(Self.ourEtcdctl, ["snapshot", "status", file, "-w", format], environment: [:], input: nil)
            #expect(o.out == g.out)
        }

        let peer = try EtcdProcess.freePort(), client = try EtcdProcess.freePort()
        let restored = dir + "/ours.etcd"
        let restore = try EtcdProcess.run(Self.etcdutl, ["snapshot", "restore", file] + Self.restoreArguments(restored, peerPort: peer),
                                          environment: [:], input: nil)
        #expect(restore.status == 0, "\(restore.err)")
        #expect(restore.err.contains("\"msg\":\"restored snapshot\""))
        let ours = try Self.startOurs(on: restored, peerPort: peer, clientPort: client)
        defer { ours.terminate() }
        let after = try Self.observe("127.0.0.1:\(client)")
        #expect(after == before)
        try Self.checkLogins("127.0.0.1:\(client)")
        // The new membership: one member under the restore's peer URL.
        let members = try Self.go("127.0.0.1:\(client)", ["member", "list"])
        #expect(members.out.contains("http://127.0.0.1:\(peer)"), "\(members.out)")
    }

    /// A truncated file, a wrong hash and a file that is not bbolt: our
    /// etcdutl names the problem, exits 1 and leaves no data dir.
    @Test func brokenSnapshotsFailCleanly() throws {
        let dir = try Self.scratch("snap-bad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ours = try EtcdProcess()
        defer { ours.terminate() }
        #expect(try ours.etcdctl(["put", "a", "b"]).status == 0)
        let good = dir + "/good.db"
        #expect(try ours.etcdctl(["snapshot", "save", good]).status == 0)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: good))

        func restoreFails(_ data: Data, _ extra: [String] = [], expecting message: String) throws {
            let file = dir + "/case.db"
            try data.write(to: URL(fileURLWithPath: file))
            let target = dir + "/restored"
            let r = try EtcdProcess.run(Self.etcdutl, ["snapshot", "restore", file, "--data-dir", target] + extra, environment: [:], input: nil)
            #expect(r.status == 1)
            #expect(r.err.contains(message), "\(r.err)")
            #expect(!FileManager.default.fileExists(atPath: target))
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir).allSatisfy { !$0.contains("restoring") })
        }
        var flipped = bytes
        flipped[5000] ^= 0xFF
        try restoreFails(flipped, expecting: "expected sha256")
        // Not bbolt either: the hash (checked beside the copy) is what is reported, as etcd checks it first.
        try restoreFails(Data(repeating: 0x42, count: 8192 + 32), expecting: "expected sha256")
        try restoreFails(bytes.prefix(bytes.count - 4096 - 32), expecting: "snapshot missing hash")
        try restoreFails(bytes.prefix(bytes.count - 4096 - 32), ["--skip-hash-check"], expecting: "truncated")
        try restoreFails(Data(repeating: 0x42, count: 8192 + 32), ["--skip-hash-check"], expecting: "no valid meta page")
        try restoreFails(Data(), ["--skip-hash-check"], expecting: "too small")
        let status = try EtcdProcess.run(Self.etcdutl, ["snapshot", "status", dir + "/missing.db"], environment: [:], input: nil)
        #expect(status.status == 1 && status.err == "Error: stat \(dir)/missing.db: no such file or directory\n")
    }

    static func revision(_ endpoint: String) throws -> Int {
        let out = try go(endpoint, ["endpoint", "status", "-w", "json"]).out
        return Int(try #require(out.firstMatch(of: /"revision":(\d+)/)).1)!
    }

    static func hashKV(_ endpoint: String, at revision: Int) throws -> String {
        let out = try go(endpoint, ["endpoint", "hashkv", "--rev", String(revision), "-w", "json"])
        return String(try #require(out.out.firstMatch(of: /"hash":(\d+)/), "\(out)").1)
    }

    static func startOurs(on dataDir: String, peerPort: Int, clientPort: Int) throws -> EtcdProcess {
        try EtcdProcess(arguments: [
            "--name", "default", "--data-dir", dataDir,
            "--listen-client-urls", "http://127.0.0.1:\(clientPort)", "--advertise-client-urls", "http://127.0.0.1:\(clientPort)",
            "--listen-peer-urls", "http://127.0.0.1:\(peerPort)", "--initial-advertise-peer-urls", "http://127.0.0.1:\(peerPort)",
            "--initial-cluster", "default=http://127.0.0.1:\(peerPort)",
        ], port: clientPort, dataDir: dataDir)
    }

    /// A snapshot taken while 256 clients write is one consistent point:
    /// writes go on while it streams, and the restored store's HashKV at
    /// the snapshot's revision equals the source's at that revision.
    @Test func snapshotDuringWritesIsConsistent() throws {
        let ours = try EtcdProcess()
        defer { ours.terminate() }
        let endpoint = "127.0.0.1:\(ours.port)"
        let dir = try Self.scratch("snap-load")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bench = Process()
        bench.executableURL = EtcdProcess.repositoryRoot.appendingPathComponent(".build/debug/etcd-bench")
        bench.arguments = ["put", "--endpoints", endpoint, "--conns", "4", "--clients", "256", "--total", "1000000",
                           "--key-space-size", "5000", "--val-size", "64"]
        bench.standardOutput = FileHandle.nullDevice
        bench.standardError = FileHandle.nullDevice
        try bench.run()
        defer { if bench.isRunning { bench.terminate() }; bench.waitUntilExit() }
        let deadline = Date().addingTimeInterval(60)
        while try Self.revision(endpoint) < 3000 {
            guard Date() < deadline, bench.isRunning else { Issue.record("the load did not start"); return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        let file = dir + "/during.db"
        let before = try Self.revision(endpoint)
        let saved = try Self.go(endpoint, ["snapshot", "save", file])
        let after = try Self.revision(endpoint)
        #expect(saved.status == 0, "\(saved.err)")
        #expect(bench.isRunning && after > before, "writes stopped: revision \(before) -> \(after)")
        bench.terminate()
        bench.waitUntilExit()

        let status = try EtcdProcess.run(Self.etcdutl, ["snapshot", "status", file, "-w", "json"], environment: [:], input: nil)
        let snapshotRevision = Int(try #require(status.out.firstMatch(of: /"revision":(\d+)/), "\(status)").1)!
        #expect(snapshotRevision >= before && snapshotRevision <= after)
        let sourceHash = try Self.hashKV(endpoint, at: snapshotRevision)

        let peer = try EtcdProcess.freePort(), client = try EtcdProcess.freePort()
        let restored = dir + "/restored.etcd"
        let restore = try EtcdProcess.run(Self.etcdutl, ["snapshot", "restore", file] + Self.restoreArguments(restored, peerPort: peer),
                                          environment: [:], input: nil)
        #expect(restore.status == 0, "\(restore.err)")
        let copy = try Self.startOurs(on: restored, peerPort: peer, clientPort: client)
        defer { copy.terminate() }
        #expect(try Self.revision("127.0.0.1:\(client)") == snapshotRevision)
        #expect(try Self.hashKV("127.0.0.1:\(client)", at: snapshotRevision) == sourceHash)
    }

    /// etcd 3.6's --bump-revision N --mark-compacted: the restored store
    /// continues N revisions later, with everything before compacted; either
    /// flag alone is refused as etcdutl refuses it.
    @Test func restoreBumpsTheRevisionAndMarksItCompacted() throws {
        let ours = try EtcdProcess()
        defer { ours.terminate() }
        let endpoint = "127.0.0.1:\(ours.port)"
        for i in 0..<5 { #expect(try Self.go(endpoint, ["put", "k\(i)", "v\(i)"]).status == 0) }
        let latest = try Self.revision(endpoint)
        let dir = try Self.scratch("snap-bump")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = dir + "/s.db"
        #expect(try Self.go(endpoint, ["snapshot", "save", file]).status == 0)
        let peer = try EtcdProcess.freePort(), client = try EtcdProcess.freePort()
        let restored = dir + "/bumped.etcd"
        let alone = try EtcdProcess.run(Self.etcdutl, ["snapshot", "restore", file, "--bump-revision", "1000"] + Self.restoreArguments(restored, peerPort: peer),
                                        environment: [:], input: nil)
        #expect(alone.status == 1 && alone.err.contains("--mark-compacted required"), "\(alone)")
        let restore = try EtcdProcess.run(Self.etcdutl, ["snapshot", "restore", file, "--bump-revision", "1000", "--mark-compacted"]
                                          + Self.restoreArguments(restored, peerPort: peer), environment: [:], input: nil)
        #expect(restore.status == 0, "\(restore.err)")
        let copy = try Self.startOurs(on: restored, peerPort: peer, clientPort: client)
        defer { copy.terminate() }
        let target = "127.0.0.1:\(client)"
        #expect(try Self.revision(target) == latest + 1000)
        #expect(try Self.go(target, ["get", "k3", "--print-value-only"]).out == "v3\n")
        let old = try Self.go(target, ["get", "k3", "--rev", String(latest)])
        #expect(old.err.contains("required revision has been compacted"), "\(old)")
        #expect(try Self.go(target, ["put", "next", "x", "-w", "json"]).out.contains("\"revision\":\(latest + 1001)"))
    }

    /// Boot in place: stop a real etcd 3.4 member and start ours on its data
    /// dir: the bbolt backend is converted once (the original kept beside
    /// it) and ours serves the same keys, revisions, lease and HashKV, and
    /// takes writes.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: goEtcd)))
    func oursStartsOnARealEtcdDataDir() throws {
        let dir = try Self.scratch("inplace")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let dataDir = dir + "/member.etcd"
        let peer = try EtcdProcess.freePort(), client = try EtcdProcess.freePort()
        let endpoint = "127.0.0.1:\(client)"
        let real = try Self.startRealEtcd(dataDir: dataDir, peerPort: peer, clientPort: client)
        _ = try Self.fill(endpoint)
        let before = try Self.observe(endpoint)
        real.terminate()
        real.waitUntilExit()

        let ours = try Self.startOurs(on: dataDir, peerPort: peer, clientPort: client)
        defer { ours.terminate() }
        #expect(FileManager.default.fileExists(atPath: dataDir + "/member/snap/db.bbolt"))
        let after = try Self.observe(endpoint)
        #expect(after == before)
        #expect(try Self.go(endpoint, ["put", "after-move", "x", "-w", "json"]).out.contains("\"revision\":\(Int(before.revision)! + 1)"))
    }
}
