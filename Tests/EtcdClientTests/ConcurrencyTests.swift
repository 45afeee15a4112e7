@testable import EtcdClient
import EtcdProto
import Foundation
import Locks
import Testing

@Suite struct ConcurrencyRecipeTests {
    @Test func mutexExcludesSecondClientUntilUnlock() async throws {
        try await withEtcd { etcd, clientA in
            let clientB = try etcd.client()
            defer { clientB.close() }
            let sessionA = try await Session(client: clientA, ttl: 10)
            let sessionB = try await Session(client: clientB, ttl: 10)
            let lockA = EtcdMutex(session: sessionA, name: "locks/job")
            let lockB = EtcdMutex(session: sessionB, name: "locks/job")
            try await lockA.lock()
            #expect(lockA.key == "locks/job/" + String(UInt64(bitPattern: sessionA.leaseID), radix: 16))
            let acquired = Locked(false)
            let waiter = Task {
                try await lockB.lock()
                acquired.withLock { $0 = true }
            }
            // B is in line once its key is under the lock's prefix; a mutex
            // that did not wait would have returned by then.
            try await eventually("B queued for the lock") {
                try await clientA.get("locks/job/", options: .prefix).kvs.count == 2
            }
            #expect(acquired.withLock { $0 } == false, "B got the lock while A held it")
            let sessionC = try await Session(client: clientB, ttl: 10)
            #expect(try await EtcdMutex(session: sessionC, name: "locks/job").tryLock() == false)
            try await sessionC.close()
            try await lockA.unlock()
            try await withTimeout(10, "lock hand-over") { try await waiter.value }
            #expect(acquired.withLock { $0 })
            // Fencing tokens grow with each holder.
            #expect(lockB.revision > lockA.header.revision)
            try await lockB.unlock()
            #expect(try await lockA.tryLock())
            try await lockA.unlock()
            try await sessionA.close()
            try await sessionB.close()
        }
    }

    @Test func cancelledWaiterLeavesTheQueue() async throws {
        try await withEtcd { _, client in
            let holder = try await Session(client: client, ttl: 10)
            let waiter = try await Session(client: client, ttl: 10)
            let held = EtcdMutex(session: holder, name: "q")
            try await held.lock()
            let queued = EtcdMutex(session: waiter, name: "q")
            let attempt = Task { try await queued.lock() }
            try await eventually("waiter queued") { try await client.get("q/", options: .prefix).count == 2 }
            attempt.cancel()
            await #expect(throws: (any Error).self) { try await attempt.value }
            #expect(try await client.get("q/", options: .prefix).count == 1, "the cancelled waiter's key must be gone")
            try await held.unlock()
            try await holder.close()
            try await waiter.close()
        }
    }

    @Test func lockReleasedWhenSessionEnds() async throws {
        try await withEtcd { _, client in
            let s1 = try await Session(client: client, ttl: 2)
            let s2 = try await Session(client: client, ttl: 5)
            try await EtcdMutex(session: s1, name: "l").lock()
            let second = EtcdMutex(session: s2, name: "l")
            let waiting = Task { try await second.lock() }
            s1.orphan() // stop keep-alive: the lease expires after 2 s
            try await withTimeout(10, "lock after session expiry") { try await waiting.value }
            try await second.unlock()
            try await s2.close()
        }
    }

    @Test func electionHandOverAndObserve() async throws {
        try await withEtcd { etcd, clientA in
            let clientB = try etcd.client()
            defer { clientB.close() }
            let sA = try await Session(client: clientA, ttl: 10)
            let sB = try await Session(client: clientB, ttl: 10)
            let eA = Election(session: sA, name: "elect/leader")
            let eB = Election(session: sB, name: "elect/leader")
            await #expect(throws: EtcdClientError.electionNoLeader) { try await eA.leader() }
            try await eA.campaign("A")
            #expect(try await eB.leader().kvs.first?.value.string == "A")
            let observedValues = Locked<[String]>([])
            let observed = Task {
                var values: [String] = []
                for try await leader in Election.observe(client: clientB, name: "elect/leader") {
                    values.append(leader.kvs.first?.value.string ?? "")
                    observedValues.withLock { $0 = values }
                    if values.count >= 3 { break }
                }
                return values
            }
            let bWon = Locked(false)
            let campaignB = Task {
                try await eB.campaign("B")
                bWon.withLock { $0 = true }
            }
            // B is a candidate once its key is under the election's prefix;
            // a campaign that did not wait would have returned by then.
            try await eventually("B campaigning") {
                try await clientA.get("elect/leader/", options: .prefix).kvs.count == 2
            }
            #expect(!bWon.withLock { $0 })
            try await eA.proclaim("A2")
            try await eventually("the observer saw A2") { observedValues.withLock { $0 }.contains("A2") }
            try await eA.resign()
            try await withTimeout(10, "B elected") { try await campaignB.value }
            #expect(try await eA.leader().kvs.first?.value.string == "B")
            await #expect(throws: EtcdClientError.electionNotLeader) { try await eA.proclaim("again") }
            let values = try await withTimeout(10, "observe") { try await observed.value }
            #expect(values == ["A", "A2", "B"])
            try await eB.resign()
            try await sA.close()
            try await sB.close()
        }
    }

    @Test func stmSerializesConcurrentIncrements() async throws {
        try await withEtcd { etcd, client in
            let other = try etcd.client()
            defer { other.close() }
            try await client.put("counter", "0")
            try await withThrowingTaskGroup(of: Void.self) { group in
                for c in [client, other] {
                    group.addTask {
                        for _ in 0..<10 {
                            try await c.stm(retries: 50) { tx in
                                let n = Int(try await tx.getString("counter") ?? "0") ?? 0
                                tx.put("counter", String(n + 1))
                                tx.put("last", "x")
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await client.get("counter").kvs.first?.value.string == "20")
        }
    }

    @Test func serviceRegistrationAndLiveDiscovery() async throws {
        try await withEtcd { etcd, client in
            let registry = ServiceRegistry(client: client, service: "services/api")
            let s1 = try await Session(client: client, ttl: 10)
            let s2 = try await Session(client: client, ttl: 10)
            try await registry.register(address: "10.0.0.1:80", session: s1)
            let lists = Locked<[[ServiceEndpoint]]>([])
            let watcher = Task {
                for try await list in registry.watchEndpoints() { lists.withLock { $0.append(list) } }
            }
            defer { watcher.cancel() }
            func latest() -> [String]? { lists.withLock { $0.last?.map(\.address) } }
            try await eventually("initial list") { latest() == ["10.0.0.1:80"] }
            try await registry.register(address: "10.0.0.2:80", metadata: "{\"weight\":2}", session: s2)
            try await eventually("two endpoints") { latest() == ["10.0.0.1:80", "10.0.0.2:80"] }
            #expect(lists.withLock { $0.last?.last?.metadata } == "{\"weight\":2}")
            try await s1.close() // revoking the lease removes the registration
            try await eventually("one endpoint left") { latest() == ["10.0.0.2:80"] }
            #expect(try await registry.endpoints().map(\.address) == ["10.0.0.2:80"])
            try await s2.close()
        }
    }
}

/// Polls `condition` every 50 ms for at most `seconds`.
func eventually(_ what: String, seconds: Double = 10, _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw TestError("\(what): not reached within \(seconds) s")
}

/// The recipes' streams are bounded: a consumer that stops reading costs at
/// most the buffer, and gets the newest values once it reads again.
@Suite struct RecipeStreamBoundTests {
    @Test func aStalledConsumerKeepsOnlyTheNewest() async throws {
        let (stream, continuation) = AsyncThrowingStream<Int, any Error>.makeLatest(keeping: Election.observedBuffer)
        for value in 0..<1_000 { continuation.yield(value) }
        continuation.finish()
        var seen: [Int] = []
        for try await value in stream { seen.append(value) }
        #expect(seen == Array(1_000 - Election.observedBuffer..<1_000))
    }
}
