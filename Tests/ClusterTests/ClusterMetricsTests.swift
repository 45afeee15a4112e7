import EtcdProto
@testable import EtcdServer
import Foundation
import Testing

/// The metrics that only a cluster moves: leadership across members, raft
/// bytes to and from each peer, the leader's round trips to its followers.
@Suite(.serialized, .timeLimit(.minutes(2))) struct ClusterMetricsTests {
    @Test func leadershipPeerBytesAndRoundTrips() async throws {
        try await TestCluster.with(size: 3) { cluster in
            let first = try await cluster.waitForLeader()
            for i in 0..<10 { _ = try await cluster.retrying { try await cluster.running[first].put(putRequest("k\(i)", "v")) } }
            _ = try await cluster.converged()
            // On a loaded machine (20 ms heartbeats) leadership may move
            // meanwhile: sample while one leader holds before and after.
            var leader = try await cluster.waitForLeader()
            var samples = cluster.running.map { samplesOf($0.metrics.exposition()) }
            for _ in 0..<10 {
                let after = try await cluster.waitForLeader()
                if after == leader { break }
                leader = after
                samples = cluster.running.map { samplesOf($0.metrics.exposition()) }
            }
            let leaderID = cluster.running[leader].memberID
            #expect(samples.map { $0["etcd_server_is_leader"] } == cluster.running.map { $0.memberID == leaderID ? 1.0 : 0.0 } as [Double?])
            #expect(samples.allSatisfy { $0["etcd_server_has_leader"] == 1 })
            #expect(samples.allSatisfy { ($0["etcd_server_leader_changes_seen_total"] ?? 0) >= 1 })
            // Raft traffic runs between the leader and each follower.
            for (i, member) in cluster.running.enumerated() {
                for peer in cluster.running where peer !== member && (i == leader || peer.memberID == leaderID) {
                    let hex = String(peer.memberID, radix: 16)
                    #expect(samples[i]["etcd_network_peer_sent_bytes_total{To=\"\(hex)\"}"] ?? 0 > 0, "member \(i) to \(hex)")
                    #expect(samples[i]["etcd_network_peer_received_bytes_total{From=\"\(hex)\"}"] ?? 0 > 0, "member \(i) from \(hex)")
                }
            }
            // The leader timed heartbeat round trips to each follower (at a
            // 20 ms heartbeat, many in the time the puts took).
            for peer in cluster.running where peer.memberID != leaderID {
                let hex = String(peer.memberID, radix: 16)
                #expect(samples[leader]["etcd_network_peer_round_trip_time_seconds_count{To=\"\(hex)\"}"] ?? 0 > 0)
            }
            // Every member applied the same entries: the same applied index.
            #expect(Set(samples.map { $0["etcd_server_proposals_applied_total"] }).count == 1)
        }
    }

    /// Samples by series (`name{labels}` as printed).
    func samplesOf(_ bytes: [UInt8]) -> [String: Double] {
        var samples: [String: Double] = [:]
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " ") else { continue }
            samples[String(line[..<space])] = Double(line[line.index(after: space)...])
        }
        return samples
    }
}
