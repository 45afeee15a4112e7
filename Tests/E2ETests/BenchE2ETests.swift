import Foundation
import Testing

/// `etcd-bench`'s load commands against ours and against the real etcd
/// (Debian's etcd-server 3.4): every request must succeed, and the writes
/// must be in the store afterwards (the revision counts them).
@Suite(.serialized) struct BenchE2ETests {
    static var bench: String {
        EtcdProcess.repositoryRoot.appendingPathComponent(".build/debug/etcd-bench").path
    }

    @Test func loadCommandsRunAgainstOursAndTheRealEtcd() throws {
        let ours = try EtcdProcess()
        defer { ours.terminate() }
        let theirs = try RealEtcdProcess()
        defer { theirs.terminate() }

        for (name, port) in [("ours", ours.port), ("etcd", theirs.port)] {
            let endpoint = "127.0.0.1:\(port)"
            let runs: [(arguments: [String], summary: String)] = [
                (["put", "--clients", "8", "--conns", "2", "--total", "300", "--key-space-size", "40"], "put: 300 requests, 0 errors"),
                (["put", "--clients", "1", "--conns", "1", "--total", "20", "--val-size", "3000"], "put: 20 requests, 0 errors"),
                (["range", "--clients", "8", "--conns", "2", "--total", "200", "--consistency", "l"], "range (linearizable): 200 requests, 0 errors"),
                (["range", "--clients", "4", "--conns", "3", "--total", "200", "--consistency", "s"], "range (serializable): 200 requests, 0 errors"),
                (["txn-put", "--clients", "8", "--conns", "2", "--total", "100", "--txn-ops", "3"], "txn-put: 100 requests, 0 errors"),
            ]
            for run in runs {
                let result = try EtcdProcess.run(Self.bench, run.arguments + ["--endpoints", endpoint], environment: [:], input: nil)
                #expect(result.status == 0, "\(name) \(run.arguments): \(result.err)")
                #expect(result.out.contains(run.summary), "\(name) \(run.arguments):\n\(result.out)")
                #expect(result.out.contains("requests/s:") && result.out.contains("p99.9"), "\(name): \(result.out)")
            }
            // 320 puts and 100 txns, each one revision, on a fresh store.
            let status = try EtcdProcess.run("/usr/bin/etcdctl", ["--endpoints=\(endpoint)", "endpoint", "status", "-w", "json"],
                                             environment: ["ETCDCTL_API": "3"], input: nil)
            #expect(status.status == 0, "\(name): \(status.err)")
            #expect(status.out.contains("\"revision\":421"), "\(name): \(status.out)")
        }
    }

    /// A server that is not there: every request fails, and the command says so.
    @Test func aMissingServerIsAnError() throws {
        let port = try EtcdProcess.freePort()
        let result = try EtcdProcess.run(Self.bench, ["put", "--endpoints", "127.0.0.1:\(port)", "--total", "10"], environment: [:], input: nil)
        #expect(result.status != 0)
        #expect(result.err.lowercased().contains("connect") || result.err.lowercased().contains("refused"), "\(result.err)")
    }
}
