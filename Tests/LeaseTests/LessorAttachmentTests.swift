import Foundation
import Testing

@testable import Lease

@Suite struct LessorAttachmentTests {
    @Test func eventsMoveKeysBetweenLeases() throws {
        let f = try Fixture()
        _ = try f.lessor.grant(id: 1, ttlSeconds: 60, now: .zero)
        _ = try f.lessor.grant(id: 2, ttlSeconds: 60, now: .zero)
        f.lessor.apply(events: [putEvent("b", lease: 1), putEvent("a", lease: 1), putEvent("c", lease: 1)])
        #expect(f.lessor.timeToLive(id: 1, now: .zero)?.keys == [d("a"), d("b"), d("c")])
        // A put with another lease moves the key (with or without prevKv).
        f.lessor.apply(events: [putEvent("a", lease: 2, prevLease: 1), putEvent("b", lease: 2)])
        #expect(f.lessor.timeToLive(id: 1, now: .zero)?.keys == [d("c")])
        #expect(f.lessor.timeToLive(id: 2, now: .zero)?.keys == [d("a"), d("b")])
        // A put without a lease, a delete: detached.
        f.lessor.apply(events: [putEvent("a", lease: 0), deleteEvent("c")])
        #expect(f.lessor.timeToLive(id: 1, now: .zero)?.keys == [])
        #expect(f.lessor.timeToLive(id: 2, now: .zero)?.keys == [d("b")])
        // A put to an unknown lease leaves the key unattached.
        f.lessor.apply(events: [putEvent("b", lease: 99)])
        #expect(f.lessor.timeToLive(id: 2, now: .zero)?.keys == [])
    }

    @Test func revokeReturnsTheKeysSortedBytewise() throws {
        let f = try Fixture()
        _ = try f.lessor.grant(id: 1, ttlSeconds: 60, now: .zero)
        let keys = [Data([0xFF]), Data([0x01, 0x02]), d("a"), Data([0x01]), Data()]
        f.lessor.apply(events: keys.map { key in
            var e = putEvent("", lease: 1)
            e.kv.key = key
            return e
        })
        let revoked = try f.lessor.revoke(id: 1)
        #expect(revoked == [Data(), Data([0x01]), Data([0x01, 0x02]), d("a"), Data([0xFF])])
        // The server's deletes of those keys name the revoked lease: ignored.
        f.lessor.apply(events: [deleteEvent("a", prevLease: 1)])
        // The keys are free: a new lease can take them.
        _ = try f.lessor.grant(id: 2, ttlSeconds: 60, now: .zero)
        f.lessor.apply(events: [putEvent("a", lease: 2, prevLease: 1)])
        #expect(try f.lessor.revoke(id: 2) == [d("a")])
    }

    @Test func attachmentsAreRestoredAfterARestart() throws {
        let f = try Fixture()
        _ = try f.lessor.grant(id: 1, ttlSeconds: 60, now: .zero)
        _ = try f.lessor.grant(id: 2, ttlSeconds: 60, now: .zero)
        let g = try f.restarted()
        g.lessor.restoreAttachments([d("x"): 1, d("y"): 2, d("z"): 1, d("w"): 77])
        #expect(g.lessor.timeToLive(id: 1, now: .zero)?.keys == [d("x"), d("z")])
        #expect(g.lessor.timeToLive(id: 2, now: .zero)?.keys == [d("y")])
        #expect(try g.lessor.revoke(id: 1) == [d("x"), d("z")])
        try g.backend.close()
    }
}
