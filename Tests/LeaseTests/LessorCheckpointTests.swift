import Foundation
import Testing

@testable import Lease

@Suite struct LessorCheckpointTests {
    /// Hands out the due checkpoints and applies them, as the server would
    /// through raft.
    private func checkpointRound(_ lessor: Lessor, now: Duration, limit: Int = 1000) throws -> [(id: Int64, remainingTTLSeconds: Int64)] {
        let due = lessor.dueCheckpoints(now: now, limit: limit)
        for c in due { try lessor.checkpoint(id: c.id, remainingTTLSeconds: c.remainingTTLSeconds, now: now) }
        return due
    }

    @Test func aCheckpointedRemainingTTLSurvivesALeaderChange() throws {
        let f = try Fixture()
        f.lessor.promote(now: .zero, extend: .zero)
        _ = try f.lessor.grant(id: 1, ttlSeconds: 100, now: at(0))
        try f.lessor.checkpoint(id: 1, remainingTTLSeconds: 40, now: at(60))
        // The primary's own expiry is unchanged by a checkpoint.
        #expect(f.lessor.timeToLive(id: 1, now: at(60))?.remainingTTL == 40)
        f.lessor.demote()
        #expect(f.lessor.timeToLive(id: 1, now: at(500))?.remainingTTL == 40)
        f.lessor.promote(now: at(1000), extend: .seconds(2))
        #expect(f.lessor.expiredLeases(now: at(1042) - tick, limit: 10).isEmpty)
        #expect(f.lessor.expiredLeases(now: at(1042), limit: 10) == [1])
    }

    @Test func longLeasesAreCheckpointedEveryInterval() throws {
        let f = try Fixture()
        f.lessor.promote(now: .zero, extend: .zero)
        _ = try f.lessor.grant(id: 1, ttlSeconds: 1000, now: at(0))
        _ = try f.lessor.grant(id: 2, ttlSeconds: 300, now: at(0))  // not above the interval
        #expect(f.lessor.nextDeadline() == at(300))
        #expect(f.lessor.dueCheckpoints(now: at(300) - tick, limit: 10).isEmpty)
        #expect(try checkpointRound(f.lessor, now: at(300)).map { [$0.id, $0.remainingTTLSeconds] } == [[1, 700]])
        #expect(f.lessor.expiredLeases(now: at(300), limit: 10) == [2])
        _ = try f.lessor.revoke(id: 2)
        #expect(f.lessor.nextDeadline() == at(600))
        #expect(try checkpointRound(f.lessor, now: at(600)).map { [$0.id, $0.remainingTTLSeconds] } == [[1, 400]])
        #expect(try checkpointRound(f.lessor, now: at(900)).map { [$0.id, $0.remainingTTLSeconds] } == [[1, 100]])
        // 100 s left is not above the interval: no more checkpoints.
        #expect(f.lessor.dueCheckpoints(now: at(999), limit: 10).isEmpty)
        #expect(f.lessor.nextDeadline() == at(1000))  // lease 1's expiry
    }

    @Test func checkpointsHappenOnlyOnThePrimary() throws {
        let f = try Fixture()
        _ = try f.lessor.grant(id: 1, ttlSeconds: 1000, now: at(0))
        #expect(f.lessor.dueCheckpoints(now: at(10_000), limit: 10).isEmpty)
        f.lessor.promote(now: at(10_000), extend: .zero)
        #expect(f.lessor.dueCheckpoints(now: at(10_300), limit: 10).map(\.remainingTTLSeconds) == [700])
        f.lessor.demote()
        #expect(f.lessor.dueCheckpoints(now: at(20_000), limit: 10).isEmpty)
        // Disabled checkpoints are never due.
        let off = try Fixture(LessorConfig(minTTLSeconds: 1, checkpointsEnabled: false))
        off.lessor.promote(now: .zero, extend: .zero)
        _ = try off.lessor.grant(id: 1, ttlSeconds: 1000, now: .zero)
        #expect(off.lessor.dueCheckpoints(now: at(300), limit: 10).isEmpty)
        #expect(off.lessor.nextDeadline() == at(1000))
    }

    @Test func dueCheckpointsRespectTheLimitAndTheInterval() throws {
        let f = try Fixture(LessorConfig(minTTLSeconds: 1, checkpointIntervalSeconds: 60))
        f.lessor.promote(now: .zero, extend: .zero)
        for id in Int64(1)...25 { _ = try f.lessor.grant(id: id, ttlSeconds: 600, now: at(Double(id))) }
        let due = try checkpointRound(f.lessor, now: at(100), limit: 10)
        #expect(due.map(\.id) == Array(1...10))
        #expect(due.map(\.remainingTTLSeconds) == (1...10).map { 600 - 100 + $0 })
        #expect(try checkpointRound(f.lessor, now: at(100), limit: 10).map(\.id) == Array(11...20))
        #expect(try checkpointRound(f.lessor, now: at(100), limit: 10).map(\.id) == Array(21...25))
        #expect(f.lessor.dueCheckpoints(now: at(100), limit: 10).isEmpty)
        #expect(f.lessor.nextDeadline() == at(160))
    }

    @Test func renewClearsTheCheckpointThroughRaft() throws {
        let f = try Fixture()
        f.lessor.promote(now: .zero, extend: .zero)
        _ = try f.lessor.grant(id: 1, ttlSeconds: 1000, now: at(0))
        #expect(try checkpointRound(f.lessor, now: at(300)).map(\.remainingTTLSeconds) == [700])
        #expect(try f.lessor.renew(id: 1, now: at(350)) == 1000)
        #expect(f.lessor.timeToLive(id: 1, now: at(350))?.remainingTTL == 1000)
        // The clearing checkpoint is due at once, and handed out once.
        #expect(f.lessor.nextDeadline() == at(350))
        #expect(f.lessor.dueCheckpoints(now: at(350), limit: 10).map { [$0.id, $0.remainingTTLSeconds] } == [[1, 0]])
        #expect(f.lessor.dueCheckpoints(now: at(350), limit: 10).isEmpty)
        // Renewals while it is in flight do not ask again.
        _ = try f.lessor.renew(id: 1, now: at(351))
        #expect(f.lessor.dueCheckpoints(now: at(351), limit: 10).isEmpty)
        try f.lessor.checkpoint(id: 1, remainingTTLSeconds: 0, now: at(352))
        // Cleared: a new leader starts the lease with its full TTL.
        f.lessor.demote()
        f.lessor.promote(now: at(2000), extend: .zero)
        #expect(f.lessor.expiredLeases(now: at(3000) - tick, limit: 10).isEmpty)
        #expect(f.lessor.expiredLeases(now: at(3000), limit: 10) == [1])
    }

    @Test func aLostClearingCheckpointIsAskedForAgain() throws {
        let f = try Fixture()
        f.lessor.promote(now: .zero, extend: .zero)
        _ = try f.lessor.grant(id: 1, ttlSeconds: 1000, now: at(0))
        _ = try checkpointRound(f.lessor, now: at(300))
        _ = try f.lessor.renew(id: 1, now: at(350))
        #expect(f.lessor.dueCheckpoints(now: at(350), limit: 10).map(\.remainingTTLSeconds) == [0])
        // Never applied; a renewal after the retry interval asks again.
        _ = try f.lessor.renew(id: 1, now: at(352))
        #expect(f.lessor.dueCheckpoints(now: at(352), limit: 10).isEmpty)
        _ = try f.lessor.renew(id: 1, now: at(353))
        #expect(f.lessor.dueCheckpoints(now: at(353), limit: 10).map(\.remainingTTLSeconds) == [0])
    }

    @Test func renewWithoutACheckpointProposesNothing() throws {
        let f = try Fixture()
        f.lessor.promote(now: .zero, extend: .zero)
        _ = try f.lessor.grant(id: 1, ttlSeconds: 1000, now: at(0))
        _ = try f.lessor.renew(id: 1, now: at(10.25))
        #expect(f.lessor.dueCheckpoints(now: at(10.25), limit: 10).isEmpty)
        // The regular schedule goes on: 300 s after the grant, 710.25 s
        // left, rounded up as etcd does.
        #expect(f.lessor.dueCheckpoints(now: at(300), limit: 10).map(\.remainingTTLSeconds) == [711])
    }

    @Test func aJustRenewedLeaseSkipsItsCheckpointButStaysScheduled() throws {
        let f = try Fixture()
        f.lessor.promote(now: .zero, extend: .zero)
        _ = try f.lessor.grant(id: 1, ttlSeconds: 1000, now: at(0))
        _ = try f.lessor.renew(id: 1, now: at(299.5))
        // ceil(999.5) == 1000 is not below the TTL: nothing to record.
        #expect(f.lessor.dueCheckpoints(now: at(300), limit: 10).isEmpty)
        #expect(f.lessor.dueCheckpoints(now: at(600), limit: 10).map(\.remainingTTLSeconds) == [700])
    }
}
