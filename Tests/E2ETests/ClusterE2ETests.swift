import Checkers
import EtcdGRPC
import EtcdProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Raft
import Testing

/// Clusters of our `etcd` binaries on loopback, driven by the Go etcdctl.
@Suite(.serialized) struct ClusterE2ETests {
    @Test func threeMembersServeTheGoEtcdctl() throws {
        let cluster = try ClusterProcesses(size: 3)
        defer { cluster.shutDown() }
        _ = try cluster.waitForLeader()

        // A write through each member, read back linearizably through every other.
        for i in 0..<3 {
            #expect(try cluster.etcdctl(["put", "key\(i)", "value\(i)"], endpoint: cluster.endpoint(i)).out == "OK\n")
        }
        for i in 0..<3 {
            let all = try cluster.etcdctl(["get", "key", "--prefix", "--print-value-only"], endpoint: cluster.endpoint(i))
            #expect(all.out == "value0\nvalue1\nvalue2\n", "member \(i): \(all)")
        }

        let members = try cluster.etcdctl(["member", "list"]).out.split(separator: "\n")
        #expect(members.count == 3)
        for i in 0..<3 {
            #expect(members.contains { $0.contains("started, n\(i), http://127.0.0.1:\(cluster.nodes[i].peerPort), http://127.0.0.1:\(cluster.nodes[i].clientPort), false") })
        }
        let table = try cluster.etcdctl(["endpoint", "status", "--cluster", "-w", "table"])
        #expect(table.status == 0, "\(table)")
        let rows = table.out.split(separator: "\n").filter { $0.hasPrefix("| http://") }
        #expect(rows.count == 3, "\(table.out)")
        #expect(rows.filter { $0.contains("|      true |") }.count == 1, "exactly one leader: \(table.out)")
        let health = try cluster.etcdctl(["endpoint", "health", "--cluster"])
        #expect(health.err.components(separatedBy: "is healthy").count - 1 == 3, "\(health)")
        let hashes = try cluster.convergedHashes()
        #expect(hashes.count == 3 && Set(hashes).count == 1, "\(hashes)")
        #expect(cluster.log(0).contains("published local member to cluster through raft"))

        // Keep-alives and TimeToLive on a follower reach the leader's lessor.
        let leader = try cluster.waitForLeader()
        let leaderIndex = try #require(try cluster.index(ofMemberID: leader))
        let follower = cluster.endpoint((leaderIndex + 1) % 3)
        let grant = try cluster.etcdctl(["lease", "grant", "30"], endpoint: follower)
        let id = try #require(grant.out.split(separator: " ").dropFirst().first.map(String.init), "\(grant)")
        let renewed = try cluster.etcdctl(["lease", "keep-alive", "--once", id], endpoint: follower)
        #expect(renewed.out == "lease \(id) keepalived with TTL(30)\n", "\(renewed)")
        let ttl = try cluster.etcdctl(["lease", "timetolive", id], endpoint: follower)
        #expect(ttl.out.contains("granted with TTL(30s)") && !ttl.out.contains("already expired"), "\(ttl)")

        // move-leader hands leadership to the follower it names.
        let targetIndex = (leaderIndex + 1) % 3
        let targetLine = try #require(members.first { $0.contains(", n\(targetIndex), ") })
        let targetID = String(targetLine.prefix { $0 != "," })
        let moved = try cluster.etcdctl(["move-leader", targetID])
        #expect(moved.status == 0 && moved.out.contains("Leadership transferred from"), "\(moved)")
        let newLeader = try cluster.waitForLeader(excluding: leader)
        #expect(UInt64(newLeader) == UInt64(targetID, radix: 16), "\(newLeader) vs \(targetID)")
    }

    @Test func killingTheLeaderElectsAnotherAndTheOldOneCatchesUp() throws {
        let cluster = try ClusterProcesses(size: 3)
        defer { cluster.shutDown() }
        let leader = try cluster.waitForLeader()
        let leaderIndex = try #require(try cluster.index(ofMemberID: leader))
        #expect(try cluster.etcdctl(["put", "before", "1"]).status == 0)

        cluster.kill9(leaderIndex)
        let next = try cluster.waitForLeader(excluding: leader)
        #expect(next != leader)
        let other = (leaderIndex + 1) % 3
        for i in 0..<20 {
            let put = try cluster.etcdctl(["put", "after\(i)", "v"], endpoint: cluster.endpoint(other))
            #expect(put.status == 0, "\(put)")
        }
        try cluster.start(leaderIndex)
        try cluster.waitServing(leaderIndex)
        let hashes = try cluster.convergedHashes()
        #expect(hashes.count == 3 && Set(hashes).count == 1, "\(hashes)")
        let back = try cluster.etcdctl(["get", "after", "--prefix", "--keys-only"], endpoint: cluster.endpoint(leaderIndex))
        #expect(back.out.split(separator: "\n").count == 20, "\(back)")
    }

    /// Two members paused (SIGSTOP): the one left cannot commit, and its
    /// linearizable reads fail instead of answering stale data; once the
    /// others resume, everyone converges.
    @Test func aMinorityCannotCommitOrReadStaleAndRejoins() throws {
        let cluster = try ClusterProcesses(size: 3)
        defer { cluster.shutDown() }
        _ = try cluster.waitForLeader()
        #expect(try cluster.etcdctl(["put", "x", "1"]).status == 0)
        cluster.pause(1)
        cluster.pause(2)
        let put = try cluster.etcdctl(["put", "x", "2", "--command-timeout=3s"], endpoint: cluster.endpoint(0))
        #expect(put.status != 0)
        let linearizable = try cluster.etcdctl(["get", "x", "--command-timeout=3s"], endpoint: cluster.endpoint(0))
        #expect(linearizable.status != 0, "\(linearizable)")
        let local = try cluster.etcdctl(["get", "x", "--consistency=s", "--print-value-only"], endpoint: cluster.endpoint(0))
        #expect(local.out == "1\n")
        cluster.resume(1)
        cluster.resume(2)
        _ = try cluster.waitForLeader()
        #expect(try cluster.etcdctl(["put", "x", "3"], endpoint: cluster.endpoint(0)).status == 0)
        for i in 0..<3 {
            #expect(try cluster.etcdctl(["get", "x", "--print-value-only"], endpoint: cluster.endpoint(i)).out == "3\n")
        }
    }

    @Test func aRestartedMemberFarBehindGetsASnapshot() async throws {
        let cluster = try ClusterProcesses(size: 3, extraArguments: ["--snapshot-count", "100", "--experimental-snapshot-catchup-entries", "20"])
        defer { cluster.shutDown() }
        let leader = try cluster.waitForLeader()
        let leaderIndex = try #require(try cluster.index(ofMemberID: leader))
        let lagging = (leaderIndex + 1) % 3
        cluster.kill9(lagging)
        try await withKVClients(ports: [cluster.nodes[leaderIndex].clientPort]) { clients in
            for i in 0..<400 {
                var put = Etcdserverpb_PutRequest()
                put.key = Data("bulk\(i)".utf8)
                put.value = Data(repeating: UInt8(i % 256), count: 100)
                _ = try await clients[0].put(put)
            }
        }
        try cluster.start(lagging)
        try cluster.waitServing(lagging)
        let hashes = try cluster.convergedHashes()
        #expect(hashes.count == 3 && Set(hashes).count == 1, "\(hashes)")
        #expect(cluster.log(lagging).contains("applied snapshot"))
        #expect(cluster.log(leaderIndex).contains("sending database snapshot") || cluster.log((lagging + 1) % 3).contains("sending database snapshot"))
        let keys = try cluster.etcdctl(["get", "bulk", "--prefix", "--keys-only"], endpoint: cluster.endpoint(lagging))
        #expect(keys.out.split(separator: "\n").count == 400, "\(keys.err)")
    }
}


extension ClusterE2ETests {
    /// A bounded fault loop: kill -9 + restart, SIGSTOP/SIGCONT, a member
    /// cut off both ways, one link cut one way, or every peer link slowed
    /// (through the peer proxies), one fault at a time, under a concurrent
    /// write workload through all
    /// members. Afterwards every member has the same hashKV and every
    /// acknowledged write.
    @Test func faultLoopKeepsEveryAcknowledgedWrite() async throws {
        let cluster = try ClusterProcesses(size: 3, proxied: true)
        defer { cluster.shutDown() }
        _ = try cluster.waitForLeader()
        let ids = try cluster.memberIDs()
        let acknowledged = LockedBox<[String]>([])
        let history = HistoryRecorder()
        let stop = LockedBox(false)
        let seed = UInt64(Date().timeIntervalSince1970)
        var generator = SplitMix64(seed: seed)
        print("fault loop seed \(seed)")
        let ports = cluster.nodes.map(\.clientPort)
        try await withKVClients(ports: ports) { clients in
            try await withThrowingTaskGroup { group in
                for writer in 0..<4 {
                    group.addTask {
                        var n = 0
                        while !stop.value && n < 5_000 {
                            n += 1
                            let key = "w\(writer)-\(n)"
                            var put = Etcdserverpb_PutRequest()
                            put.key = Data(key.utf8)
                            put.value = Data(key.utf8)
                            var options = CallOptions.defaults
                            options.timeout = .seconds(3)
                            do {
                                _ = try await clients[(writer + n) % clients.count].put(put, options: options)
                                acknowledged.update { $0.append(key) }
                            } catch {
                                try await Task.sleep(for: .milliseconds(20))
                            }
                        }
                    }
                }
                // Recorded clients on a few shared keys, for the linearizability check.
                for recorder in 0..<4 {
                    group.addTask {
                        var random = SplitMix64(seed: UInt64(recorder) &* 7919 &+ 17)
                        for n in 0..<500 where !stop.value {
                            let client = clients[Int(random.next() % UInt64(clients.count))]
                            let key = "lin/\(random.next() % 6)"
                            var options = CallOptions.defaults
                            options.timeout = .seconds(3)
                            let invoke = history.now()
                            if random.next() % 5 < 3 {
                                let value = "r\(recorder)-\(n)"
                                var put = Etcdserverpb_PutRequest()
                                put.key = Data(key.utf8)
                                put.value = Data(value.utf8)
                                let input = KVInput.put(key: KVBytes(key), value: KVBytes(value))
                                do {
                                    let response = try await client.put(put, options: options)
                                    history.record(recorder, invoke, input, KVOutput(revision: response.header.revision, result: .put(prevKV: nil)))
                                } catch {
                                    history.record(recorder, invoke, input, nil)
                                }
                            } else {
                                var get = Etcdserverpb_RangeRequest()
                                get.key = Data(key.utf8)
                                if let response = try? await client.range(get, options: options) {
                                    let records = response.kvs.map {
                                        KVRecord(key: KVBytes(Array($0.key)), value: KVBytes(Array($0.value)), createRevision: $0.createRevision,
                                                 modRevision: $0.modRevision, version: $0.version)
                                    }
                                    history.record(recorder, invoke, .get(KVBytes(key)), KVOutput(revision: response.header.revision, result: .range(kvs: records)))
                                }
                                // A failed read changed nothing: it is left out.
                            }
                            try await Task.sleep(for: .milliseconds(80))
                        }
                    }
                }
                // Faults for at most ~40 s, one member at a time.
                let faultsUntil = Date().addingTimeInterval(40)
                var faults = 0
                while Date() < faultsUntil {
                    let victim = Int(generator.next() % 3)
                    let length = Duration.milliseconds(500 + Int(generator.next() % 1500))
                    switch generator.next() % 5 {
                    case 0:
                        cluster.kill9(victim)
                        try await Task.sleep(for: length)
                        try cluster.start(victim)
                    case 1:
                        cluster.pause(victim)
                        try await Task.sleep(for: length)
                        cluster.resume(victim)
                    case 2:
                        cluster.isolate(victim, ids: ids)
                        try await Task.sleep(for: length)
                        cluster.healNetwork()
                    case 3:
                        cluster.cut(from: victim, to: (victim + 1 + Int(generator.next() % 2)) % 3, ids: ids)
                        try await Task.sleep(for: length)
                        cluster.healNetwork()
                    default:
                        let delay = Double(20 + generator.next() % 80) / 1000
                        for proxy in cluster.proxies { proxy.setDelay(delay) }
                        try await Task.sleep(for: length)
                        cluster.healNetwork()
                    }
                    faults += 1
                    try await Task.sleep(for: .milliseconds(1000 + Int(generator.next() % 1000)))
                }
                stop.value = true
                try await group.waitForAll()
                print("fault loop: \(faults) faults, \(acknowledged.value.count) acknowledged writes")
            }
        }
        for i in cluster.nodes.indices { try cluster.waitServing(i) }
        // The recorded history must be linearizable. Other clients' writes
        // to other keys take revisions too, so revisions may have gaps; each
        // key is checked on its own (fast, and it sees stale reads and lost
        // writes; cross-key revision order is what it gives up).
        let operations = history.operations
        let unknown = operations.filter(\.isPending).count
        let checker = LinearizabilityChecker(model: KVModel(revisions: .gapsAllowed, partitionByKey: true))
        let verdict = checker.check(operations, timeout: .seconds(60))
        print("fault loop: checked \(operations.count) operations (\(unknown) with unknown outcome): \(verdict)")
        switch verdict {
        case .linearizable: break
        case .notLinearizable: Issue.record("history not linearizable: \(verdict)")
        case .undecided:
            // Many unknown outcomes can make the search too large; the
            // real-time check below still runs. Never counted as a pass.
            print("fault loop: linearizability undecided within the limit")
        }
        // Real-time order per key: a read that starts after a put returned
        // sees that put or a later one (a stale read fails this at once).
        let stale = HistoryRecorder.staleReads(operations)
        #expect(stale.isEmpty, "stale reads: \(stale.prefix(3))")
        #expect(operations.count > 500)
        let hashes = try cluster.convergedHashes(timeout: 60)
        #expect(hashes.count == 3 && Set(hashes).count == 1, "\(hashes)")
        #expect(acknowledged.value.count > 100)
        for i in cluster.nodes.indices {
            let keys = try cluster.etcdctl(["get", "w", "--prefix", "--keys-only", "--consistency=s"], endpoint: cluster.endpoint(i)).out
            let present = Set(keys.split(separator: "\n").map { String($0) })
            let missing = acknowledged.value.filter { !present.contains($0) }
            #expect(missing.isEmpty, "member \(i) lost \(missing.count) acknowledged writes, e.g. \(missing.prefix(5))")
        }
    }
}

final class LockedBox<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: T
    init(_ value: T) { stored = value }
    var value: T {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }
    func update(_ body: (inout T) -> Void) { lock.withLock { body(&stored) } }
}

/// Client operations with their invoke and return times, for the checkers.
final class HistoryRecorder: @unchecked Sendable {
    private let lock = NSLock()
    private var recorded: [HistoryOperation<KVInput, KVOutput>] = []
    private let start = ContinuousClock.now

    func now() -> UInt64 {
        let elapsed = ContinuousClock.now - start
        return UInt64(elapsed.components.seconds) * 1_000_000_000 + UInt64(elapsed.components.attoseconds / 1_000_000_000)
    }

    /// `output` nil: the outcome is unknown (the call failed or timed out).
    func record(_ client: Int, _ invoke: UInt64, _ input: KVInput, _ output: KVOutput?) {
        let returned = output == nil ? nil : now()
        lock.withLock {
            recorded.append(HistoryOperation(clientID: client, invoke: invoke, returnTime: returned, input: input, output: output))
        }
    }

    var operations: [HistoryOperation<KVInput, KVOutput>] { lock.withLock { recorded } }

    /// Completed reads whose key's mod revision is below the revision of a
    /// put to that key that returned before the read was invoked.
    static func staleReads(_ operations: [HistoryOperation<KVInput, KVOutput>]) -> [String] {
        var puts: [KVBytes: [(returned: UInt64, revision: Int64)]] = [:]
        for op in operations {
            guard case let .put(key, _, _) = op.input, let returned = op.returnTime, let output = op.output else { continue }
            puts[key, default: []].append((returned, output.revision))
        }
        var stale: [String] = []
        for op in operations {
            guard case let .range(range) = op.input, range.isSingleKey, let output = op.output,
                  case let .range(kvs) = output.result else { continue }
            let required = puts[range.key, default: []].filter { $0.returned < op.invoke }.map(\.revision).max() ?? 0
            let seen = kvs.first?.modRevision ?? 0
            if seen < required { stale.append("get(\(range.key)) at \(op.invoke) saw mod revision \(seen), a put at \(required) had returned") }
        }
        return stale
    }
}

extension ClusterE2ETests {
    @Test func theRealTimeCheckCatchesAPlantedStaleRead() {
        let put = HistoryOperation<KVInput, KVOutput>(clientID: 0, invoke: 0, returnTime: 10, input: .put(key: "k", value: "new"),
                                                     output: KVOutput(revision: 5, result: .put(prevKV: nil)))
        let staleGet = HistoryOperation<KVInput, KVOutput>(clientID: 1, invoke: 20, returnTime: 30, input: .get("k"),
            output: KVOutput(revision: 4, result: .range(kvs: [KVRecord(key: "k", value: "old", modRevision: 3)])))
        let freshGet = HistoryOperation<KVInput, KVOutput>(clientID: 1, invoke: 40, returnTime: 50, input: .get("k"),
            output: KVOutput(revision: 5, result: .range(kvs: [KVRecord(key: "k", value: "new", modRevision: 5)])))
        #expect(HistoryRecorder.staleReads([put, freshGet]).isEmpty)
        #expect(HistoryRecorder.staleReads([put, staleGet, freshGet]).count == 1)
        let verdict = LinearizabilityChecker(model: KVModel(revisions: .gapsAllowed, partitionByKey: true))
            .check([put, staleGet, freshGet], timeout: .seconds(5))
        guard case .notLinearizable = verdict else { Issue.record("expected a violation, got \(verdict)"); return }
    }
}
