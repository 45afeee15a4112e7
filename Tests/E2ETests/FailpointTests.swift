import Foundation
import Testing

/// Our `etcd` crashing at named points of its write path (`ETCD_FAILPOINTS`),
/// then restarted: no acknowledged write is lost and the revision never
/// goes back.
@Suite(.serialized) struct FailpointTests {
    @Test(arguments: ["afterWALSave=panic@30", "beforeBackendCommit=panic@60", "afterBackendCommit=panic@10"])
    func crashAtAPointLosesNoAcknowledgedWrite(failpoint: String) throws {
        let dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("fp-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let server = try EtcdProcess(dataDir: dataDir, environment: ["ETCD_FAILPOINTS": failpoint])
        var acknowledged: [Int] = []
        var lastRevision = 0
        for i in 0..<200 {
            let put = try server.etcdctl(["put", "k\(i)", "v\(i)", "-w", "json"])
            guard put.status == 0 else { break }
            acknowledged.append(i)
            lastRevision = Int(ClusterProcesses.field("revision", in: put.out) ?? "0") ?? 0
        }
        let exited = Date().addingTimeInterval(10)
        while server.process.isRunning && Date() < exited { Thread.sleep(forTimeInterval: 0.05) }
        #expect(!server.process.isRunning, "the failpoint \(failpoint) never fired")
        #expect(server.process.terminationStatus == 137)
        #expect(acknowledged.count > 3 && acknowledged.count < 200)

        let restarted = try EtcdProcess(dataDir: dataDir)
        defer { restarted.terminate() }
        let keys = try restarted.etcdctl(["get", "k", "--prefix", "--keys-only"]).out.split(separator: "\n").map(String.init)
        for i in acknowledged { #expect(keys.contains("k\(i)"), "k\(i) was acknowledged and is gone") }
        let after = try restarted.etcdctl(["put", "after", "restart", "-w", "json"])
        let revision = Int(ClusterProcesses.field("revision", in: after.out) ?? "0") ?? 0
        #expect(revision > lastRevision, "revision went from \(lastRevision) back to \(revision)")
    }

    /// etcd once lost its revision after a crash in the middle of a
    /// compaction: the compaction must resume and the revision stay.
    @Test func crashDuringCompactionKeepsTheRevisionAndTheCompaction() throws {
        let dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("fp-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let server = try EtcdProcess(dataDir: dataDir, environment: ["ETCD_FAILPOINTS": "midCompaction=panic"])
        for i in 0..<30 { #expect(try server.etcdctl(["put", "c\(i % 5)", "v\(i)"]).status == 0) }
        // Revisions 2...31; compact at 20 (the response comes at apply, the
        // removal of old revisions runs after it — and crashes there).
        _ = try server.etcdctl(["compact", "20"])
        let exited = Date().addingTimeInterval(10)
        while server.process.isRunning && Date() < exited { Thread.sleep(forTimeInterval: 0.05) }
        #expect(!server.process.isRunning && server.process.terminationStatus == 137)

        let restarted = try EtcdProcess(dataDir: dataDir)
        defer { restarted.terminate() }
        let old = try restarted.etcdctl(["get", "c0", "--rev=10"])
        #expect(old.err.contains("required revision has been compacted"), "\(old)")
        #expect(try restarted.etcdctl(["get", "c4", "--print-value-only"]).out == "v29\n")
        let after = try restarted.etcdctl(["put", "after", "crash", "-w", "json"])
        #expect(ClusterProcesses.field("revision", in: after.out) == "32", "\(after.out)")
    }
}
