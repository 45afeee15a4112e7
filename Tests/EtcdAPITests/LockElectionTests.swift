import EtcdAPI
import EtcdGRPC
import EtcdProto
@testable import EtcdServer
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Locks
import Testing

/// v3lockpb.Lock and v3electionpb.Election over gRPC, with several clients
/// (each its own connection) against one member.
@Suite struct LockElectionTests {
    @Test func twoClientsContendingForALockNeverOverlap() async throws {
        try await withServedMemberClients(2) { member, clients in
            let inside = CriticalSection()
            try await withThrowingTaskGroup { group in
                for client in clients {
                    group.addTask {
                        let lock = V3lockpb_Lock.Client(wrapping: client)
                        let kv = Etcdserverpb_KV.Client(wrapping: client)
                        // Long enough for the 100 rounds on a loaded machine (nothing keeps it alive).
                        let lease = try await grantLease(client, ttl: 600)
                        for _ in 0..<100 {
                            var request = V3lockpb_LockRequest()
                            request.name = Data("mutex".utf8)
                            request.lease = lease
                            let held = try await lock.lock(request)
                            inside.enter()
                            // A read-modify-write that loses updates unless exclusive.
                            var get = Etcdserverpb_RangeRequest()
                            get.key = Data("counter".utf8)
                            let count = try await kv.range(get).kvs.first.flatMap { Int(String(decoding: $0.value, as: UTF8.self)) } ?? 0
                            _ = try await kv.put(WatchServiceTests.put("counter", "\(count + 1)"))
                            inside.leave()
                            var unlock = V3lockpb_UnlockRequest()
                            unlock.key = held.key
                            _ = try await lock.unlock(unlock)
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(inside.state == (0, 1, 200))
            var get = Etcdserverpb_RangeRequest()
            get.key = Data("counter".utf8)
            #expect(try await member.range(get).kvs.first?.value == Data("200".utf8))
        }
    }

    @Test func aHoldersLeaseExpiryReleasesTheLock() async throws {
        try await withServedMemberClients(2) { member, clients in
            let (a, b) = (V3lockpb_Lock.Client(wrapping: clients[0]), V3lockpb_Lock.Client(wrapping: clients[1]))
            // 5 s: a loaded CI machine took over 2 s from the grant to the
            // lock, which then found the lease gone.
            let shortLease = try await grantLease(clients[0], ttl: 5)
            var request = V3lockpb_LockRequest()
            request.name = Data("expiring".utf8)
            request.lease = shortLease
            let first = try await a.lock(request)
            #expect(first.key == Data("expiring/\(String(UInt64(bitPattern: shortLease), radix: 16))".utf8))

            request.lease = try await grantLease(clients[1], ttl: 60)
            let second = try await b.lock(request)
            // B holds it only because A's lease ran out: A's key went with it.
            var get = Etcdserverpb_RangeRequest()
            get.key = first.key
            #expect(try await member.range(get).kvs.isEmpty)
            #expect(second.header.revision > first.header.revision)
            var ttl = Etcdserverpb_LeaseTimeToLiveRequest()
            ttl.id = shortLease
            #expect(try await Etcdserverpb_Lease.Client(wrapping: clients[1]).leaseTimeToLive(ttl).ttl == -1)
        }
    }

    @Test func lockErrorsAsEtcd() async throws {
        try await withServedMemberClients(1) { _, clients in
            let lock = V3lockpb_Lock.Client(wrapping: clients[0])
            var request = V3lockpb_LockRequest()
            request.name = Data("l".utf8)
            request.lease = 0x1234
            let error = await #expect(throws: RPCError.self) { _ = try await lock.lock(request) }
            // UNKNOWN, as etcd 3.4 answers (its in-process client's errors are no gRPC statuses).
            #expect(error?.code == .unknown)
            #expect(error?.message == "etcdserver: requested lease not found")
            var unlock = V3lockpb_UnlockRequest()
            unlock.key = Data()
            let noKey = await #expect(throws: RPCError.self) { _ = try await lock.unlock(unlock) }
            #expect(noKey?.code == .unknown && noKey?.message == "etcdserver: key is not provided")
            // Without a lease the lock gets one of its own (60 s, as etcd's session).
            request.lease = 0
            let held = try await lock.lock(request)
            #expect(held.key.starts(with: Data("l/".utf8)))
        }
    }

    @Test func campaignObserveProclaimResignAndSessionLoss() async throws {
        try await withServedMemberClients(4) { member, clients in
            let election = clients.map { V3electionpb_Election.Client(wrapping: $0) }
            let name = Data("e".utf8)
            let noLeader = await #expect(throws: RPCError.self) {
                var leader = V3electionpb_LeaderRequest()
                leader.name = name
                _ = try await election[0].leader(leader)
            }
            #expect(noLeader?.code == .unknown && noLeader?.message == "election: no leader")

            let leases = [try await grantLease(clients[0], ttl: 60), try await grantLease(clients[1], ttl: 60),
                          try await grantLease(clients[2], ttl: 60)]
            func campaign(_ i: Int, _ value: String) async throws -> V3electionpb_CampaignResponse {
                var request = V3electionpb_CampaignRequest()
                request.name = name
                request.lease = leases[i]
                request.value = Data(value.utf8)
                return try await election[i].campaign(request)
            }
            let observed = ObservedValues()
            let observer = Task {
                var request = V3electionpb_LeaderRequest()
                request.name = name
                try await election[3].observe(request) { response in
                    for try await message in response.messages { observed.append(String(decoding: message.kv.value, as: UTF8.self)) }
                }
            }
            defer { observer.cancel() }

            let first = try await campaign(0, "one")
            try await observed.await(["one"])
            // Two more candidates, in this order, both waiting behind the leader.
            let second = Task { try await campaign(1, "two") }
            try await awaitCandidates(member, name, count: 2)
            let third = Task { try await campaign(2, "three") }
            try await awaitCandidates(member, name, count: 3)
            var leaderRequest = V3electionpb_LeaderRequest()
            leaderRequest.name = name
            #expect(String(decoding: try await election[1].leader(leaderRequest).kv.value, as: UTF8.self) == "one")

            var proclaim = V3electionpb_ProclaimRequest()
            proclaim.leader = first.leader
            proclaim.value = Data("one again".utf8)
            _ = try await election[0].proclaim(proclaim)
            try await observed.await(["one", "one again"])

            var resign = V3electionpb_ResignRequest()
            resign.leader = first.leader
            _ = try await election[0].resign(resign)
            let secondLeader = try await second.value
            #expect(secondLeader.leader.lease == leases[1])
            try await observed.await(["one", "one again", "two"])
            // The old leader can no longer proclaim.
            let notLeader = await #expect(throws: RPCError.self) { _ = try await election[0].proclaim(proclaim) }
            #expect(notLeader?.code == .unknown && notLeader?.message == "election: not leader")

            // The leader's session (lease) is lost: the next candidate leads.
            var revoke = Etcdserverpb_LeaseRevokeRequest()
            revoke.id = leases[1]
            _ = try await Etcdserverpb_Lease.Client(wrapping: clients[1]).leaseRevoke(revoke)
            let thirdLeader = try await third.value
            #expect(thirdLeader.leader.lease == leases[2])
            try await observed.await(["one", "one again", "two", "three"])

            let missing = await #expect(throws: RPCError.self) { _ = try await election[2].resign(V3electionpb_ResignRequest()) }
            #expect(missing?.code == .unknown && missing?.message == "\"leader\" field must be provided")
        }
    }

    /// Waits until `count` candidates' keys exist under the election's prefix (within 10 s).
    func awaitCandidates(_ member: Member, _ name: Data, count: Int) async throws {
        var range = Etcdserverpb_RangeRequest()
        range.key = name + Data("/".utf8)
        range.rangeEnd = name + Data("0".utf8)
        range.countOnly = true
        let deadline = ContinuousClock.now + .seconds(10)
        while try await member.range(range).count < count {
            try #require(ContinuousClock.now < deadline, "candidates did not appear")
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// Who is inside a critical section: now, at most at once, and entries in all.
final class CriticalSection: Sendable {
    private let counts = Mutex((now: 0, most: 0, entries: 0))

    func enter() {
        counts.withLock {
            $0.now += 1
            $0.most = max($0.most, $0.now)
            $0.entries += 1
        }
    }

    func leave() { counts.withLock { $0.now -= 1 } }

    var state: (now: Int, most: Int, entries: Int) { counts.withLock { $0 } }
}

/// Values an Observe stream delivered, awaited in order.
final class ObservedValues: Sendable {
    private let values = Mutex<[String]>([])

    func append(_ value: String) { values.withLock { $0.append(value) } }

    func await(_ expected: [String]) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while values.withLock({ $0 }) != expected {
            let now = values.withLock { $0 }
            try #require(ContinuousClock.now < deadline && expected.starts(with: now), "observed \(now), expected \(expected)")
            try await Task.sleep(for: .milliseconds(10))
        }
    }
}

func grantLease(_ client: GRPCClient<HTTP2ClientTransport.Posix>, ttl: Int64) async throws -> Int64 {
    var request = Etcdserverpb_LeaseGrantRequest()
    request.ttl = ttl
    return try await Etcdserverpb_Lease.Client(wrapping: client).leaseGrant(request).id
}

/// A served member and `count` clients, each on its own connection.
func withServedMemberClients(_ count: Int, _ body: (Member, [GRPCClient<HTTP2ClientTransport.Posix>]) async throws -> Void) async throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("recipes-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let member = try Member(config: ServerConfig(name: "recipes", dataDir: dir))
    defer { member.stop() }
    let listener = ClientListener(address: try ListenAddress(parsing: "http://127.0.0.1:0"), member: member)
    try await withThrowingTaskGroup { group in
        group.addTask { try await listener.serve() }
        defer { listener.stop() }
        let port = try #require(try await listener.boundPort())
        var clients: [GRPCClient<HTTP2ClientTransport.Posix>] = []
        for _ in 0..<count {
            let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
            let client = GRPCClient(transport: transport)
            group.addTask { try await client.runConnections() }
            clients.append(client)
        }
        try await body(member, clients)
        for client in clients { client.beginGracefulShutdown() }
        listener.stop()
        try await group.waitForAll()
    }
}
