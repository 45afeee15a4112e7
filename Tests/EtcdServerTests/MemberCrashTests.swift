@testable import EtcdServer
import EtcdProto
import Foundation
import Testing

/// A crash at each point of the write path loses no acknowledged write,
/// applies nothing twice and never moves the revision backwards.
@Suite struct MemberCrashTests {
    static let acknowledged = 20

    @Test(arguments: [Failpoint.afterWALAppend, .afterApplyBeforeBackendCommit])
    func restartAfterCrash(at point: Failpoint) async throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = ServerConfig(name: "m1", dataDir: dir)
        // Index 1 is the bootstrap configuration, 2 the leader's empty entry,
        // then one entry per put: the crash hits the entry after the acknowledged ones.
        config.failpoints = Failpoints(specification: "\(point.rawValue)=crash@index=\(2 + Self.acknowledged + 1)")
        do {
            let member = try Member(config: config)
            for i in 0..<Self.acknowledged {
                #expect(try await member.put(MemberTests.put("k\(i)", "v\(i)")).header.revision == Int64(i + 2))
            }
            switch point {
            case .afterWALAppend:
                // Durable but not applied: never acknowledged.
                await #expect(throws: EtcdError.stopped) { try await member.put(MemberTests.put("inflight", "x")) }
            default:
                // Applied (so acknowledged) but the backend batch dies with the process.
                #expect(try await member.put(MemberTests.put("inflight", "x")).header.revision == Int64(Self.acknowledged + 2))
                await #expect(throws: EtcdError.stopped) { try await member.put(MemberTests.put("after-crash", "z")) }
            }
            member.stop()
        }

        config.failpoints = Failpoints(specification: "")
        let member = try Member(config: config)
        defer { member.stop() }
        for i in 0..<Self.acknowledged {
            let kv = try await member.range(MemberTests.get("k\(i)")).kvs.first
            #expect(kv?.value == Data("v\(i)".utf8))
            #expect(kv?.modRevision == Int64(i + 2))
        }
        // The in-flight entry was already in the WAL at both points, so raft
        // commits it after the restart and it is applied exactly once.
        let inflight = try await member.range(MemberTests.get("inflight")).kvs.first
        #expect(inflight?.modRevision == Int64(Self.acknowledged + 2))
        #expect(inflight?.version == 1)
        let next = try await member.put(MemberTests.put("next", "y"))
        #expect(next.header.revision == Int64(Self.acknowledged + 3))
    }
}
