import EtcdProto
@testable import EtcdServer
import Foundation
import Testing

/// Multi-member clusters in one process over real loopback sockets.
@Suite(.serialized, .timeLimit(.minutes(2))) struct ClusterTests {
    @Test func threeMembersReplicateWritesFromEveryMember() async throws {
        try await TestCluster.with(size: 3) { cluster in
            let leader = try await cluster.waitForLeader()
            for member in cluster.running { try await member.publishForTest() }

            // Writes through every member (followers forward to the leader);
            // the answer comes once the member it was sent to applied it.
            var revisions: [Int64] = []
            for round in 0..<5 {
                for (i, member) in cluster.running.enumerated() {
                    let response = try await cluster.retrying { try await member.put(putRequest("k\(round)-\(i)", "v")) }
                    revisions.append(response.header.revision)
                    // Read-your-write on that member, linearizably.
                    let read = try await member.range(rangeRequest("k\(round)-\(i)"))
                    #expect(read.kvs.count == 1)
                }
            }
            #expect(revisions == revisions.sorted() && Set(revisions).count == revisions.count)
            // Every member reads every key linearizably (ReadIndex on followers).
            for member in cluster.running {
                let all = try await member.range(rangeRequest("k", prefix: true))
                #expect(all.kvs.count == 15)
                #expect(all.header.revision == revisions.last)
            }
            let hashes = try await cluster.converged()
            #expect(Set(hashes).count == 1)

            // The members know each other, with names and client URLs published.
            let list = cluster.running[leader].memberList()
            #expect(list.map(\.name).sorted() == ["m0", "m1", "m2"])
            #expect(list.allSatisfy { !$0.clientURLs.isEmpty && $0.peerURLs.count == 1 })
            #expect(Set(cluster.running.map { $0.clusterID }).count == 1)
        }
    }

    /// The leader applies its own proposals from the request it encoded
    /// (no decoding); what a follower forwarded, and everything on the
    /// followers, is decoded from the entry. The store is the same either way.
    @Test func theLeaderAppliesItsOwnProposalsWithoutDecodingThem() async throws {
        try await TestCluster.with(size: 3) { cluster in
            // An election in the middle (a loaded machine) moves the work to
            // another member and voids the counts.
            try await cluster.withSteadyLeader { leader in
                _ = try await cluster.retrying { try await cluster.running[leader].put(putRequest("warm", "up")) }
                let follower = (leader + 1) % 3
                let before = cluster.running.map(\.applyCounts)
                for i in 0..<10 {
                    _ = try await cluster.retrying { try await cluster.running[leader].put(putRequest("l\(i)", "v\(i)")) }
                    _ = try await cluster.retrying { try await cluster.running[follower].put(putRequest("f\(i)", "v\(i)")) }
                }
                // Every member has applied everything once the hashes agree.
                #expect(Set(try await cluster.converged()).count == 1)
                for member in cluster.running {
                    #expect(try await member.range(rangeRequest("l", prefix: true)).kvs.map(\.value) == (0..<10).map { Data("v\($0)".utf8) })
                    #expect(try await member.range(rangeRequest("f", prefix: true)).kvs.count == 10)
                }
                let after = cluster.running.map(\.applyCounts)
                return {
                    #expect(after[leader].fromMemory - before[leader].fromMemory >= 10)
                    #expect(after[leader].decoded - before[leader].decoded >= 10)
                    for index in 0..<3 where index != leader {
                        #expect(after[index].fromMemory == before[index].fromMemory)
                        #expect(after[index].decoded - before[index].decoded >= 20)
                    }
                }
            }
        }
    }

    /// Two followers reading linearizably at the same moment each get their
    /// own ReadIndex round: the leader ignores a round whose context it
    /// already holds, so contexts must differ across members (with per-
    /// member counters alone, one follower waited 500 ms for the retry).
    @Test func concurrentFollowerReadsNeedNoReadIndexRetry() async throws {
        try await TestCluster.with(size: 3) { cluster in
            // A retry is also right after an election (the round went to the
            // old leader), and a loaded machine can stall a member past the
            // election timeout.
            try await cluster.withSteadyLeader { leader in
                _ = try await cluster.retrying { try await cluster.running[leader].put(putRequest("r", "1")) }
                let followers = (0..<3).filter { $0 != leader }.map { cluster.running[$0] }
                let before = cluster.running.map(\.readIndexRetries).reduce(0, +)
                var failure: (any Error)?
                for _ in 0..<30 {
                    do {
                        async let first = followers[0].range(rangeRequest("r"))
                        async let second = followers[1].range(rangeRequest("r"))
                        let (a, b) = try await (first, second)
                        #expect(a.kvs.count == 1 && b.kvs.count == 1)
                    } catch {
                        failure = error
                        break
                    }
                }
                let retries = cluster.running.map(\.readIndexRetries).reduce(0, +) - before
                return { [failure] in
                    if let failure { throw failure }
                    #expect(retries == 0)
                }
            }
        }
    }

    @Test func moveLeaderHandsLeadershipToTheTarget() async throws {
        try await TestCluster.with(size: 3) { cluster in
            let first = try await cluster.waitForLeader()
            let leader = try #require(cluster.members[first])
            let target = (first + 1) % 3
            let targetID = try #require(cluster.members[target]).memberID
            // Only the leader moves leadership, and only to a voting member.
            let follower = try #require(cluster.members[(first + 2) % 3])
            await #expect(throws: EtcdError.notLeader) { try await follower.moveLeader(to: targetID) }
            await #expect(throws: EtcdError.badLeaderTransferee) { try await leader.moveLeader(to: 0x1234) }

            try await leader.moveLeader(to: targetID)
            #expect(try await cluster.waitForLeader() == target)
            #expect(leader.raftStatus().leader == targetID)
            // Writes go on through the new leader.
            let moved = try #require(cluster.members[target])
            _ = try await cluster.retrying { try await moved.put(putRequest("after-move", "1")) }
        }
    }

    @Test func leaderLossElectsANewLeaderAndTheOldOneCatchesUp() async throws {
        try await TestCluster.with(size: 3) { cluster in
            let first = try await cluster.waitForLeader()
            for i in 0..<10 { _ = try await cluster.retrying { try await cluster.running[0].put(putRequest("a\(i)", "1")) } }

            await cluster.stopMember(first)
            let started = ContinuousClock.now
            let second = try await cluster.waitForLeader()
            #expect(second != first)
            // A new leader within a few election timeouts.
            #expect(ContinuousClock.now - started < .milliseconds(TestCluster.electionMilliseconds * 10))
            let survivor = try #require(cluster.members[second])
            for i in 0..<10 { _ = try await cluster.retrying { try await survivor.put(putRequest("b\(i)", "2")) } }

            try await cluster.startMember(first)
            _ = try await cluster.waitForLeader()
            let hashes = try await cluster.converged()
            #expect(Set(hashes).count == 1)
            let back = try #require(cluster.members[first])
            let read = try await cluster.retrying { try await back.range(rangeRequest("b", prefix: true)) }
            #expect(read.kvs.count == 10)
        }
    }

    @Test func aMemberFarBehindCatchesUpThroughASnapshot() async throws {
        try await TestCluster.with(size: 3, configure: { config in
            config.snapshotCount = 50
            config.snapshotCatchUpEntries = 10
        }) { cluster in
            var leader = try await cluster.waitForLeader()
            let lagging = (leader + 1) % 3
            await cluster.stopMember(lagging)
            leader = try await cluster.waitForLeader()
            let writer = try #require(cluster.members[leader])
            for i in 0..<300 { _ = try await cluster.retrying { try await writer.put(putRequest("s\(i)", "\(i)")) } }
            var lease = Etcdserverpb_LeaseGrantRequest()
            lease.ttl = 600
            let granted = try await writer.leaseGrant(lease)

            try await cluster.startMember(lagging)
            let hashes = try await cluster.converged(timeout: .seconds(30))
            #expect(Set(hashes).count == 1)
            let caughtUp = try #require(cluster.members[lagging])
            let read = try await caughtUp.range(rangeRequest("s", prefix: true, serializable: true))
            #expect(read.kvs.count == 300)
            // It came with the snapshot (the log below it is gone) — leases too.
            #expect(caughtUp.leaseIDsGranted().contains(granted.id))
            let snapFiles = try FileManager.default.contentsOfDirectory(atPath: cluster.configs[lagging].snapDir)
            #expect(snapFiles.contains { $0.hasSuffix(".snap") })
            #expect(!snapFiles.contains { $0.hasSuffix(".snap.db") || $0.hasSuffix(".part") })

            // It keeps applying after the snapshot, and survives a restart.
            _ = try await cluster.retrying { try await caughtUp.put(putRequest("after", "snapshot")) }
            await cluster.stopMember(lagging)
            try await cluster.startMember(lagging)
            let again = try await cluster.converged(timeout: .seconds(30))
            #expect(Set(again).count == 1)
        }
    }

    /// A restarted member replays the conf changes since its last raft
    /// snapshot into raft's configuration: restarted, the old members still
    /// replicate to a member added meanwhile (before the fix they forgot it).
    @Test func aMemberAddedBeforeARestartIsStillReplicatedTo() async throws {
        try await TestCluster.with(size: 3) { cluster in
            let leader = try await cluster.waitForLeader()
            let leaderMember = try #require(cluster.members[leader])
            let used = Set(cluster.configs.flatMap(\.initialAdvertisePeerURLs))
            var port = try freePort()
            while used.contains("http://127.0.0.1:\(port)") { port = try freePort() }
            let added = try await cluster.retrying {
                try await leaderMember.memberAdd(peerURLs: ["http://127.0.0.1:\(port)"], isLearner: false)
            }
            let joiner = cluster.addConfig(name: "m3", peerPort: port)
            try await cluster.startMember(joiner)
            _ = try await cluster.converged(timeout: .seconds(30))
            // Restart every original member (no raft snapshot was taken since the add).
            for i in 0..<3 {
                await cluster.stopMember(i)
                try await cluster.startMember(i)
            }
            let newLeader = try await cluster.waitForLeader(timeout: .seconds(20))
            let writer = try #require(cluster.members[newLeader])
            for i in 0..<5 { _ = try await cluster.retrying { try await writer.put(putRequest("after-restart-\(i)", "v")) } }
            let newcomer = try #require(cluster.members[joiner])
            #expect(newcomer.memberID == added.id)
            let deadline = ContinuousClock.now + .seconds(10)
            var seen = 0
            while seen < 5 && ContinuousClock.now < deadline {
                var request = rangeRequest("after-restart-", prefix: true)
                request.serializable = true
                seen = (try? await newcomer.range(request).kvs.count) ?? 0
                if seen < 5 { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(seen == 5, "the member added before the restart got \(seen) of 5 writes")
        }
    }

    @Test func membersJoinAsLearnersArePromotedAndRemoved() async throws {
        try await TestCluster.with(size: 3) { cluster in
            let leader = try await cluster.waitForLeader()
            let leaderMember = try #require(cluster.members[leader])
            for i in 0..<20 { _ = try await cluster.retrying { try await leaderMember.put(putRequest("j\(i)", "v")) } }

            let used = Set(cluster.configs.flatMap(\.initialAdvertisePeerURLs))
            var port = try freePort()
            while used.contains("http://127.0.0.1:\(port)") { port = try freePort() }
            let added = try await cluster.retrying {
                try await leaderMember.memberAdd(peerURLs: ["http://127.0.0.1:\(port)"], isLearner: true)
            }
            #expect(added.isLearner && added.name.isEmpty)
            await #expect(throws: EtcdError.peerURLExists) {
                _ = try await leaderMember.memberAdd(peerURLs: ["http://127.0.0.1:\(port)"], isLearner: false)
            }
            let joiner = cluster.addConfig(name: "m3", peerPort: port)
            try await cluster.startMember(joiner)
            let newcomer = try #require(cluster.members[joiner])
            #expect(newcomer.memberID == added.id && newcomer.clusterID == leaderMember.clusterID)
            let hashes = try await cluster.converged(timeout: .seconds(30))
            #expect(Set(hashes).count == 1)

            // Promotion waits until the leader sees the learner in sync.
            let promoteBy = ContinuousClock.now + .seconds(10)
            while true {
                do {
                    try await cluster.retrying { try await leaderMember.memberPromote(id: added.id) }
                    break
                } catch let error as EtcdError where error == .learnerNotReady && ContinuousClock.now < promoteBy {
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
            #expect(leaderMember.memberList().first { $0.id == added.id }?.isLearner == false)
            await #expect(throws: EtcdError.notLearner) { try await leaderMember.memberPromote(id: added.id) }

            // Remove a follower that is not the newcomer: it stops by itself.
            let victim = (0..<3).first { $0 != leader }!
            let victimID = try #require(cluster.members[victim]).memberID
            try await cluster.retrying { try await leaderMember.memberRemove(id: victimID) }
            await #expect(throws: EtcdError.memberRemoved) { try await leaderMember.memberRemove(id: victimID) }
            let removed = try #require(cluster.members[victim])
            await removed.waitUntilStopped()
            await cluster.stopMember(victim)
            #expect(leaderMember.memberList().count == 3)
            _ = try await cluster.retrying { try await newcomer.put(putRequest("from-newcomer", "v")) }
            let final = try await cluster.converged()
            #expect(Set(final).count == 1)
        }
    }

    @Test func fiveMembersToleratesTwoFailures() async throws {
        try await TestCluster.with(size: 5) { cluster in
            let leader = try await cluster.waitForLeader()
            let down = (0..<5).filter { $0 != leader }.prefix(2)
            for i in down { await cluster.stopMember(i) }
            let writer = try #require(cluster.members[leader])
            for i in 0..<20 { _ = try await cluster.retrying { try await writer.put(putRequest("f\(i)", "v")) } }
            for member in cluster.running {
                let read = try await cluster.retrying { try await member.range(rangeRequest("f", prefix: true)) }
                #expect(read.kvs.count == 20)
            }
            for i in down { try await cluster.startMember(i) }
            let hashes = try await cluster.converged()
            #expect(hashes.count == 5 && Set(hashes).count == 1)
        }
    }

    @Test func aMemberWithoutQuorumRefusesWritesAndLinearizableReads() async throws {
        try await TestCluster.with(size: 3) { cluster in
            let leader = try await cluster.waitForLeader()
            let writer = try #require(cluster.members[leader])
            _ = try await cluster.retrying { try await writer.put(putRequest("q", "before")) }
            // Stop both followers: the leader loses quorum.
            for i in 0..<3 where i != leader { await cluster.stopMember(i) }
            await #expect(throws: EtcdError.self) { _ = try await writer.put(putRequest("q", "lost")) }
            await #expect(throws: EtcdError.self) { _ = try await writer.range(rangeRequest("q")) }
            // Serializable reads stay local and see the last applied value.
            let local = try await writer.range(rangeRequest("q", serializable: true))
            #expect(local.kvs.first?.value == Data("before".utf8))
        }
    }
}

extension Member {
    /// Publishing waits for a leader; tests call it once the cluster has one.
    func publishForTest() async throws { try await publish() }
}
