import EtcdProto
@testable import EtcdServer
import Foundation
import Testing

/// Auto-compaction in a three-member cluster: only the leader compacts,
/// and when leadership moves the new leader takes over while the old one
/// pauses (etcd pauses the compactor of a member that stops leading).
@Suite struct ClusterAutoCompactionTests {
    @Test func onlyTheLeaderCompacts() async throws {
        try await TestCluster.with(size: 3, configure: { config in
            config.autoCompaction = .revision(revisions: 2)
            config.autoCompactionRevisionCheckIntervalMilliseconds = 50
        }) { cluster in
            let first = try await cluster.waitForLeader()
            let leader = try #require(cluster.members[first])
            try await Self.write(through: leader, cluster, until: { leader.autoCompactions >= 2 })
            for member in cluster.running where member !== leader { #expect(member.autoCompactions == 0) }
            // Everyone applied the leader's compactions.
            let compacted = try leader.hashKV(revision: 0).compactRevision
            #expect(compacted > 0)

            let target = (first + 1) % 3
            let next = try #require(cluster.members[target])
            try await leader.moveLeader(to: next.memberID)
            #expect(try await cluster.waitForLeader() == target)
            // A compaction the old leader proposed just before the move may
            // still be applied; two of the new leader's later ones are after it.
            try await Self.write(through: next, cluster, until: { next.autoCompactions >= 2 })
            let paused = leader.autoCompactions
            try await Self.write(through: next, cluster, until: { next.autoCompactions >= 4 })
            #expect(leader.autoCompactions == paused)
            #expect(try #require(cluster.members[(first + 2) % 3]).autoCompactions == 0)
            #expect(try next.hashKV(revision: 0).compactRevision > compacted)
        }
    }

    /// Puts through `member` until `done` holds (at most 2,000 puts or 30 s).
    static func write(through member: Member, _ cluster: TestCluster, until done: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        var puts = 0
        while !done() {
            guard puts < 2000, ContinuousClock.now < deadline else {
                throw TestFailure("no auto-compaction after \(puts) puts")
            }
            _ = try await cluster.retrying { try await member.put(putRequest("k", "v\(puts)")) }
            puts += 1
        }
    }
}
