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
        let added = try cluster.etcdctl(["member", "add", name, "--peer-urls", peerURL])
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
