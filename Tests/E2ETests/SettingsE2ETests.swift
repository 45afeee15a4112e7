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

    @Test func configFileWithClientTLSRefusesToStart() throws {
        let file = Self.temporaryPath("etcd") + ".yaml"
        defer { try? FileManager.default.removeItem(atPath: file) }
        try """
        name: tls
        data-dir: \(Self.temporaryPath("e2e-refused"))
        listen-client-urls: http://127.0.0.1:\(try EtcdProcess.freePort())
        listen-peer-urls: http://127.0.0.1:\(try EtcdProcess.freePort())
        client-transport-security:
          cert-file: /etc/etcd/server.crt
          key-file: /etc/etcd/server.key
          client-cert-auth: false
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let result = try refusal(["--config-file", file])
        #expect(result.status == 1)
        #expect(result.err.contains("client-transport-security.cert-file is not supported yet"), "\(result.err)")
        #expect(result.err.contains("client-transport-security.key-file is not supported yet"), "\(result.err)")
    }

    @Test func clientCertAuthInEnvironmentRefusesToStart() throws {
        let result = try refusal([], environment: ["ETCD_CLIENT_CERT_AUTH": "true"])
        #expect(result.status == 1)
        #expect(result.err.contains("ETCD_CLIENT_CERT_AUTH=true: --client-cert-auth is not supported yet"), "\(result.err)")
    }

    @Test func featureGatesWeDoNotImplementRefuseToStartByName() throws {
        let result = try refusal(["--feature-gates=InitialCorruptCheck=true,CompactHashCheck=true,StopGRPCServiceOnDefrag=true"])
        #expect(result.status == 1)
        #expect(result.err.contains("--feature-gates StopGRPCServiceOnDefrag=true is not supported yet"), "\(result.err)")
        let unknown = try refusal([], environment: ["ETCD_FEATURE_GATES": "NoSuchGate=true"])
        #expect(unknown.status == 1)
        #expect(unknown.err.contains("unrecognized feature gate: NoSuchGate"), "\(unknown.err)")
    }

    @Test func httpsURLRefusesToStart() throws {
        let result = try refusal(["--listen-client-urls", "https://127.0.0.1:\(try EtcdProcess.freePort())"])
        #expect(result.status == 1)
        #expect(result.err.contains("TLS is not supported yet: --listen-client-urls https://"), "\(result.err)")
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
