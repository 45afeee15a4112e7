import EtcdProto
@testable import EtcdServer
import Foundation
import Locks
import MVCC
import Testing

/// Leases and watchers on a member: applied through raft, expired by the
/// leader, and their effects (deletes) delivered to watchers.
@Suite struct MemberLeaseWatchTests {
    /// Fast timings: a 10 ms heartbeat and 100 ms election timeout give a
    /// minimum lease TTL of 1 s.
    static func fastConfig(_ dir: String) -> ServerConfig {
        var config = ServerConfig(name: "m1", dataDir: dir)
        config.heartbeatIntervalMilliseconds = 10
        config.electionTimeoutMilliseconds = 100
        return config
    }

    static func grant(_ member: Member, ttl: Int64, id: Int64 = 0) async throws -> Etcdserverpb_LeaseGrantResponse {
        var request = Etcdserverpb_LeaseGrantRequest()
        request.ttl = ttl
        request.id = id
        return try await member.leaseGrant(request)
    }

    static func put(_ key: String, lease: Int64) -> Etcdserverpb_PutRequest {
        var request = MemberTests.put(key, "v")
        request.lease = lease
        return request
    }

    @Test func minimumTTLFollowsTheElectionTimeout() {
        #expect(ServerConfig().minLeaseTTLSeconds == 2)
        #expect(Self.fastConfig("/x").minLeaseTTLSeconds == 1)
    }

    @Test func grantPutRevokeAndErrors() async throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let member = try Member(config: ServerConfig(name: "m1", dataDir: dir))
        defer { member.stop() }

        let granted = try await Self.grant(member, ttl: 1)
        #expect(granted.id > 0)
        #expect(granted.ttl == 2, "raised to the minimum TTL")
        let chosen = try await Self.grant(member, ttl: 100, id: 42)
        #expect(chosen.id == 42)
        await #expect(throws: EtcdError.leaseExists) { try await Self.grant(member, ttl: 100, id: 42) }
        await #expect(throws: EtcdError.leaseTTLTooLarge) { try await Self.grant(member, ttl: 9_000_000_001) }
        await #expect(throws: EtcdError.leaseNotFound) { try await member.put(Self.put("k", lease: 7)) }

        _ = try await member.put(Self.put("a", lease: 42))
        _ = try await member.put(Self.put("b", lease: 42))
        let before = try await member.put(MemberTests.put("other", "x")).header.revision
        #expect(member.leaseTimeToLive(id: 42)?.keys == [Data("a".utf8), Data("b".utf8)])

        var revoke = Etcdserverpb_LeaseRevokeRequest()
        revoke.id = 42
        _ = try await member.leaseRevoke(revoke)
        #expect(member.leaseTimeToLive(id: 42) == nil)
        let all = try await member.range(MemberTests.get("a"))
        #expect(all.kvs.isEmpty)
        // Both keys went in one revision.
        #expect(all.header.revision == before + 1)
        await #expect(throws: EtcdError.leaseNotFound) { try await member.leaseRevoke(revoke) }
        #expect(throws: EtcdError.leaseNotFound) { try member.leaseRenew(id: 42) }
    }

    /// Lease time comes from a fake clock (the member's environment clock),
    /// so a slow machine cannot make a lease expire early (or late).
    static func fakeClockMember(_ dir: String, _ clock: FakeClock) throws -> Member {
        var environment = MemberEnvironment()
        environment.now = { clock.now }
        return try Member(config: fastConfig(dir), environment: environment)
    }

    /// Waits until the member's loop has taken a tick at the clock's current
    /// time (where the leader looks for expired leases), then for a put
    /// proposed after it: any revoke that tick proposed is applied by then.
    static func afterNextTick(_ member: Member) async throws {
        let ticks = member.ticks
        try await waitUntil { member.ticks > ticks }
        _ = try await member.put(MemberTests.put("tick-barrier", "x"))
    }

    @Test func expiredLeaseIsRevokedAndWatchersSeeTheDelete() async throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let clock = FakeClock()
        let member = try Self.fakeClockMember(dir, clock)
        defer { member.stop() }
        let lease = try await Self.grant(member, ttl: 5)
        let put = try await member.put(Self.put("short", lease: lease.id))

        let sink = CollectingSink()
        _ = member.watchable.watch(
            watchID: 1, key: Data("short".utf8), rangeEnd: Data(), startRevision: put.header.revision,
            prevKV: false, filters: [], sink: sink)
        // Not yet: 4.9 s of its 5 (+ the election timeout granted on promote).
        clock.advance(by: .milliseconds(4_900))
        try await Self.afterNextTick(member)
        #expect(try await member.range(MemberTests.get("short")).kvs.count == 1)
        #expect(member.leaseTimeToLive(id: lease.id) != nil)

        clock.advance(by: .milliseconds(300))
        try await Self.waitUntil { sink.events.count >= 2 }
        #expect(sink.events.map(\.type) == [.put, .delete])
        #expect(member.leaseTimeToLive(id: lease.id) == nil)
        #expect(try await member.range(MemberTests.get("short")).kvs.isEmpty)
    }

    @Test func keepAliveHoldsTheLease() async throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let clock = FakeClock()
        let member = try Self.fakeClockMember(dir, clock)
        defer { member.stop() }
        let lease = try await Self.grant(member, ttl: 2)
        _ = try await member.put(Self.put("kept", lease: lease.id))
        // Ten seconds of fake time, renewed every second.
        for _ in 0..<10 {
            clock.advance(by: .seconds(1))
            #expect(try member.leaseRenew(id: lease.id) == 2)
        }
        try await Self.afterNextTick(member)
        #expect(try await member.range(MemberTests.get("kept")).kvs.count == 1)
        #expect(member.leaseTimeToLive(id: lease.id)?.remainingTTL == 2)
        // Without keep-alives it runs out.
        clock.advance(by: .seconds(3))
        try await Self.waitUntil { member.leaseTimeToLive(id: lease.id) == nil }
        #expect(try await member.range(MemberTests.get("kept")).kvs.isEmpty)
    }

    /// Waits (at most 10 s of real time) for `condition`; fails the test
    /// when it does not come true.
    static func waitUntil(_ condition: () -> Bool, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while !condition() && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        try #require(condition(), "condition still false after 10 s", sourceLocation: sourceLocation)
    }

    @Test func leasesAndAttachmentsSurviveARestart() async throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var member = try Member(config: ServerConfig(name: "m1", dataDir: dir))
        let lease = try await Self.grant(member, ttl: 300)
        _ = try await member.put(Self.put("held", lease: lease.id))
        member.stop()

        member = try Member(config: ServerConfig(name: "m1", dataDir: dir))
        defer { member.stop() }
        let info = try #require(member.leaseTimeToLive(id: lease.id))
        #expect(info.grantedTTL == 300)
        #expect(info.keys == [Data("held".utf8)])
        #expect(member.leaseIDsGranted() == [lease.id])
    }
}

/// A clock that moves only when told to.
final class FakeClock: Sendable {
    private let origin = ContinuousClock.now
    private let time = Mutex(Duration.seconds(1000))
    var now: ContinuousClock.Instant { origin + time.withLock { $0 } }
    func advance(by step: Duration) { time.withLock { $0 += step } }
}

/// Collects what the watchable store delivers.
final class CollectingSink: WatchSink, @unchecked Sendable {
    private let deliveries = Mutex<[WatchDelivery]>([])
    func offer(_ delivery: WatchDelivery) -> Bool {
        deliveries.withLock { $0.append(delivery) }
        return true
    }
    var events: [Mvccpb_Event] { deliveries.withLock { $0.flatMap(\.events) } }
}
