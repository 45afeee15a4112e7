import EtcdProto
@testable import EtcdServer
import Foundation
import Testing

/// The built `etcdutl hashkv` against a member's online HashKV.
@Suite(.serialized, .timeLimit(.minutes(2))) struct EtcdutlHashKVTests {
    /// `etcdutl hashkv` on a stopped member's files prints the hash HashKV
    /// gave online at the same revision (after deletes and a compaction).
    @Test func etcdutlHashKVOfAStoppedMemberEqualsItsOnlineHash() async throws {
        try await TestCluster.with(size: 1) { cluster in
            _ = try await cluster.waitForLeader()
            let member = cluster.members[0]!
            for i in 0..<20 {
                _ = try await cluster.retrying { try await member.put(putRequest("k\(i % 6)", "v\(i)")) }
            }
            var delete = Etcdserverpb_DeleteRangeRequest()
            delete.key = Data("k1".utf8)
            _ = try await member.deleteRange(delete)
            var compaction = Etcdserverpb_CompactionRequest()
            compaction.revision = 12
            compaction.physical = true
            _ = try await member.compact(compaction)
            for i in 0..<3 { _ = try await member.put(putRequest("k\(i)", "after\(i)")) }
            let online = try member.hashKV(revision: 0)
            let earlier = try member.hashKV(revision: online.hashRevision - 2)
            await cluster.stopMember(0)

            let config = cluster.configs[0]
            #expect(try etcdutl(["hashkv", config.backendPath])
                == "\(online.hash), \(online.hashRevision), \(online.compactRevision)\n")
            #expect(try etcdutl(["hashkv", "--rev", "\(online.hashRevision - 2)", "-w", "json", config.dataDir])
                == #"{"hash":\#(earlier.hash),"hashRevision":\#(earlier.hashRevision),"compactRevision":\#(earlier.compactRevision)}"# + "\n")
            #expect(online.compactRevision == 12)
        }
    }

    /// Runs the built `etcdutl`; its standard output (it must exit 0).
    func etcdutl(_ arguments: [String]) throws -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let process = Process()
        process.executableURL = root.appendingPathComponent(".build/debug/etcdutl")
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw TestFailure("etcdutl \(arguments) exited \(process.terminationStatus)") }
        return String(decoding: data, as: UTF8.self)
    }
}
