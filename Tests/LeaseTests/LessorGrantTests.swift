import Foundation
import Testing

@testable import Lease

@Suite struct LessorGrantTests {
    @Test func grantRenewAndTimeToLiveFollowTheFakeClock() throws {
        let f = try Fixture()
        f.lessor.promote(now: at(0), extend: .zero)
        let info = try f.lessor.grant(id: 7, ttlSeconds: 10, now: at(100))
        #expect(info == LeaseInfo(id: 7, grantedTTL: 10, remainingTTL: 10, keys: []))
        #expect(f.lessor.contains(7) && f.lessor.count == 1 && f.lessor.leases() == [7])
        // etcd truncates the remaining time: 6.5 s left reads as 6.
        #expect(f.lessor.timeToLive(id: 7, now: at(103.5))?.remainingTTL == 6)
        #expect(f.lessor.timeToLive(id: 7, now: at(110) - tick)?.remainingTTL == 0)
        // Renewing restarts the full TTL from now.
        #expect(try f.lessor.renew(id: 7, now: at(105)) == 10)
        #expect(f.lessor.timeToLive(id: 7, now: at(105)) == LeaseInfo(id: 7, grantedTTL: 10, remainingTTL: 10, keys: []))
        #expect(f.lessor.expiredLeases(now: at(115) - tick, limit: 10).isEmpty)
        #expect(f.lessor.expiredLeases(now: at(115), limit: 10) == [7])
        // An expired lease cannot be renewed back to life.
        #expect(throws: LeaseError.notFound) { try f.lessor.renew(id: 7, now: at(115)) }
        #expect(try f.lessor.revoke(id: 7) == [])
        #expect(!f.lessor.contains(7) && f.lessor.count == 0 && f.lessor.timeToLive(id: 7, now: at(115)) == nil)
        #expect(f.lessor.expiredLeases(now: at(200), limit: 10).isEmpty)
    }

    @Test func anExpiredLeaseAwaitingRevocationReportsWhatEtcdReports() throws {
        let f = try Fixture()
        f.lessor.promote(now: .zero, extend: .zero)
        _ = try f.lessor.grant(id: 1, ttlSeconds: 5, now: .zero)
        // Go's int64(Remaining().Seconds()) truncates toward zero.
        #expect(f.lessor.timeToLive(id: 1, now: at(5))?.remainingTTL == 0)
        #expect(f.lessor.timeToLive(id: 1, now: at(5.9))?.remainingTTL == 0)
        #expect(f.lessor.timeToLive(id: 1, now: at(6.5))?.remainingTTL == -1)
        #expect(f.lessor.timeToLive(id: 1, now: at(8.2))?.remainingTTL == -3)
    }

    @Test func durationsRoundToSecondsAsGoDoes() {
        #expect(Duration.seconds(2.5).truncatedSeconds == 2 && Duration.seconds(2.5).ceiledSeconds == 3)
        #expect(Duration.seconds(-2.5).truncatedSeconds == -2 && Duration.seconds(-2.5).ceiledSeconds == -2)
        #expect(Duration.seconds(3).truncatedSeconds == 3 && Duration.seconds(3).ceiledSeconds == 3)
        #expect((Duration.seconds(3) + tick).ceiledSeconds == 4 && (Duration.seconds(3) - tick).truncatedSeconds == 2)
        #expect((Duration.zero - tick).truncatedSeconds == 0 && (Duration.zero - tick).ceiledSeconds == 0)
    }

    @Test func shortTTLsAreRaisedToTheMinimum() throws {
        let f = try Fixture(LessorConfig(minTTLSeconds: 5))
        #expect(try f.lessor.grant(id: 1, ttlSeconds: 2, now: .zero).grantedTTL == 5)
        #expect(try f.lessor.grant(id: 2, ttlSeconds: 0, now: .zero).grantedTTL == 5)
        #expect(try f.lessor.grant(id: 3, ttlSeconds: -4, now: .zero).grantedTTL == 5)
        #expect(try f.lessor.grant(id: 4, ttlSeconds: 6, now: .zero).grantedTTL == 6)
        f.lessor.promote(now: at(10), extend: .zero)
        #expect(f.lessor.expiredLeases(now: at(15) - tick, limit: 10).isEmpty)
        #expect(f.lessor.expiredLeases(now: at(15), limit: 10) == [1, 2, 3])
    }

    @Test func grantRejectsBadRequestsAsEtcdDoes() throws {
        let f = try Fixture()
        #expect(throws: LeaseError.ttlTooLarge) {
            try f.lessor.grant(id: 1, ttlSeconds: LeaseLimits.maxTTLSeconds + 1, now: .zero)
        }
        #expect(try f.lessor.grant(id: 1, ttlSeconds: LeaseLimits.maxTTLSeconds, now: .zero).grantedTTL
            == LeaseLimits.maxTTLSeconds)
        #expect(throws: LeaseError.alreadyExists) { try f.lessor.grant(id: 1, ttlSeconds: 5, now: .zero) }
        // Id 0 means "no lease" in etcd.
        #expect(throws: LeaseError.notFound) { try f.lessor.grant(id: 0, ttlSeconds: 5, now: .zero) }
        #expect(f.lessor.leases() == [1])
        #expect(LeaseError.ttlTooLarge.description == "etcdserver: too large lease TTL")
        #expect(LeaseError.notFound.description == "etcdserver: requested lease not found")
        #expect(LeaseError.alreadyExists.description == "etcdserver: lease already exists")
    }

    @Test func theLeaseCountIsBounded() throws {
        let f = try Fixture(LessorConfig(minTTLSeconds: 1, maxLeases: 3))
        for id in Int64(1)...3 { _ = try f.lessor.grant(id: id, ttlSeconds: 5, now: .zero) }
        #expect(throws: LeaseError.tooManyLeases) { try f.lessor.grant(id: 4, ttlSeconds: 5, now: .zero) }
        _ = try f.lessor.revoke(id: 2)
        #expect(try f.lessor.grant(id: 4, ttlSeconds: 5, now: .zero).id == 4)
        #expect(f.lessor.leases() == [1, 3, 4])
    }

    @Test func unknownLeasesAreNotFoundEverywhere() throws {
        let f = try Fixture()
        f.lessor.promote(now: .zero, extend: .zero)
        #expect(throws: LeaseError.notFound) { try f.lessor.revoke(id: 9) }
        #expect(throws: LeaseError.notFound) { try f.lessor.renew(id: 9, now: .zero) }
        #expect(throws: LeaseError.notFound) { try f.lessor.checkpoint(id: 9, remainingTTLSeconds: 3, now: .zero) }
        #expect(f.lessor.timeToLive(id: 9, now: .zero) == nil)
        #expect(!f.lessor.contains(9))
        // A revoked lease is gone the same way.
        _ = try f.lessor.grant(id: 9, ttlSeconds: 5, now: .zero)
        _ = try f.lessor.revoke(id: 9)
        #expect(throws: LeaseError.notFound) { try f.lessor.revoke(id: 9) }
        #expect(throws: LeaseError.notFound) { try f.lessor.renew(id: 9, now: .zero) }
    }

    @Test func renewNeedsThePrimary() throws {
        let f = try Fixture()
        _ = try f.lessor.grant(id: 1, ttlSeconds: 5, now: .zero)
        #expect(!f.lessor.isPrimary)
        #expect(throws: LeaseError.notPrimary) { try f.lessor.renew(id: 1, now: .zero) }
        #expect(throws: LeaseError.notPrimary) { try f.lessor.renew(id: 2, now: .zero) }
        // Off the primary, time-to-live reports what a promotion would start with.
        #expect(f.lessor.timeToLive(id: 1, now: at(1000))?.remainingTTL == 5)
        f.lessor.promote(now: at(10), extend: .zero)
        #expect(try f.lessor.renew(id: 1, now: at(11)) == 5)
        f.lessor.demote()
        #expect(throws: LeaseError.notPrimary) { try f.lessor.renew(id: 1, now: at(12)) }
    }
}
