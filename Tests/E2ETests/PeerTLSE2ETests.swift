import Foundation
import Testing

/// Peers over mutual TLS: a three-member cluster whose members verify each
/// other's certificates and Common Names, members that cannot join, and
/// `--peer-auto-tls`.
@Suite(.serialized) struct PeerTLSE2ETests {
    @Test func membersTalkOverMutualTLSAndRefuseStrangers() throws {
        let certs = try TestCertificates()
        for i in 0..<3 { try certs.make("peer\(i)", commonName: "etcd-peer") }
        try certs.make("stranger", commonName: "etcd-peer", ca: "other-ca")
        try certs.make("intruder", commonName: "intruder")
        let shared = ["--peer-trusted-ca-file", certs.cert("ca"), "--peer-client-cert-auth", "--peer-cert-allowed-cn", "etcd-peer"]
        let cluster = try ClusterProcesses(
            size: 3, extraArguments: shared, peerScheme: "https",
            memberArguments: Dictionary(uniqueKeysWithValues: (0..<3).map { ($0, ["--peer-cert-file", certs.cert("peer\($0)"), "--peer-key-file", certs.key("peer\($0)")]) }))
        defer { cluster.shutDown() }
        _ = try cluster.waitForLeader()
        #expect(try cluster.etcdctl(["put", "over", "tls"], endpoint: cluster.endpoint(0)).status == 0)
        for i in 1..<3 {
            #expect(try cluster.etcdctl(["get", "over", "--print-value-only"], endpoint: cluster.endpoint(i)).out == "tls\n")
        }
        #expect(Set(try cluster.convergedHashes()).count == 1)

        // A member whose certificate comes from another CA, then one whose
        // CN is not the allowed one: each is added, cannot join, and the
        // members log why; the cluster keeps serving.
        for (name, logged) in [("stranger", "TLS handshake failed"), ("intruder", "client certificate authentication failed")] {
            let before = (0..<3).map { cluster.log($0).components(separatedBy: logged).count }
            let joiner = try Joiner(cluster: cluster, name: name, arguments: shared + ["--peer-cert-file", certs.cert(name), "--peer-key-file", certs.key(name)])
            defer { joiner.stop(cluster: cluster) }
            #expect(try Self.waitUntil { (0..<3).contains { cluster.log($0).components(separatedBy: logged).count > before[$0] } },
                    "\(name): no member logged \"\(logged)\"")
            #expect(try cluster.etcdctl(["put", "still", name], endpoint: cluster.endpoint(1)).status == 0)
            let status = try cluster.etcdctl(["get", "still", "--print-value-only"], endpoint: "127.0.0.1:\(joiner.clientPort)")
            #expect(status.status != 0, "\(name) serves: \(status)")
        }
    }

    /// Every listener over TLS: clients with mutual TLS as well as peers. A
    /// lease renewed through a follower is forwarded to the leader's
    /// `https://` client URL with this member's client certificate.
    @Test func clientsAndPeersAllOverTLSForwardToTheLeader() throws {
        let certs = try TestCertificates()
        try certs.make("member", commonName: "member")
        try certs.make("client", commonName: "root", kind: "client")
        let tls = ["--cert-file", certs.cert("member"), "--key-file", certs.key("member"), "--trusted-ca-file", certs.cert("ca"), "--client-cert-auth",
                   "--peer-cert-file", certs.cert("member"), "--peer-key-file", certs.key("member"), "--peer-trusted-ca-file", certs.cert("ca"),
                   "--peer-client-cert-auth"]
        let cluster = try ClusterProcesses(size: 3, extraArguments: tls, peerScheme: "https", clientScheme: "https",
                                           clientFlags: ["--cacert", certs.cert("ca"), "--cert", certs.cert("client"), "--key", certs.key("client")])
        defer { cluster.shutDown() }
        let leader = try cluster.waitForLeader()
        let leaderIndex = try #require(try cluster.index(ofMemberID: leader))
        let follower = (leaderIndex + 1) % 3
        let grant = try cluster.etcdctl(["lease", "grant", "60"], endpoint: cluster.endpoint(leaderIndex))
        let lease = try #require(grant.out.firstMatch(of: /lease ([0-9a-f]+) granted/)).1
        let renewed = try cluster.etcdctl(["lease", "keep-alive", "--once", String(lease)], endpoint: cluster.endpoint(follower))
        #expect(renewed.status == 0 && renewed.out.contains("keepalived with TTL(60)"), "\(renewed)")
        let ttl = try cluster.etcdctl(["lease", "timetolive", String(lease)], endpoint: cluster.endpoint(follower))
        #expect(ttl.out.contains("granted with TTL(60s)"), "\(ttl)")
    }

    @Test func peerAutoTLSClusterWorks() throws {
        let cluster = try ClusterProcesses(size: 3, extraArguments: ["--peer-auto-tls"], peerScheme: "https")
        defer { cluster.shutDown() }
        _ = try cluster.waitForLeader()
        #expect(try cluster.etcdctl(["put", "auto", "peers"], endpoint: cluster.endpoint(2)).status == 0)
        #expect(try cluster.etcdctl(["get", "auto", "--print-value-only"], endpoint: cluster.endpoint(0)).out == "peers\n")
        #expect(FileManager.default.fileExists(atPath: cluster.root + "/n0/fixtures/peer/cert.pem"))
    }

    /// Polls `condition` every 100 ms for at most 20 s.
    static func waitUntil(_ condition: () throws -> Bool) throws -> Bool {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if try condition() { return true }
            Thread.sleep(forTimeInterval: 0.1)
        }
        return try condition()
    }
}

/// A fourth member added with `member add` and started to join over TLS.
final class Joiner {
    let process = Process()
    let clientPort: Int
    let peerURL: String
    let dataDir: String

    init(cluster: ClusterProcesses, name: String, arguments: [String]) throws {
        clientPort = try EtcdProcess.freePort()
        peerURL = "https://127.0.0.1:\(try EtcdProcess.freePort())"
        dataDir = cluster.root + "/" + name
        // --strict-reconfig-check refuses an add until the members have been
        // connected a while (etcd's "unhealthy cluster"): retried, bounded.
        var added = try cluster.etcdctl(["member", "add", name, "--peer-urls", peerURL])
        let deadline = Date().addingTimeInterval(20)
        while added.status != 0 && added.err.contains("unhealthy cluster") && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.5)
            added = try cluster.etcdctl(["member", "add", name, "--peer-urls", peerURL])
        }
        guard added.status == 0 else { throw EtcdProcess.ProcessError.timedOut(["member add: \(added.err)"]) }
        let initial = cluster.initialCluster + ",\(name)=\(peerURL)"
        process.executableURL = URL(fileURLWithPath: EtcdProcess.binary)
        process.arguments = ["--name", name, "--data-dir", dataDir,
                             "--listen-client-urls", "http://127.0.0.1:\(clientPort)", "--advertise-client-urls", "http://127.0.0.1:\(clientPort)",
                             "--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
                             "--initial-cluster", initial, "--initial-cluster-state", "existing", "--initial-cluster-token", cluster.token,
                             "--heartbeat-interval", "50", "--election-timeout", "500"] + arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    /// Stops it and removes it from the cluster again.
    func stop(cluster: ClusterProcesses) {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        if let list = try? cluster.etcdctl(["member", "list"]),
           let line = list.out.split(separator: "\n").first(where: { $0.contains(peerURL) }),
           let id = line.split(separator: ",").first {
            _ = try? cluster.etcdctl(["member", "remove", String(id)])
        }
    }
}
