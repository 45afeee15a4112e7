import Foundation
import Testing

/// Process-level regression scenarios for bugs etcd itself had: a watch
/// going back in time on a member that lagged behind a partition, and a
/// lease expiring early after a leader change.
extension ClusterE2ETests {
    /// A client that has seen revision R resumes its watch from R+1 on a
    /// member that was cut off (still at R): it must get exactly the later
    /// events, in order, once the member catches up — nothing at or below R.
    @Test func aWatchResumedOnALaggingMemberDoesNotGoBackInTime() throws {
        let cluster = try ClusterProcesses(size: 3, proxied: true)
        defer { cluster.shutDown() }
        let ids = try cluster.memberIDs()
        let leader = try #require(try cluster.index(ofMemberID: try cluster.waitForLeader()))
        let lagging = (leader + 1) % 3
        let other = (leader + 2) % 3
        for n in 0..<10 { #expect(try cluster.etcdctl(["put", "w/\(n)", "a\(n)"], endpoint: cluster.endpoint(leader)).status == 0) }
        let seen = try revision(cluster, lagging, key: "w/9")

        cluster.isolate(lagging, ids: ids)
        var written = 0
        let deadline = Date().addingTimeInterval(15)
        while written < 10 && Date() < deadline {
            if try cluster.etcdctl(["put", "w/\(10 + written)", "b"], endpoint: cluster.endpoint(other)).status == 0 { written += 1 }
        }
        #expect(written == 10)

        // Resume on the lagging member while it is still cut off; heal after a second.
        let watch = LockedBox<(status: Int32, out: String, err: String)?>(nil)
        let endpoint = cluster.endpoint(lagging)
        let watcher = Thread {
            watch.value = try? EtcdProcess.run("/usr/bin/timeout", [
                "6", "/usr/bin/etcdctl", "--endpoints=\(endpoint)", "watch", "w/", "--prefix",
                "--rev=\(seen + 1)", "-w", "json",
            ], environment: ["ETCDCTL_API": "3"], input: nil)
        }
        watcher.start()
        Thread.sleep(forTimeInterval: 1)
        cluster.healNetwork()
        while watch.value == nil { Thread.sleep(forTimeInterval: 0.1) }
        let output = try #require(watch.value).out
        let revisions = Self.numbers("mod_revision", in: output)
        #expect(revisions == Array((seen + 1)...(seen + 10)), "resumed after \(seen): \(revisions)")
        let headers = Self.numbers("revision", in: output)
        #expect(headers == headers.sorted(), "header revisions went back: \(headers)")
    }

    /// A lease granted on the leader survives the leader's crash for its
    /// whole TTL (the new leader does not expire it early), and expires
    /// after it.
    @Test func aLeaseDoesNotExpireEarlyAfterALeaderChange() throws {
        let cluster = try ClusterProcesses(size: 3)
        defer { cluster.shutDown() }
        let leaderID = try cluster.waitForLeader()
        let leader = try #require(try cluster.index(ofMemberID: leaderID))
        let granted = Date()
        let grant = try cluster.etcdctl(["lease", "grant", "10"], endpoint: cluster.endpoint(leader))
        let id = try #require(grant.out.split(separator: " ").dropFirst().first.map(String.init), "\(grant)")
        #expect(try cluster.etcdctl(["put", "leased", "v", "--lease=\(id)"], endpoint: cluster.endpoint(leader)).status == 0)

        cluster.kill9(leader)
        _ = try cluster.waitForLeader(excluding: leaderID)
        let survivor = cluster.endpoint((leader + 1) % 3)
        // Well inside the TTL: still there, with time left.
        Thread.sleep(forTimeInterval: max(0, 7.5 - Date().timeIntervalSince(granted)))
        let ttl = try cluster.etcdctl(["lease", "timetolive", id], endpoint: survivor)
        #expect(ttl.out.contains("remaining(") && !ttl.out.contains("already expired"), "\(ttl)")
        let present = try cluster.etcdctl(["get", "leased", "--print-value-only"], endpoint: survivor)
        #expect(present.out == "v\n", "gone after \(Date().timeIntervalSince(granted)) s of a 10 s lease: \(present)")

        // And it does expire (the new leader extends by an election timeout at most, plus its tick).
        try cluster.start(leader)
        var gone = false
        while !gone && Date().timeIntervalSince(granted) < 25 {
            gone = try cluster.etcdctl(["get", "leased", "--print-value-only"], endpoint: survivor).out.isEmpty
            if !gone { Thread.sleep(forTimeInterval: 0.25) }
        }
        #expect(gone, "the lease never expired")
        #expect(Date().timeIntervalSince(granted) >= 10)
    }

    private func revision(_ cluster: ClusterProcesses, _ i: Int, key: String) throws -> Int {
        let out = try cluster.etcdctl(["get", key, "-w", "json"], endpoint: cluster.endpoint(i)).out
        return try #require(Self.numbers("mod_revision", in: out).first)
    }

    /// Every number after `"name":` in a JSON text, in order.
    static func numbers(_ name: String, in json: String) -> [Int] {
        var result: [Int] = []
        var rest = Substring(json)
        while let range = rest.range(of: "\"\(name)\":") {
            rest = rest[range.upperBound...]
            if let value = Int(rest.prefix { $0.isNumber }) { result.append(value) }
        }
        return result
    }
}
