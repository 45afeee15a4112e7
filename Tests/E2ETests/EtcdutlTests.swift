import Foundation
import Testing

/// `etcdutl` on a stopped member's data dir.
@Suite(.serialized) struct EtcdutlTests {
    static var etcdutl: String {
        EtcdProcess.repositoryRoot.appendingPathComponent(".build/debug/etcdutl").path
    }

    static func fileSize(_ path: String) throws -> Int {
        try (FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue ?? 0
    }

    @Test func defragShrinksAStoppedMembersBackendAndKeepsItsData() throws {
        let dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("e2e-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        var server = try EtcdProcess(dataDir: dataDir)
        let value = String(repeating: "v", count: 100_000)
        for i in 0..<40 { #expect(try server.etcdctl(["put", "big\(i)"], input: value).status == 0) }
        #expect(try server.etcdctl(["put", "keep", "kept"]).status == 0)
        #expect(try server.etcdctl(["del", "big", "--prefix"]).out == "40\n")
        let revision = try #require(try server.etcdctl(["get", "keep", "-w", "json"]).out.firstMatch(of: /"revision":(\d+)/))
        #expect(try server.etcdctl(["compact", String(revision.1), "--physical"]).status == 0)
        server.terminate()

        let database = dataDir + "/member/snap/db"
        let before = try Self.fileSize(database)
        let defrag = try EtcdProcess.run(Self.etcdutl, ["defrag", "--data-dir", dataDir], environment: [:], input: nil)
        #expect(defrag.status == 0, "\(defrag.err)")
        #expect(defrag.out.isEmpty)
        #expect(try Self.fileSize(database) < before / 4, "\(before) bytes before")

        server = try EtcdProcess(dataDir: dataDir)
        defer { server.terminate() }
        #expect(try server.etcdctl(["get", "keep", "--print-value-only"]).out == "kept\n")
        #expect(try server.etcdctl(["get", "big", "--prefix", "--keys-only"]).out.isEmpty)
    }

    @Test func defragOfAMissingDataDirFailsAsEtcdutlDoes() throws {
        let missing = "/nonexistent-\(UUID().uuidString)"
        let defrag = try EtcdProcess.run(Self.etcdutl, ["defrag", "--data-dir", missing], environment: [:], input: nil)
        #expect(defrag.status == 1)
        #expect(defrag.err == "Error: Failed to defragment etcd data[\(missing)] (cannot open database at \(missing)/member/snap/db)\n")
    }
}
