import EtcdProto
@testable import EtcdServer
import Foundation
import Testing

/// --strict-reconfig-check: member changes that would leave the cluster
/// without a working quorum are refused with etcd's errors.
@Suite(.serialized, .timeLimit(.minutes(2))) struct StrictReconfigTests {
    static func record(_ id: UInt64, started: Bool) -> MemberRecord {
        var record = MemberRecord(id: id, peerURLs: ["http://127.0.0.1:\(id)"], isLearner: false)
        if started { record.name = "m\(id)" }
        return record
    }

    static func waitUntil(_ what: String, timeout: Duration = .seconds(15), _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while !condition() {
            try #require(ContinuousClock.now < deadline, "timed out waiting for \(what)")
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    @Test func etcdsQuorumArithmetic() {
        let one = [Self.record(1, started: true)]
        #expect(ReconfigurationCheck.readyToAdd(voters: one))
        let oneOfTwo = one + [Self.record(2, started: false)]
        #expect(!ReconfigurationCheck.readyToAdd(voters: oneOfTwo))
        let twoOfThree = oneOfTwo + [Self.record(3, started: true)]
        #expect(ReconfigurationCheck.readyToAdd(voters: twoOfThree) == false)  // 2 started of 4
        #expect(ReconfigurationCheck.readyToRemove(2, voters: twoOfThree))
        #expect(!ReconfigurationCheck.readyToRemove(3, voters: twoOfThree))  // leaves 1 started of 2
        #expect(ReconfigurationCheck.readyToPromote(voters: twoOfThree))  // 3 started of 4
        #expect(!ReconfigurationCheck.readyToPromote(voters: oneOfTwo + [Self.record(3, started: false)]))
    }

    @Test func aChangeThatBreaksTheActiveQuorumIsRefused() async throws {
        try await TestCluster.with(size: 3) { cluster in
            let leader = try await cluster.waitForLeader()
            let leaderMember = try #require(cluster.members[leader])
            // Every member published its name (started).
            _ = try await cluster.converged()
            let followers = (0..<3).filter { $0 != leader }
            let (alive, dead) = (followers[0], followers[1])
            let aliveID = try #require(cluster.members[alive]).memberID
            let deadID = try #require(cluster.members[dead]).memberID
            // The leader has heard from both followers for the health interval.
            try await Self.waitUntil("both followers in contact") {
                let contact = leaderMember.peerContactForTest()
                return contact.since(aliveID) != nil && contact.since(deadID) != nil
            }
            await cluster.stopMember(dead)
            // Wait until the leader has noticed the silence.
            try await Self.waitUntil("the stopped follower out of contact") {
                leaderMember.peerContactForTest().since(deadID) == nil
            }
            // Removing the live follower would leave the leader with a dead peer.
            await #expect(throws: EtcdError.unhealthy) { try await leaderMember.memberRemove(id: aliveID) }
            // Adding needs every voter in contact.
            await #expect(throws: EtcdError.unhealthy) {
                _ = try await leaderMember.memberAdd(peerURLs: ["http://127.0.0.1:1"], isLearner: true)
            }
            // The dead member may go: it is not part of the active quorum.
            try await cluster.retrying { try await leaderMember.memberRemove(id: deadID) }
            #expect(leaderMember.memberList().count == 2)
        }
    }

    @Test func withoutTheCheckTheSameChangeIsAccepted() async throws {
        try await TestCluster.with(size: 3, configure: { $0.strictReconfigCheck = false }) { cluster in
            let leader = try await cluster.waitForLeader()
            let leaderMember = try #require(cluster.members[leader])
            _ = try await cluster.converged()
            let followers = (0..<3).filter { $0 != leader }
            await cluster.stopMember(followers[1])
            let added = try await cluster.retrying {
                try await leaderMember.memberAdd(peerURLs: ["http://127.0.0.1:1"], isLearner: true)
            }
            #expect(leaderMember.memberList().contains { $0.id == added.id })
        }
    }

    @Test func aVoterAddedBeforeTheLastOneStartedIsRefused() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("strict-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let member = try Member(config: ServerConfig(name: "m1", dataDir: dir))
        defer { member.stop() }
        _ = try await member.put(putRequest("k", "v"))
        try await member.publishForTest()
        // A second voter for a one-member cluster may always be added...
        _ = try await member.memberAdd(peerURLs: ["http://127.0.0.1:1"], isLearner: false)
        // ...but not a third before the second has started.
        await #expect(throws: EtcdError.notEnoughStartedMembers) {
            _ = try await member.memberAdd(peerURLs: ["http://127.0.0.1:2"], isLearner: false)
        }
    }
}

extension Member {
    func peerContactForTest() -> PeerContact.View {
        let contact = mailbox.peerContact.withLock { $0 }
        return PeerContact.View(contact: contact, now: environment.now(), healthInterval: ReconfigurationCheck.healthInterval)
    }
}
