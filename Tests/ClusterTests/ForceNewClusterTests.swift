import EtcdProto
@testable import EtcdServer
import Foundation
import Testing

/// Disaster recovery: two of three members are lost for good; the survivor
/// restarts with --force-new-cluster as a one-member cluster with all the
/// acknowledged data, and members can be added back.
@Suite(.serialized, .timeLimit(.minutes(2))) struct ForceNewClusterTests {
    @Test func theSurvivorOfALostQuorumServesAllAcknowledgedData() async throws {
        try await TestCluster.with(size: 3) { cluster in
            let leader = try await cluster.waitForLeader()
            let writer = try #require(cluster.members[leader])
            for i in 0..<30 { _ = try await cluster.retrying { try await writer.put(putRequest("d\(i)", "v\(i)")) } }
            // Every member has applied them (etcd's force-new-cluster, like
            // ours, keeps what the survivor knew committed and drops the rest).
            _ = try await cluster.converged()
            // The survivor is a follower; the leader and the other follower die.
            let survivor = (0..<3).first { $0 != leader }!
            for i in 0..<3 where i != survivor { await cluster.stopMember(i) }
            // Without the flag it cannot serve writes (no quorum).
            await cluster.stopMember(survivor)
            try await cluster.startMember(survivor)
            let stuck = try #require(cluster.members[survivor])
            await #expect(throws: EtcdError.self) { _ = try await stuck.put(putRequest("lost", "v")) }
            await cluster.stopMember(survivor)

            cluster.reconfigure(survivor) { $0.forceNewCluster = true }
            try await cluster.startMember(survivor)
            let alone = try #require(cluster.members[survivor])
            #expect(try await cluster.waitForLeader() == survivor)
            let members = try await cluster.retrying { () throws -> [MemberRecord] in
                let list = alone.memberList()
                guard list.count == 1 else { throw TestFailure("members: \(list)") }
                return list
            }
            #expect(members.map(\.id) == [alone.memberID])
            let read = try await alone.range(rangeRequest("d", prefix: true))
            #expect(read.kvs.count == 30)
            #expect(try await alone.range(rangeRequest("d29")).kvs.first?.value == Data("v29".utf8))
            _ = try await alone.put(putRequest("after", "recovery"))

            // A restart without the flag stays a one-member cluster.
            await cluster.stopMember(survivor)
            cluster.reconfigure(survivor) { $0.forceNewCluster = false }
            try await cluster.startMember(survivor)
            let restarted = try #require(cluster.members[survivor])
            #expect(try await cluster.waitForLeader() == survivor)
            #expect(restarted.memberList().count == 1)

            // A new member joins the recovered cluster.
            let used = Set(cluster.configs.flatMap(\.initialAdvertisePeerURLs))
            var port = try freePort()
            while used.contains("http://127.0.0.1:\(port)") { port = try freePort() }
            let added = try await cluster.retrying {
                try await restarted.memberAdd(peerURLs: ["http://127.0.0.1:\(port)"], isLearner: false)
            }
            let joiner = cluster.addConfig(name: "m3", peerPort: port)
            let survivorConfig = cluster.configs[survivor]
            cluster.reconfigure(joiner) {
                $0.initialCluster = [(survivorConfig.name, survivorConfig.initialAdvertisePeerURLs), ("m3", ["http://127.0.0.1:\(port)"])]
            }
            try await cluster.startMember(joiner)
            let newcomer = try #require(cluster.members[joiner])
            #expect(newcomer.memberID == added.id)
            let hashes = try await cluster.converged(timeout: .seconds(30))
            #expect(hashes.count == 2 && Set(hashes).count == 1)
            #expect(try await cluster.retrying { try await newcomer.range(rangeRequest("after")) }.kvs.count == 1)
        }
    }
}
