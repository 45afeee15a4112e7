import Foundation
import Testing

@testable import Lease

@Suite struct LessorExpiryTests {
    @Test func leasesExpireOnlyOnThePrimaryAtTheirInstant() throws {
        let f = try Fixture()
        _ = try f.lessor.grant(id: 1, ttlSeconds: 10, now: at(0))
        // Not primary: nothing ever expires, nothing is scheduled.
        #expect(f.lessor.expiredLeases(now: at(1_000_000), limit: 10).isEmpty)
        #expect(f.lessor.nextDeadline() == nil)
        f.lessor.promote(now: at(100), extend: .zero)
        #expect(f.lessor.isPrimary)
        #expect(f.lessor.nextDeadline() == at(110))
        #expect(f.lessor.expiredLeases(now: at(110) - tick, limit: 10).isEmpty)
        #expect(f.lessor.expiredLeases(now: at(110), limit: 10) == [1])
        // Handed out once, then again after the retry interval if still there.
        #expect(f.lessor.expiredLeases(now: at(112), limit: 10).isEmpty)
        #expect(f.lessor.nextDeadline() == at(113))
        #expect(f.lessor.expiredLeases(now: at(113) - tick, limit: 10).isEmpty)
        #expect(f.lessor.expiredLeases(now: at(113), limit: 10) == [1])
        // Once revoked it never comes back.
        _ = try f.lessor.revoke(id: 1)
        #expect(f.lessor.expiredLeases(now: at(200), limit: 10).isEmpty)
        #expect(f.lessor.nextDeadline() == nil)
    }

    @Test func theRetryIntervalIsConfigurable() throws {
        let f = try Fixture(LessorConfig(minTTLSeconds: 1, expiredRetrySeconds: 7))
        f.lessor.promote(now: .zero, extend: .zero)
        _ = try f.lessor.grant(id: 1, ttlSeconds: 2, now: .zero)
        #expect(f.lessor.expiredLeases(now: at(2), limit: 10) == [1])
        #expect(f.lessor.expiredLeases(now: at(9) - tick, limit: 10).isEmpty)
        #expect(f.lessor.expiredLeases(now: at(9), limit: 10) == [1])
    }

    @Test func expiredLeasesComeOldestFirstWithinTheLimit() throws {
        let f = try Fixture()
        f.lessor.promote(now: .zero, extend: .zero)
        // 25 leases: id n expires at 100 - n seconds.
        for n in Int64(1)...25 { _ = try f.lessor.grant(id: n, ttlSeconds: 100 - n, now: .zero) }
        let first = f.lessor.expiredLeases(now: at(100), limit: 10)
        #expect(first == Array((16...25).reversed()))
        let second = f.lessor.expiredLeases(now: at(100), limit: 10)
        #expect(second == Array((6...15).reversed()))
        #expect(f.lessor.expiredLeases(now: at(100), limit: 10) == [5, 4, 3, 2, 1])
        #expect(f.lessor.expiredLeases(now: at(100), limit: 10).isEmpty)
        #expect(f.lessor.expiredLeases(now: at(100), limit: 0).isEmpty)
    }

    @Test func demoteStopsExpiryUntilTheNextPromote() throws {
        let f = try Fixture()
        f.lessor.promote(now: .zero, extend: .zero)
        _ = try f.lessor.grant(id: 1, ttlSeconds: 10, now: .zero)
        _ = try f.lessor.grant(id: 2, ttlSeconds: 10, now: .zero)
        #expect(f.lessor.expiredLeases(now: at(10), limit: 1) == [1])
        f.lessor.demote()
        #expect(!f.lessor.isPrimary)
        #expect(f.lessor.expiredLeases(now: at(1000), limit: 10).isEmpty)
        #expect(f.lessor.nextDeadline() == nil)
        // Granted while not primary: no expiry either.
        _ = try f.lessor.grant(id: 3, ttlSeconds: 5, now: at(1000))
        #expect(f.lessor.expiredLeases(now: at(2000), limit: 10).isEmpty)
        // Promotion restarts every lease's TTL from then.
        f.lessor.promote(now: at(2000), extend: .zero)
        #expect(f.lessor.expiredLeases(now: at(2005) - tick, limit: 10).isEmpty)
        #expect(f.lessor.expiredLeases(now: at(2005), limit: 10) == [3])
        _ = try f.lessor.revoke(id: 3)
        #expect(f.lessor.expiredLeases(now: at(2010), limit: 10) == [1, 2])
    }

    @Test func promoteExtendsEveryLease() throws {
        let f = try Fixture()
        _ = try f.lessor.grant(id: 1, ttlSeconds: 10, now: .zero)
        f.lessor.promote(now: at(50), extend: .milliseconds(1500))
        #expect(f.lessor.timeToLive(id: 1, now: at(50))?.remainingTTL == 11)
        #expect(f.lessor.expiredLeases(now: at(61.5) - tick, limit: 10).isEmpty)
        #expect(f.lessor.expiredLeases(now: at(61.5), limit: 10) == [1])
        _ = try f.lessor.revoke(id: 1)
        // A lease granted after the promotion is not extended.
        _ = try f.lessor.grant(id: 2, ttlSeconds: 10, now: at(70))
        #expect(f.lessor.expiredLeases(now: at(80), limit: 10) == [2])
    }

    @Test func piledUpExpiriesAreSpreadAfterPromote() throws {
        let f = try Fixture()
        for id in Int64(1)...5000 { _ = try f.lessor.grant(id: id, ttlSeconds: 10, now: .zero) }
        f.lessor.promote(now: at(100), extend: .seconds(2))
        // No lease expires earlier than etcd would let it.
        #expect(f.lessor.expiredLeases(now: at(112) - tick, limit: 10_000).isEmpty)
        // Step the clock by 100 ms; revoke what is handed out, as the server
        // would, and count expiries per one-second window.
        var expiredAt: [Duration] = []
        var now = at(112) - tick
        while now < at(130) {
            now += .milliseconds(100)
            for id in f.lessor.expiredLeases(now: now, limit: 10_000) {
                expiredAt.append(now)
                _ = try f.lessor.revoke(id: id)
            }
        }
        #expect(expiredAt.count == 5000 && f.lessor.count == 0)
        var window = at(112) - tick
        while window < at(130) {
            let inWindow = expiredAt.filter { $0 > window && $0 <= window + .seconds(1) }.count
            #expect(inWindow <= 760, "\(inWindow) leases expired in the second after \(window)")
            window += .milliseconds(100)
        }
        // 750 per second: the last one expires 5000/750 s after the first.
        #expect(expiredAt.first! < at(112.1) && expiredAt.last! > at(118.5) && expiredAt.last! < at(119))
    }

    @Test func fewerLeasesThanTheRevokeRateAreNotSpread() throws {
        let f = try Fixture()
        for id in Int64(1)...999 { _ = try f.lessor.grant(id: id, ttlSeconds: 10, now: .zero) }
        f.lessor.promote(now: .zero, extend: .zero)
        #expect(f.lessor.expiredLeases(now: at(10), limit: 10_000).count == 999)
    }

    @Test func leasesAlreadyApartAreLeftAlone() throws {
        let f = try Fixture()
        // 1000 leases, one per second: nothing piles up.
        for id in Int64(1)...1000 { _ = try f.lessor.grant(id: id, ttlSeconds: 10 + id, now: .zero) }
        f.lessor.promote(now: .zero, extend: .zero)
        for id in Int64(1)...1000 {
            #expect(f.lessor.timeToLive(id: id, now: .zero)?.remainingTTL == 10 + id)
        }
    }
}
