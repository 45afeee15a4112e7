import EtcdProto
@testable import EtcdServer
import Foundation
import Testing

/// etcd's corruption checks on three in-process members, a member's data
/// made to diverge by the `corruptPut` failpoint.
@Suite(.serialized, .timeLimit(.minutes(2))) struct CorruptionCheckTests {
    /// Waits until every running member has applied a CORRUPT alarm;
    /// false at `deadline`.
    func corruptAlarmRaised(_ cluster: TestCluster, by deadline: ContinuousClock.Instant) async throws -> Bool {
        while !cluster.running.allSatisfy({ $0.activeAlarms().contains { $0.alarm == .corrupt } }) {
            if ContinuousClock.now >= deadline { return false }
            try await Task.sleep(for: .milliseconds(10))
        }
        return true
    }

    @Test func theLeaderRaisesCorruptWithinACheckIntervalAndWritesAreRefused() async throws {
        let intervalMilliseconds = 500
        try await TestCluster.with(size: 3, configure: { config in
            config.corruptCheckTimeMilliseconds = intervalMilliseconds
            // m2 stores the third put's value damaged.
            if config.name == "m2" { config.failpoints = Failpoints(specification: "corruptPut=on@3") }
        }) { cluster in
            _ = try await cluster.waitForLeader()
            for i in 1...3 {
                _ = try await cluster.retrying { try await cluster.members[0]!.put(putRequest("k\(i)", "v\(i)")) }
            }
            let hashes = try await cluster.converged()
            #expect(Set(hashes).count == 2, "m2's data diverged: \(hashes)")
            // The leader checks every interval; the alarm then goes through
            // raft. Allow one interval plus the check's own work on a busy
            // machine (the full suite under CI load missed 3 s twice: a check
            // whose peers had not yet applied the same revision is skipped).
            let raised = try await corruptAlarmRaised(cluster, by: .now + .milliseconds(intervalMilliseconds) + .seconds(10))
            try #require(raised, "no CORRUPT alarm within one check interval")
            for member in cluster.running {
                let alarms = member.activeAlarms()
                // etcd raises it for member 0: which member is corrupt is unknown.
                #expect(alarms.map(\.memberID) == [0] && alarms.map(\.alarm) == [.corrupt])
            }
            // Every member refuses writes with etcd's error; reads go on.
            for member in cluster.running {
                await #expect(throws: EtcdError.corrupt) { try await member.put(putRequest("after", "x")) }
                var delete = Etcdserverpb_DeleteRangeRequest()
                delete.key = Data("k1".utf8)
                await #expect(throws: EtcdError.corrupt) { try await member.deleteRange(delete) }
            }
            #expect(EtcdError.corrupt.code == .dataLoss && EtcdError.corrupt.message == "etcdserver: corrupt cluster")
            let read = try await cluster.members[0]!.range(rangeRequest("k1"))
            #expect(read.kvs.first?.value == Data("v1".utf8))
        }
    }

    @Test func theInitialCheckRefusesToStartADivergedMember() async throws {
        try await TestCluster.with(size: 3, configure: { config in
            config.initialCorruptCheck = true
            if config.name == "m2" { config.failpoints = Failpoints(specification: "corruptPut=on@2") }
        }) { cluster in
            _ = try await cluster.waitForLeader()
            for i in 1...3 {
                _ = try await cluster.retrying { try await cluster.members[0]!.put(putRequest("k\(i)", "v\(i)")) }
            }
            let hashes = try await cluster.converged()
            #expect(Set(hashes).count == 2, "m2's data diverged: \(hashes)")
            let diverged = cluster.members[2]!.memberID
            await cluster.stopMember(2)
            // A healthy member passes the check (the stopped one cannot answer).
            await cluster.stopMember(1)
            try await cluster.startMember(1)
            // The diverged one is refused with etcd's error.
            do {
                try await cluster.startMember(2)
                Issue.record("the diverged member started")
            } catch {
                #expect("\(error)" == "\(String(diverged, radix: 16)) found data inconsistency with peers")
            }
            #expect(cluster.members[2] == nil)
            // The rest still serve.
            _ = try await cluster.retrying { try await cluster.members[1]!.put(putRequest("k4", "v4")) }
        }
    }

    /// etcd 3.6's CompactHashCheck with the periodic check off: each member
    /// records its hash as it compacts, the leader compares them and raises
    /// CORRUPT for the member outside the majority.
    @Test func theCompactionHashCheckRaisesCorruptForTheDivergedMember() async throws {
        let intervalMilliseconds = 500
        try await TestCluster.with(size: 3, configure: { config in
            config.corruptCheckTimeMilliseconds = 0
            config.compactHashCheck = true
            config.compactHashCheckTimeMilliseconds = intervalMilliseconds
            if config.name == "m2" { config.failpoints = Failpoints(specification: "corruptPut=on@3") }
        }) { cluster in
            _ = try await cluster.waitForLeader()
            for i in 1...6 {
                _ = try await cluster.retrying { try await cluster.members[0]!.put(putRequest("k\(i % 4)", "v\(i)")) }
            }
            let hashes = try await cluster.converged()
            #expect(Set(hashes).count == 2, "m2's data diverged: \(hashes)")
            // Nothing to compare before a compaction.
            #expect(cluster.running.allSatisfy { $0.store.compactionHashes.isEmpty })
            var compaction = Etcdserverpb_CompactionRequest()
            compaction.revision = cluster.members[0]!.header().revision
            _ = try await cluster.retrying { try await cluster.members[0]!.compact(compaction) }
            let raised = try await corruptAlarmRaised(cluster, by: .now + .milliseconds(intervalMilliseconds) + .seconds(5))
            try #require(raised, "no CORRUPT alarm within a compaction hash check interval")
            let diverged = cluster.members[2]!.memberID
            for member in cluster.running {
                // 3.6 names the member outside the majority.
                #expect(member.activeAlarms().map(\.memberID) == [diverged])
                #expect(member.activeAlarms().map(\.alarm) == [.corrupt])
                await #expect(throws: EtcdError.corrupt) { try await member.put(putRequest("after", "x")) }
            }
        }
    }

    /// Members with the same history agree on every compaction's hash: the
    /// leader's pass finds them consistent and raises nothing; a second
    /// pass has nothing new to check.
    @Test func theCompactionHashCheckPassesOnAHealthyCluster() async throws {
        try await TestCluster.with(size: 3, configure: { config in
            config.corruptCheckTimeMilliseconds = 0
            config.compactHashCheck = true
            config.compactHashCheckTimeMilliseconds = 3_600_000
        }) { cluster in
            let leader = try await cluster.waitForLeader()
            var compaction = Etcdserverpb_CompactionRequest()
            for round in 1...3 {
                for i in 1...5 {
                    _ = try await cluster.retrying { try await cluster.members[0]!.put(putRequest("k\(i % 3)", "r\(round)-\(i)")) }
                }
                compaction.revision = cluster.members[0]!.header().revision - 2
                _ = try await cluster.retrying { try await cluster.members[0]!.compact(compaction) }
            }
            _ = try await cluster.converged()
            let deadline = ContinuousClock.now + .seconds(10)
            while !cluster.running.allSatisfy({ $0.store.compactionHashes.count == 3 }), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            let recorded = cluster.running.map { $0.store.compactionHashes }
            #expect(recorded.count == 3 && Set(recorded.map { $0.map(\.hash) }).count == 1, "\(recorded)")
            let member = cluster.members[leader]!
            #expect(await member.checkCompactionHashes() == [.consistent(peersChecked: 2)])
            #expect(await member.checkCompactionHashes() == [])
            #expect(cluster.running.allSatisfy { $0.activeAlarms().isEmpty })
        }
    }
}
