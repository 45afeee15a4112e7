import Backend
import Foundation
import Testing

@testable import Lease

/// Writes `backend`'s snapshot into a new file in `dir`; returns its path.
func receiveSnapshot(of backend: Backend, in dir: TemporaryDirectory) throws -> String {
    try backend.forceCommit()
    let path = dir.path + "/received-\(UUID().uuidString)"
    _ = FileManager.default.createFile(atPath: path, contents: nil)
    let handle = FileHandle(forWritingAtPath: path)!
    try backend.snapshot { chunk in handle.write(Data(chunk)) }
    try handle.close()
    return path
}

@Suite struct LessorReloadTests {
    /// A backend whose lease bucket holds leases 1 (TTL 10, checkpointed at
    /// 4 s left), 2 (TTL 20) and 3 (TTL 1, below the minimum).
    private func source() throws -> Fixture {
        let s = try Fixture()
        _ = try s.lessor.grant(id: 1, ttlSeconds: 10, now: .zero)
        try s.lessor.checkpoint(id: 1, remainingTTLSeconds: 4, now: .zero)
        _ = try s.lessor.grant(id: 2, ttlSeconds: 20, now: .zero)
        _ = try s.lessor.grant(id: 3, ttlSeconds: 1, now: .zero)
        return s
    }

    @Test func reloadReplacesTheLeasesAndThePrimaryGetsExpiries() throws {
        let s = try source()
        let f = try Fixture(LessorConfig(minTTLSeconds: 5))
        _ = try f.lessor.grant(id: 9, ttlSeconds: 60, now: .zero)
        _ = try f.lessor.grant(id: 2, ttlSeconds: 60, now: .zero)
        f.lessor.restoreAttachments([d("old"): 9, d("two"): 2])
        f.lessor.promote(now: .zero, extend: .zero)

        try f.backend.replace(withFileAt: try receiveSnapshot(of: s.backend, in: f.dir))
        try f.lessor.reload(now: at(100), extend: .seconds(2))
        #expect(f.lessor.leases() == [1, 2, 3])
        #expect(f.lessor.isPrimary)
        // As promote: now + extend + the checkpointed remaining TTL or the TTL.
        #expect(f.lessor.timeToLive(id: 1, now: at(100))?.remainingTTL == 6)
        #expect(f.lessor.timeToLive(id: 2, now: at(100))?.grantedTTL == 20)
        #expect(f.lessor.timeToLive(id: 2, now: at(100))?.remainingTTL == 22)
        #expect(f.lessor.timeToLive(id: 3, now: at(100))?.grantedTTL == 5)
        #expect(f.lessor.timeToLive(id: 2, now: at(100))?.keys == [])
        #expect(f.lessor.nextDeadline() == at(106))
        #expect(f.lessor.expiredLeases(now: at(107), limit: 10) == [1, 3])
        #expect(throws: LeaseError.notFound) { try f.lessor.renew(id: 9, now: at(100)) }
        #expect(try f.lessor.renew(id: 2, now: at(101)) == 20)

        f.lessor.restoreAttachments([d("a"): 1, d("b"): 2, d("c"): 9])
        #expect(f.lessor.timeToLive(id: 1, now: at(101))?.keys == [d("a")])
        #expect(f.lessor.timeToLive(id: 2, now: at(101))?.keys == [d("b")])
        #expect(try f.lessor.revoke(id: 1) == [d("a")])
        try f.backend.close()
        try s.backend.close()
    }

    @Test func reloadOnAFollowerSetsNoExpiries() throws {
        let s = try source()
        let f = try Fixture()
        _ = try f.lessor.grant(id: 9, ttlSeconds: 60, now: .zero)

        try f.backend.replace(withFileAt: try receiveSnapshot(of: s.backend, in: f.dir))
        try f.lessor.reload(now: at(100), extend: .seconds(2))
        #expect(f.lessor.leases() == [1, 2, 3])
        #expect(!f.lessor.isPrimary)
        #expect(f.lessor.nextDeadline() == nil)
        #expect(f.lessor.timeToLive(id: 1, now: at(100))?.remainingTTL == 4)
        #expect(f.lessor.timeToLive(id: 2, now: at(100))?.remainingTTL == 20)
        f.lessor.promote(now: at(200), extend: .zero)
        #expect(f.lessor.timeToLive(id: 2, now: at(200))?.remainingTTL == 20)
        try f.backend.close()
        try s.backend.close()
    }

    @Test func restoreAttachmentsReplacesEarlierAttachments() throws {
        let f = try Fixture()
        _ = try f.lessor.grant(id: 1, ttlSeconds: 60, now: .zero)
        _ = try f.lessor.grant(id: 2, ttlSeconds: 60, now: .zero)
        f.lessor.restoreAttachments([d("x"): 1, d("y"): 2])
        f.lessor.apply(events: [putEvent("z", lease: 2)])
        f.lessor.restoreAttachments([d("w"): 1])
        #expect(f.lessor.timeToLive(id: 1, now: .zero)?.keys == [d("w")])
        #expect(f.lessor.timeToLive(id: 2, now: .zero)?.keys == [])
        #expect(try f.lessor.revoke(id: 2) == [])
        try f.backend.close()
    }
}
