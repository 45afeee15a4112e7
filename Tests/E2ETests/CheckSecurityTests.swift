import Foundation
import Testing

/// `etcdctl check security` (ours): what it reports on an open real etcd,
/// on a plaintext member with a guessable root password, and on a member
/// hardened with mutual TLS on both ports and auth.
@Suite(.serialized) struct CheckSecurityTests {
    static func check(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
        try EtcdProcess.run(OurEtcdctlTests.ourEtcdctl, ["--dial-timeout=2s", "--command-timeout=5s"] + arguments + ["check", "security"],
                            environment: [:], input: nil)
    }

    /// The rows of the report as "SEVERITY check" pairs.
    static func rows(_ out: String) -> Set<String> {
        Set(out.split(separator: "\n").filter { $0.hasPrefix("|") && !$0.contains("SEVERITY") }.map { line in
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            return "\(cells[0]) \(cells[1])"
        })
    }

    @Test func anOpenRealEtcdFailsTheCheck() throws {
        let etcd = try RealEtcdProcess()
        defer { etcd.terminate() }
        let result = try Self.check(["--endpoints=http://127.0.0.1:\(etcd.port)"])
        #expect(result.status == 1, "\(result)")
        let rows = Self.rows(result.out)
        for expected in ["HIGH client-tls", "HIGH peer-tls", "HIGH auth", "HIGH anonymous-read", "MEDIUM metrics", "OK pprof"] {
            #expect(rows.contains(expected), "\(expected) missing from \(result.out)")
        }
        #expect(result.out.hasSuffix("5 findings, 4 high\n"), "\(result.out)")
    }

    @Test func aGuessableRootPasswordIsFound() throws {
        let ours = try EtcdProcess(extraArguments: ["--bcrypt-cost", "4"])
        defer { ours.terminate() }
        for step in [["user", "add", "root:changeme"], ["auth", "enable"]] {
            #expect(try AuthE2ETests.run("/usr/bin/etcdctl", port: ours.port, (nil, step, nil)).status == 0)
        }
        let result = try Self.check(["--endpoints=http://127.0.0.1:\(ours.port)"])
        #expect(result.status == 1, "\(result)")
        let rows = Self.rows(result.out)
        for expected in ["HIGH root-password", "HIGH client-tls", "HIGH peer-tls", "OK auth", "OK anonymous-read"] {
            #expect(rows.contains(expected), "\(expected) missing from \(result.out)")
        }
        #expect(result.out.contains(#"root logs in with the password "changeme""#))
    }

    @Test func aHardenedMemberPasses() throws {
        let certs = try TLSE2ETests.certificates()
        let port = try EtcdProcess.freePort(), peerPort = try EtcdProcess.freePort()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("hardened-\(UUID().uuidString)").path
        let url = "https://127.0.0.1:\(port)", peer = "https://127.0.0.1:\(peerPort)"
        let server = try EtcdProcess(
            arguments: ["--data-dir", dir, "--listen-client-urls", url, "--advertise-client-urls", url,
                        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "default=\(peer)",
                        "--cert-file", certs.cert("server"), "--key-file", certs.key("server"),
                        "--client-cert-auth", "--trusted-ca-file", certs.cert("ca"),
                        "--peer-cert-file", certs.cert("server"), "--peer-key-file", certs.key("server"),
                        "--peer-client-cert-auth", "--peer-trusted-ca-file", certs.cert("ca"), "--bcrypt-cost", "4"],
            port: port, dataDir: dir, ownsDataDir: true, scheme: "https", clientFlags: TLSE2ETests.clientFlags(certs, "client"))
        defer { server.terminate() }
        for step in [["user", "add", "root:Q7-long-and-unguessable"], ["auth", "enable"]] {
            let done = try server.etcdctl(step)
            #expect(done.status == 0, "\(done)")
        }
        let flags = ["--endpoints=\(url)"] + TLSE2ETests.clientFlags(certs, "client")
        // The test certificates live 30 days: within a week's warning they pass.
        let result = try Self.check(flags + ["--expiry-days=7"])
        #expect(result.status == 0, "\(result)")
        #expect(result.out.hasSuffix("0 findings, 0 high\n"), "\(result.out)")
        let rows = Self.rows(result.out)
        for expected in ["OK client-tls", "OK client-cert-auth", "OK peer-tls", "OK auth", "OK anonymous-read", "OK root-password",
                         "OK server-certificate", "OK client-certificate"] {
            #expect(rows.contains(expected), "\(expected) missing from \(result.out)")
        }
        // With a 60-day warning both certificates are reported, without failing the check.
        let warned = try Self.check(flags + ["--expiry-days=60"])
        #expect(warned.status == 0, "\(warned)")
        #expect(Self.rows(warned.out).isSuperset(of: ["MEDIUM server-certificate", "MEDIUM client-certificate"]), "\(warned.out)")
    }

    @Test func aTLSMemberWithoutClientCertificatesIsReported() throws {
        let certs = try TLSE2ETests.certificates()
        let server = try TLSE2ETests.server(certs)
        defer { server.terminate() }
        let result = try Self.check(["--endpoints=https://127.0.0.1:\(server.port)", "--cacert", certs.cert("ca"), "--expiry-days=7"])
        #expect(result.status == 1, "\(result)")
        let rows = Self.rows(result.out)
        for expected in ["OK client-tls", "MEDIUM client-cert-auth", "HIGH auth", "HIGH anonymous-read", "HIGH peer-tls"] {
            #expect(rows.contains(expected), "\(expected) missing from \(result.out)")
        }
    }
}
