import Backend
import EtcdProto
import Foundation
import SwiftProtobuf
import Testing

@testable import Lease

@Suite struct LessorPersistenceTests {
    /// The `lease` bucket's entries, decoded.
    private func stored(_ backend: Backend) throws -> [[UInt8]: Leasepb_Lease] {
        try backend.read { tx in
            var out: [[UInt8]: Leasepb_Lease] = [:]
            try tx.forEach(.lease) { key, value in
                out[Array(key)] = try Leasepb_Lease(serializedBytes: Array(value))
                return true
            }
            return out
        }
    }

    private func lease(_ id: Int64, ttl: Int64, remaining: Int64 = 0) -> Leasepb_Lease {
        var l = Leasepb_Lease()
        l.id = id
        l.ttl = ttl
        l.remainingTtl = remaining
        return l
    }

    @Test func leasesAreStoredAsEtcdStoresThem() throws {
        let f = try Fixture()
        _ = try f.lessor.grant(id: 0x0102_0304_0506_0708, ttlSeconds: 30, now: .zero)
        _ = try f.lessor.grant(id: 5, ttlSeconds: 1000, now: .zero)
        try f.lessor.checkpoint(id: 5, remainingTTLSeconds: 400, now: .zero)
        let entries = try stored(f.backend)
        #expect(entries == [
            [1, 2, 3, 4, 5, 6, 7, 8]: lease(0x0102_0304_0506_0708, ttl: 30),
            [0, 0, 0, 0, 0, 0, 0, 5]: lease(5, ttl: 1000, remaining: 400),
        ])
        // Byte for byte the canonical encoding (what Go's gogoproto writes).
        let raw = try f.backend.read { tx in try tx.get(.lease, [0, 0, 0, 0, 0, 0, 0, 5]) }
        #expect(raw == (try lease(5, ttl: 1000, remaining: 400).serializedBytes() as [UInt8]))
        #expect(raw == [0x08, 0x05, 0x10, 0xE8, 0x07, 0x18, 0x90, 0x03])
        _ = try f.lessor.revoke(id: 5)
        #expect(try stored(f.backend).keys.sorted { $0.lexicographicallyPrecedes($1) } == [[1, 2, 3, 4, 5, 6, 7, 8]])
        // Negative TTLs and ids encode as 10-byte varints, as in Go.
        #expect(LeaseStorage.value(id: -1, ttl: 1, remainingTTL: 0)
            == (try lease(-1, ttl: 1).serializedBytes() as [UInt8]))
    }

    @Test func aRestartRestoresLeasesWithTheirCheckpoints() throws {
        let f = try Fixture()
        f.lessor.promote(now: .zero, extend: .zero)
        _ = try f.lessor.grant(id: 1, ttlSeconds: 100, now: .zero)
        _ = try f.lessor.grant(id: 2, ttlSeconds: 20, now: .zero)
        _ = try f.lessor.grant(id: 3, ttlSeconds: 50, now: .zero)
        try f.lessor.checkpoint(id: 1, remainingTTLSeconds: 40, now: at(60))
        _ = try f.lessor.revoke(id: 3)

        let g = try f.restarted()
        #expect(g.lessor.leases() == [1, 2])
        #expect(!g.lessor.isPrimary)
        // Loaded leases do not expire before a promotion.
        #expect(g.lessor.expiredLeases(now: at(10_000), limit: 10).isEmpty)
        #expect(g.lessor.timeToLive(id: 1, now: .zero) == LeaseInfo(id: 1, grantedTTL: 100, remainingTTL: 40, keys: []))
        #expect(g.lessor.timeToLive(id: 2, now: .zero) == LeaseInfo(id: 2, grantedTTL: 20, remainingTTL: 20, keys: []))
        g.lessor.promote(now: at(500), extend: .seconds(1))
        #expect(g.lessor.expiredLeases(now: at(521) - tick, limit: 10).isEmpty)
        #expect(g.lessor.expiredLeases(now: at(521), limit: 10) == [2])
        _ = try g.lessor.revoke(id: 2)
        #expect(g.lessor.expiredLeases(now: at(541) - tick, limit: 10).isEmpty)
        #expect(g.lessor.expiredLeases(now: at(541), limit: 10) == [1])
        try g.backend.close()
    }

    @Test func loadedTTLsAreRaisedToTheMinimum() throws {
        let f = try Fixture()
        _ = try f.lessor.grant(id: 1, ttlSeconds: 2, now: .zero)
        let g = try f.restarted(LessorConfig(minTTLSeconds: 8))
        #expect(g.lessor.timeToLive(id: 1, now: .zero)?.grantedTTL == 8)
        try g.backend.close()
    }

    @Test func aCorruptEntryIsReportedNotIgnored() throws {
        let dir = TemporaryDirectory()
        let backend = try dir.openBackend()
        try backend.put(.lease, key: [0, 0, 0, 0, 0, 0, 0, 1], value: [0xFF, 0xFF])
        #expect {
            _ = try Lessor(backend: backend, config: LessorConfig(minTTLSeconds: 1))
        } throws: { error in
            guard case .backend(let detail) = error as? LeaseError else { return false }
            return detail.contains("lease")
        }
        try backend.close()
    }

    @Test func backendFailuresAreLeaseErrors() throws {
        let f = try Fixture()
        _ = try f.lessor.grant(id: 1, ttlSeconds: 5, now: .zero)
        try f.backend.close()
        #expect(throws: LeaseError.backend(BackendError.closed.description)) {
            try f.lessor.grant(id: 2, ttlSeconds: 5, now: .zero)
        }
        // A failed write leaves memory untouched.
        #expect(f.lessor.leases() == [1])
        #expect(throws: LeaseError.backend(BackendError.closed.description)) { try f.lessor.revoke(id: 1) }
        #expect(f.lessor.leases() == [1])
    }
}
