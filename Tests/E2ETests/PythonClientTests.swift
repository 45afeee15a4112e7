import Foundation
import Testing

/// Python's etcd clients as their users run them: Debian's python3-etcd3 (a
/// gRPC client) and python3-etcd3gw (the JSON gateway client OpenStack
/// uses). Each script runs against a fresh member of ours and a fresh real
/// etcd 3.4, and must print the same lines (values, versions, watch events,
/// lock and lease behaviour, error codes and messages).
@Suite struct PythonClientTests {
    static let scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Python")

    /// What `script` prints against a fresh member of ours and a fresh real etcd.
    static func runBoth(_ script: String) throws -> (ours: String, real: String) {
        let path = scripts.appendingPathComponent(script).path
        func run(port: Int) throws -> String {
            let result = try EtcdProcess.run("/usr/bin/python3", [path, String(port)], environment: [:], input: nil)
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

    @Test func etcd3gwSeesWhatItSeesOnEtcd() throws {
        let (ours, real) = try Self.runBoth("etcd3gw_client.py")
        #expect(ours == real)
        #expect(ours.contains("watch [('PUT', b'/w', b'w1'), ('PUT', b'/w', b'w2'), ('DELETE', b'/w', b'')]"), "\(ours)")
        #expect(ours.contains("lock True True False"), "\(ours)")
    }
}
