import Foundation
import Testing

/// Python's etcd clients as their users run them: Debian's python3-etcd3 (a
/// gRPC client) and python3-etcd3gw (the JSON gateway client OpenStack
/// uses). Each script runs against a fresh member of ours and a fresh real
/// etcd 3.4, and must print the same lines (values, versions, watch events,
/// lock and lease behaviour, error codes and messages).
@Suite struct PythonClientTests {
    static let scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Python")
    /// No `__pycache__` beside the scripts in the source tree.
    static let environment = ["PYTHONDONTWRITEBYTECODE": "1"]

    /// What `script` prints against a fresh member of ours and a fresh real etcd.
    static func runBoth(_ script: String) throws -> (ours: String, real: String) {
        let path = scripts.appendingPathComponent(script).path
        func run(port: Int) throws -> String {
            let result = try EtcdProcess.run("/usr/bin/python3", [path, String(port)], environment: Self.environment, input: nil)
            #expect(result.status == 0, "\(script) on port \(port): \(result.err)")
            return result.out
        }
        let ours = try EtcdProcess()
        defer { ours.terminate() }
        let real = try RealEtcdProcess()
        defer { real.terminate() }
        return (try run(port: ours.port), try run(port: real.port))
    }

    @Test func pythonEtcd3SeesWhatItSeesOnEtcd() throws {
        let (ours, real) = try Self.runBoth("python_etcd3.py")
        #expect(ours == real)
        // The script got through: the watch saw the three events in order.
        #expect(ours.contains("watch [('PutEvent', b'/w', b'w1'), ('PutEvent', b'/w', b'w2'), ('DeleteEvent', b'/w', b'')]"), "\(ours)")
        #expect(ours.contains("unknown lease StatusCode.NOT_FOUND etcdserver: requested lease not found"), "\(ours)")
    }

    /// Over mutual TLS with auth on: the certificate's Common Name as the
    /// user, passwords, permissions, and the errors for each.
    @Test func pythonEtcd3OverMutualTLSWithAuth() throws {
        let certs = try TLSE2ETests.certificates()
        try certs.make("bob", commonName: "bob", kind: "client")
        let flags = TLSE2ETests.mutual + ["--trusted-ca-file", certs.cert("ca"), "--bcrypt-cost", "4"]
        let ours = try TLSE2ETests.server(certs, extra: flags)
        defer { ours.terminate() }
        let real = try RealEtcdProcess(extraArguments: flags + ["--cert-file", certs.cert("server"), "--key-file", certs.key("server")],
                                       clientScheme: "https", clientFlags: TLSE2ETests.clientFlags(certs, "client"))
        defer { real.terminate() }
        let setup = [["user", "add", "root:pw"], ["user", "add", "bob:bpw"], ["user", "add", "carol:cpw"], ["role", "add", "r"],
                     ["role", "grant-permission", "r", "readwrite", "/bob/", "--prefix"], ["user", "grant-role", "bob", "r"],
                     ["auth", "enable"]]
        var outputs: [String] = []
        for port in [ours.port, real.port] {
            for arguments in setup {
                let done = try EtcdProcess.run("/usr/bin/etcdctl", ["--endpoints=https://127.0.0.1:\(port)"]
                                               + TLSE2ETests.clientFlags(certs, "client") + arguments,
                                               environment: ["ETCDCTL_API": "3"], input: nil)
                #expect(done.status == 0, "\(arguments): \(done)")
            }
            let script = Self.scripts.appendingPathComponent("python_etcd3_tls_auth.py").path
            let result = try EtcdProcess.run("/usr/bin/python3", [script, String(port), certs.cert("ca"), certs.cert("bob"), certs.key("bob")],
                                             environment: Self.environment, input: nil)
            #expect(result.status == 0, "\(result.err)")
            outputs.append(result.out)
        }
        #expect(outputs[0] == outputs[1])
        #expect(outputs[0].contains("cn get own b'v'"), "\(outputs[0])")
        #expect(outputs[0].contains("cn put other StatusCode.PERMISSION_DENIED etcdserver: permission denied"), "\(outputs[0])")
        #expect(outputs[0].contains("root members ['default']"), "\(outputs[0])")
    }

    @Test func etcd3gwSeesWhatItSeesOnEtcd() throws {
        let (ours, real) = try Self.runBoth("etcd3gw_client.py")
        #expect(ours == real)
        #expect(ours.contains("watch [('PUT', b'/w', b'w1'), ('PUT', b'/w', b'w2'), ('DELETE', b'/w', b'')]"), "\(ours)")
        #expect(ours.contains("lock True True False"), "\(ours)")
    }
}
