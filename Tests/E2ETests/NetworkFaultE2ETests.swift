import Foundation
import Testing

/// Network faults between our `etcd` processes: every member's peer traffic
/// goes through a `PeerProxy`, which cuts links (both ways or one way) and
/// delays them. Part of the serialized cluster suite.
extension ClusterE2ETests {
    /// The leader cut off from both followers keeps running but must not
    /// serve a stale linearizable read; the majority elects a new leader and
    /// goes on; after the heal the old leader follows and has the new data.
    @Test func aPartitionedLeaderServesNoStaleReadsAndRejoins() throws {
        let cluster = try ClusterProcesses(size: 3, proxied: true)
        defer { cluster.shutDown() }
        let ids = try cluster.memberIDs()
        let leader = try #require(try cluster.index(ofMemberID: try cluster.waitForLeader()))
        #expect(try cluster.etcdctl(["put", "k", "old"], endpoint: cluster.endpoint(leader)).status == 0)

        cluster.isolate(leader, ids: ids)
        let majority = (leader + 1) % 3
        // The majority goes on under a new leader.
        var written = false
        let deadline = Date().addingTimeInterval(15)
        while !written && Date() < deadline {
            written = try cluster.etcdctl(["put", "k", "new"], endpoint: cluster.endpoint(majority)).status == 0
            if !written { Thread.sleep(forTimeInterval: 0.2) }
        }
        #expect(written, "the majority never took a write")
        // The cut-off member: no writes, and no linearizable read of the old value.
        let put = try cluster.etcdctl(["put", "k", "lost"], endpoint: cluster.endpoint(leader))
        #expect(put.status != 0, "\(put)")
        let read = try cluster.etcdctl(["get", "k", "--print-value-only"], endpoint: cluster.endpoint(leader))
        #expect(read.status != 0 && !read.out.contains("old"), "a stale linearizable read: \(read)")
        let status = try cluster.etcdctl(["endpoint", "status", "-w", "json"], endpoint: cluster.endpoint(leader))
        #expect(ClusterProcesses.field("leader", in: status.out) != String(ids[leader]), "still leads without a quorum: \(status.out)")

        cluster.healNetwork()
        let back = Date().addingTimeInterval(15)
        var value = ""
        while value != "new\n" && Date() < back {
            value = try cluster.etcdctl(["get", "k", "--print-value-only"], endpoint: cluster.endpoint(leader)).out
            if value != "new\n" { Thread.sleep(forTimeInterval: 0.2) }
        }
        #expect(value == "new\n")
        let hashes = try cluster.convergedHashes()
        #expect(hashes.count == 3 && Set(hashes).count == 1, "\(hashes)")
    }

    /// A follower that cannot hear the leader (but the other follower
    /// can, and it can send) does not depose it: with pre-vote and
    /// check-quorum the term stays, writes go on, and it catches up.
    @Test func aOneWayPartitionDoesNotDisruptTheLeader() throws {
        let cluster = try ClusterProcesses(size: 3, proxied: true)
        defer { cluster.shutDown() }
        let ids = try cluster.memberIDs()
        let leaderID = try cluster.waitForLeader()
        let leader = try #require(try cluster.index(ofMemberID: leaderID))
        let deaf = (leader + 1) % 3
        let termBefore = try term(cluster, leader)

        cluster.cut(from: leader, to: deaf, ids: ids)
        for n in 0..<20 {
            let put = try cluster.etcdctl(["put", "one-way-\(n)", "v"], endpoint: cluster.endpoint(leader))
            #expect(put.status == 0, "\(put)")
            Thread.sleep(forTimeInterval: 0.1)
        }
        // Long enough for several election timeouts (500 ms) to pass.
        Thread.sleep(forTimeInterval: 2)
        // The leader and the follower that hears it still agree on it (the
        // cut-off one knows no leader, as etcd's would not).
        for i in [leader, (leader + 2) % 3] {
            let status = try cluster.etcdctl(["endpoint", "status", "-w", "json"], endpoint: cluster.endpoint(i))
            #expect(ClusterProcesses.field("leader", in: status.out) == leaderID, "\(status.out)")
        }
        #expect(try term(cluster, leader) == termBefore, "the term moved: the cut-off follower disrupted the leader")

        cluster.healNetwork()
        let hashes = try cluster.convergedHashes()
        #expect(hashes.count == 3 && Set(hashes).count == 1, "\(hashes)")
        let keys = try cluster.etcdctl(["get", "one-way-", "--prefix", "--keys-only", "--consistency=s"], endpoint: cluster.endpoint(deaf)).out
        #expect(keys.split(separator: "\n").count == 20)
    }

    /// Slow links everywhere (50 ms each way on every peer connection) and
    /// a member with a slow disk (every WAL save sleeps 30 ms): the cluster
    /// keeps its leader, takes every write, and converges.
    @Test func slowLinksAndASlowDiskStillConverge() throws {
        let cluster = try ClusterProcesses(size: 3, proxied: true,
                                           environment: [2: ["ETCD_FAILPOINTS": "beforeWALSave=sleep(30)"]])
        defer { cluster.shutDown() }
        _ = try cluster.waitForLeader()
        for proxy in cluster.proxies { proxy.setDelay(0.05) }
        var failures = 0
        for n in 0..<30 {
            let put = try cluster.etcdctl(["put", "slow-\(n)", "v\(n)"], endpoint: cluster.endpoint(n % 3))
            if put.status != 0 { failures += 1 }
        }
        #expect(failures == 0)
        let keys = try cluster.etcdctl(["get", "slow-", "--prefix", "--keys-only"], endpoint: cluster.endpoint(2)).out
        #expect(keys.split(separator: "\n").count == 30)
        cluster.healNetwork()
        let hashes = try cluster.convergedHashes()
        #expect(hashes.count == 3 && Set(hashes).count == 1, "\(hashes)")
        #expect(cluster.log(2).contains("failpoints armed: beforeWALSave"), "the slow-disk failpoint was not armed")
    }

    private func term(_ cluster: ClusterProcesses, _ i: Int) throws -> String? {
        let status = try cluster.etcdctl(["endpoint", "status", "-w", "json"], endpoint: cluster.endpoint(i))
        return ClusterProcesses.field("raft_term", in: status.out)
    }
}
