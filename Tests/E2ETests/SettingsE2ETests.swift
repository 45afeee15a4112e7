import Foundation
import Testing

/// `etcd`'s command line, environment and config file as a user meets them:
/// Go's flag syntax, and settings we do not implement refusing the start.
@Suite(.serialized) struct SettingsE2ETests {
    static func temporaryPath(_ prefix: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
    }

    @Test func goStyleFlagsServe() throws {
        let dataDir = Self.temporaryPath("e2e-flags")
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let port = try EtcdProcess.freePort()
        let server = try EtcdProcess(arguments: [
            "-name", "x", "--pre-vote", "-data-dir", dataDir, "-listen-client-urls=http://127.0.0.1:\(port)",
            "--advertise-client-urls", "http://127.0.0.1:\(port)", "-listen-peer-urls=http://127.0.0.1:\(try EtcdProcess.freePort())",
        ], port: port)
        defer { server.terminate() }
        #expect(try server.etcdctl(["member", "list"]).out.contains("started, x"))
        #expect(try server.etcdctl(["put", "k", "v"]).status == 0)
    }

    /// Settings that would otherwise start a plaintext server without a word
    /// (arguments and variables that would let it serve, were it to start).
    func refusal(_ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, err: String) {
        let dataDir = Self.temporaryPath("e2e-refused")
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let result = try EtcdProcess.run(EtcdProcess.binary, arguments, environment: ["ETCD_DATA_DIR": dataDir,
            "ETCD_LISTEN_CLIENT_URLS": "http://127.0.0.1:\(try EtcdProcess.freePort())",
            "ETCD_LISTEN_PEER_URLS": "http://127.0.0.1:\(try EtcdProcess.freePort())"].merging(environment) { $1 }, input: nil)
        #expect(!FileManager.default.fileExists(atPath: dataDir), "refused before touching the data dir")
        return (result.status, result.err)
    }

    /// The config file's TLS block is read: a certificate file that is not
    /// there stops the start, naming it.
    @Test func configFileWithMissingCertificateRefusesToStart() throws {
        let file = Self.temporaryPath("etcd") + ".yaml"
        defer { try? FileManager.default.removeItem(atPath: file) }
        try """
        name: tls
        data-dir: \(Self.temporaryPath("e2e-refused"))
        listen-client-urls: https://127.0.0.1:\(try EtcdProcess.freePort())
        listen-peer-urls: http://127.0.0.1:\(try EtcdProcess.freePort())
        client-transport-security:
          cert-file: /etc/etcd/no-such-server.crt
          key-file: /etc/etcd/no-such-server.key
          client-cert-auth: false
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let result = try refusal(["--config-file", file])
        #expect(result.status == 1)
        #expect(result.err.contains("open /etc/etcd/no-such-server.crt: no such file or directory"), "\(result.err)")
    }

    @Test func unsupportedSettingInEnvironmentRefusesToStart() throws {
        let result = try refusal([], environment: ["ETCD_ENABLE_PPROF": "true"])
        #expect(result.status == 1)
        #expect(result.err.contains("ETCD_ENABLE_PPROF=true: --enable-pprof is not supported yet"), "\(result.err)")
    }

    @Test func featureGatesWeDoNotImplementRefuseToStartByName() throws {
        let result = try refusal(["--feature-gates=InitialCorruptCheck=true,CompactHashCheck=true,StopGRPCServiceOnDefrag=true"])
        #expect(result.status == 1)
        #expect(result.err.contains("--feature-gates StopGRPCServiceOnDefrag=true is not supported yet"), "\(result.err)")
        let unknown = try refusal([], environment: ["ETCD_FEATURE_GATES": "NoSuchGate=true"])
        #expect(unknown.status == 1)
        #expect(unknown.err.contains("unrecognized feature gate: NoSuchGate"), "\(unknown.err)")
    }

    /// etcd's message for an `https://` URL without a certificate.
    @Test func httpsURLWithoutCertificateRefusesToStart() throws {
        let url = "https://127.0.0.1:\(try EtcdProcess.freePort())"
        let result = try refusal(["--listen-client-urls", url])
        #expect(result.status == 1)
        #expect(result.err.contains("TLS key/cert (--cert-file, --key-file) must be provided for client url \(url) with HTTPS scheme"), "\(result.err)")
        let peer = try refusal(["--listen-peer-urls", "https://127.0.0.1:1", "--initial-advertise-peer-urls", "https://127.0.0.1:1",
                                "--initial-cluster", "default=https://127.0.0.1:1"])
        #expect(peer.err.contains("TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url https://127.0.0.1:1"), "\(peer.err)")
    }

    /// Same command-line mistakes, same first line and exit code as etcd 3.4.
    @Test(arguments: [["-bogus"], ["--name"], ["--pre-vote=maybe"], ["---name=a"], ["-name=a", "--bogus=1"]])
    func commandLineErrorsMatchEtcd(arguments: [String]) throws {
        guard FileManager.default.isExecutableFile(atPath: DifferentialTests.realEtcd) else {
            throw EtcdProcess.ProcessError.missing("\(DifferentialTests.realEtcd) (Debian package etcd-server)")
        }
        let theirs = try EtcdProcess.run(DifferentialTests.realEtcd, arguments, environment: [:], input: nil)
        let ours = try EtcdProcess.run(EtcdProcess.binary, arguments, environment: [:], input: nil)
        #expect(ours.status == theirs.status)
        #expect(ours.err.split(separator: "\n").first == theirs.err.split(separator: "\n").first)
        #expect(ours.err.contains("Usage:") && ours.err.contains("etcd [flags]"))
    }

    /// Go leaves `false` after a bare boolean as an argument; etcd rejects it.
    @Test func boolFlagDoesNotTakeTheNextArgument() throws {
        let result = try refusal(["--pre-vote", "false"])
        #expect(result.status == 1)
        #expect(result.err.contains("'false' is not a valid flag"), "\(result.err)")
    }
}
