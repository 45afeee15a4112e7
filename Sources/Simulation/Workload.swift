import Auth
import Checkers
import EtcdProto
import EtcdServer
import Foundation

struct SimClient {
    let id: Int
    var operations = 0
    /// The value this client last read or wrote per key (for CAS txns).
    var lastValue: [String: String] = [:]
}

/// A key put under a lease, read back before the lease can have expired.
struct LeaseCheck {
    var key: String
    var grantInvoke: Int64
    var ttlSeconds: Int64
}

/// Whether a request accepted by a member may still have been applied.
private final class Accepted {
    var synchronous = true
}

/// A value only ever used on the simulation's one thread, passed through
/// the member's `Sendable` completion slots.
struct SimThreadOnly<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

extension SimWorld {
    // MARK: - Clients

    func startWorkload() {
        let keyCount = Int(random.int(2...6))
        keys = (0..<keyCount).map { "k\($0)" }
        for c in 0..<options.clients {
            clients.append(SimClient(id: c))
            schedule(after: random.int(1_000...200_000)) { [self] in nextOperation(c) }
        }
    }

    /// A random up member (paused ones included: their requests just wait).
    func pickNode() -> SimNode? {
        let up = nodes.filter { $0.member != nil && !$0.removed && !$0.corrupted }
        return up.isEmpty ? nil : up[random.index(up.count)]
    }

    func nextOperation(_ c: Int) {
        guard !clientsStopped else { return }
        guard let node = pickNode(), let member = node.member else {
            schedule(after: 100_000) { [self] in nextOperation(c) }
            return
        }
        clients[c].operations += 1
        let n = clients[c].operations
        let key = keys[random.index(keys.count)]
        let roll = random.next() % 100
        inFlight += 1
        let done: () -> Void = { [self] in
            inFlight -= 1
            schedule(after: random.int(0...20_000)) { [self] in nextOperation(c) }
        }
        switch roll {
        case 0..<35:
            put(c, key: key, value: "c\(c)-\(n)", on: member, done)
        case 35..<65:
            linearizableGet(c, key: key, on: member, done)
        case 65..<75:
            serializableGet(key: key, on: member, done)
        case 75..<83:
            delete(c, key: key, on: member, done)
        case 83..<93:
            compareAndSwap(c, key: key, value: "c\(c)-\(n)", on: member, done)
        case 93..<97:
            leasedPut(c, n, on: member, done)
        case 97..<99:
            compact(on: member, done)
        default:
            // The rarest operations: a defragmentation or a snapshot.
            if random.next() % 2 == 0 { defragment(node, done) } else { snapshot(node, done) }
        }
    }

    /// Whether `member` runs on a node whose data is damaged (see Corruption.swift).
    func isCorrupted(_ member: Member) -> Bool {
        nodes.contains { $0.member === member && $0.corrupted }
    }

    func record(_ c: Int, invoke: Int64, _ input: KVInput, _ output: KVOutput?) {
        history.append(HistoryOperation(clientID: c, invoke: UInt64(invoke), returnTime: output == nil ? nil : UInt64(now),
                                        input: input, output: output))
    }

    /// Proposes `request` on `member`; `handle` gets the result, or nil
    /// when the outcome is unknown. A request refused at once, or one raft
    /// dropped for want of a leader, was never applied: `handle` is not
    /// called and `notApplied` runs instead.
    func submitWrite(_ request: Etcdserverpb_InternalRaftRequest, on member: Member, client c: Int? = nil,
                     notApplied: @escaping () -> Void, _ handle: @escaping (Member.ApplyResult?) -> Void) {
        let accepted = Accepted()
        // In auth mode a client acts as its user; every write it gets
        // through must have been permitted (`AuthWorkload.swift`).
        let identity = c.flatMap { authIdentity(client: $0, on: member) }
        let invoke = now
        submit(request, on: member, auth: identity) { [self] result in
            if case .success = result, let identity { checkPermitted(request, as: identity.username, invoke: invoke) }
            if case .failure(let error as EtcdError) = result, identity != nil { countAuthRefusal(error) }
            switch result {
            // Answered by a member that became corrupted meanwhile (a
            // corrupted member's snapshot installed): its answer follows
            // the damaged data, so the outcome counts as unknown.
            case .success where isCorrupted(member): handle(nil)
            case .success(let value): handle(value)
            case .failure(let error):
                // Refused by every member's apply once CORRUPT is raised, or
                // by the auth check every member's apply makes: not applied.
                if accepted.synchronous || (error as? EtcdError) == EtcdError.noLeader || (error as? EtcdError) == EtcdError.corrupt
                    || (error as? EtcdError).map(Self.isAuthRefusal) == true {
                    notApplied()
                } else {
                    handle(nil)
                }
            }
        }
        accepted.synchronous = false
    }

    /// `Member.submit` with a completion that stays on the simulation's
    /// thread (the member calls it from `step`, which runs there).
    /// In auth mode, a request with no identity given acts as root (the
    /// simulation's own checks and faults: liveness writes, alarms).
    func submit(_ request: Etcdserverpb_InternalRaftRequest, on member: Member, auth: AuthInfo? = nil,
                _ completion: @escaping (Result<Member.ApplyResult, any Error>) -> Void) {
        let box = SimThreadOnly(completion)
        member.submit(request, auth: auth ?? rootIdentity(on: member)) { box.value($0) }
    }

    func barrier(on member: Member, _ completion: @escaping (Result<Void, any Error>) -> Void) {
        let box = SimThreadOnly(completion)
        member.submitReadBarrier { box.value($0) }
    }

    func put(_ c: Int, key: String, value: String, on member: Member, _ done: @escaping () -> Void) {
        let invoke = now
        var request = Etcdserverpb_InternalRaftRequest()
        request.put.key = Data(key.utf8)
        request.put.value = Data(value.utf8)
        let input = KVInput.put(key: KVBytes(key), value: KVBytes(value))
        submitWrite(request, on: member, client: c, notApplied: done) { [self] result in
            if case let .put(response) = result {
                log("put \(key)=\(value) on \(String(member.memberID, radix: 16)) at rev \(response.header.revision)")
                record(c, invoke: invoke, input, .put(revision: response.header.revision))
                clients[c].lastValue[key] = value
            } else {
                record(c, invoke: invoke, input, nil)
                report.unknownOutcomes += 1
            }
            done()
        }
    }

    func delete(_ c: Int, key: String, on member: Member, _ done: @escaping () -> Void) {
        let invoke = now
        var request = Etcdserverpb_InternalRaftRequest()
        request.deleteRange.key = Data(key.utf8)
        let input = KVInput.delete(.single(KVBytes(key)))
        submitWrite(request, on: member, client: c, notApplied: done) { [self] result in
            if case let .deleteRange(response) = result {
                record(c, invoke: invoke, input, .delete(revision: response.header.revision, deleted: Int(response.deleted)))
            } else {
                record(c, invoke: invoke, input, nil)
                report.unknownOutcomes += 1
            }
            done()
        }
    }

    /// If the key still holds the value this client last saw, put a new
    /// one; else read it.
    func compareAndSwap(_ c: Int, key: String, value: String, on member: Member, _ done: @escaping () -> Void) {
        let invoke = now
        let expected = clients[c].lastValue[key] ?? ""
        var compare = Etcdserverpb_Compare()
        compare.key = Data(key.utf8)
        compare.target = .value
        compare.result = .equal
        compare.value = Data(expected.utf8)
        var put = Etcdserverpb_RequestOp()
        put.requestPut.key = Data(key.utf8)
        put.requestPut.value = Data(value.utf8)
        var get = Etcdserverpb_RequestOp()
        get.requestRange.key = Data(key.utf8)
        var request = Etcdserverpb_InternalRaftRequest()
        request.txn.compare = [compare]
        request.txn.success = [put]
        request.txn.failure = [get]
        let input = KVInput.txn(compares: [.valueEquals(KVBytes(key), KVBytes(expected))],
                                success: [.put(key: KVBytes(key), value: KVBytes(value))],
                                failure: [.get(KVBytes(key))])
        submitWrite(request, on: member, client: c, notApplied: done) { [self] result in
            if case let .txn(response) = result {
                if response.succeeded {
                    clients[c].lastValue[key] = value
                    record(c, invoke: invoke, input, .txn(revision: response.header.revision, succeeded: true, results: [.put(prevKV: nil)]))
                } else {
                    let kvs = response.responses.first?.responseRange.kvs ?? []
                    if let current = kvs.first { clients[c].lastValue[key] = String(decoding: current.value, as: UTF8.self) }
                    record(c, invoke: invoke, input, .txn(revision: response.header.revision, succeeded: false,
                                                         results: [.range(kvs: kvs.map(Self.record))]))
                }
            } else {
                record(c, invoke: invoke, input, nil)
                report.unknownOutcomes += 1
            }
            done()
        }
    }

    func linearizableGet(_ c: Int, key: String, on member: Member, _ done: @escaping () -> Void) {
        let invoke = now
        barrier(on: member) { [self] result in
            if case .success = result, !isCorrupted(member), let response = try? member.rangeNow(Self.rangeRequest(key)) {
                record(c, invoke: invoke, .get(KVBytes(key)),
                       .range(revision: response.header.revision, kvs: response.kvs.map(Self.record)))
                if let kv = response.kvs.first { clients[c].lastValue[key] = String(decoding: kv.value, as: UTF8.self) }
            }
            // A failed read changed nothing: it is left out of the history.
            done()
        }
    }

    /// Serializable reads may be stale; they must still only return what
    /// some write wrote (checked in `checkHistory`).
    func serializableGet(key: String, on member: Member, _ done: @escaping () -> Void) {
        let invoke = now
        if !isCorrupted(member), let response = try? member.rangeNow(Self.rangeRequest(key)) {
            serializableReads.append((key, response.kvs.first.map(Self.record), invoke))
            log("serializable get(\(key)) on \(String(member.memberID, radix: 16)): \(response.kvs.first.map { "\(String(decoding: $0.value, as: UTF8.self))@\($0.modRevision)" } ?? "none") rev \(response.header.revision)")
        }
        schedule(after: 0) { done() }
    }

    /// Grant a lease, put a key under it, and read the key back before the
    /// lease's TTL has run from the grant: it must still be there.
    func leasedPut(_ c: Int, _ n: Int, on member: Member, _ done: @escaping () -> Void) {
        let invoke = now
        let ttl = random.int(2...4)
        let id = nextLeaseID
        nextLeaseID += 1
        var grant = Etcdserverpb_InternalRaftRequest()
        grant.leaseGrant.id = id
        grant.leaseGrant.ttl = ttl
        let key = "lease/c\(c)-\(n)"
        submitWrite(grant, on: member, notApplied: done) { [self] result in
            guard case let .leaseGrant(response) = result, response.error.isEmpty else { return done() }
            var put = Etcdserverpb_InternalRaftRequest()
            put.put.key = Data(key.utf8)
            put.put.value = Data("leased".utf8)
            put.put.lease = id
            submitWrite(put, on: member, client: c, notApplied: done) { [self] result in
                guard case .put = result else { return done() }
                let check = LeaseCheck(key: key, grantInvoke: invoke, ttlSeconds: response.ttl)
                let deadline = invoke + response.ttl * 1_000_000
                let margin = deadline - now
                guard margin > 200_000 else { return done() }
                // Read it back somewhere before the TTL can have run out.
                schedule(after: random.int(0...(margin - 200_000) / 2)) { [self] in
                    guard let reader = pickNode()?.member else { return done() }
                    barrier(on: reader) { [self] result in
                        if case .success = result, now < deadline, let response = try? reader.rangeNow(Self.rangeRequest(key)) {
                            report.otherChecks += 1
                            if response.kvs.isEmpty {
                                violation("lease \(id) (TTL \(check.ttlSeconds) s, granted at \(invoke / 1000) ms) expired early: \(key) gone at \(now / 1000) ms")
                            }
                        }
                        done()
                    }
                }
            }
        }
    }

    func compact(on member: Member, _ done: @escaping () -> Void) {
        let revision = member.header().revision - random.int(0...30)
        guard revision > 1 else { return schedule(after: 0) { done() } }
        var request = Etcdserverpb_InternalRaftRequest()
        request.compaction.revision = revision
        request.compaction.physical = random.chance(0.5)
        submitWrite(request, on: member, notApplied: done) { [self] result in
            if case .compaction = result { compactedAt.insert(revision) }
            done()
        }
    }

    /// Maintenance.Defragment on one member (its copy runs in place in the
    /// simulation). Only a stopped member may refuse it; that its data did
    /// not change is what the convergence check's hash comparison and the
    /// reads after it show.
    func defragment(_ node: SimNode, _ done: @escaping () -> Void) {
        guard let member = node.member else { return schedule(after: 0) { done() } }
        count("defrag")
        log("\(node.name) defragments")
        let completion = SimThreadOnly { [self] (result: Result<Void, any Error>) in
            if case .failure(let error) = result, !(error is EtcdError) {
                violation("\(node.name): defragmentation failed: \(error)")
            }
            done()
        }
        member.submitDefragment { completion.value($0) }
    }

    static func rangeRequest(_ key: String) -> Etcdserverpb_RangeRequest {
        var request = Etcdserverpb_RangeRequest()
        request.key = Data(key.utf8)
        return request
    }

    static func record(_ kv: Mvccpb_KeyValue) -> KVRecord {
        KVRecord(key: KVBytes(Array(kv.key)), value: KVBytes(Array(kv.value)), createRevision: kv.createRevision,
                 modRevision: kv.modRevision, version: kv.version)
    }

    // MARK: - After the heal

    /// Liveness and the last word on every key: through every member, a
    /// write and a linearizable read of every key must succeed (retried for
    /// a while), and then all members must hold the same data.
    func finalPhase() {
        var pending = 0
        var failures: [String] = []
        var unfinished: Set<String> = []
        for node in liveNodes where !node.corrupted {
            guard node.member != nil else { continue }
            let reads = keys
            pending += 1
            unfinished.insert(node.name)
            // Retried: a member just restarted may not know the leader yet.
            func attempt(_ tries: Int) {
                guard let member = node.member else { pending -= 1; return failures.append("\(node.name) is down") }
                let invoke = now
                let client = 1000 + node.index
                let value = "final-\(node.name)-\(tries)"
                let input = KVInput.put(key: "final", value: KVBytes(value))
                var request = Etcdserverpb_InternalRaftRequest()
                request.put.key = Data("final".utf8)
                request.put.value = Data(value.utf8)
                submit(request, on: member) { [self] result in
                    var answered = false
                    switch result {
                    case .success(.put(let response)):
                        record(client, invoke: invoke, input, .put(revision: response.header.revision))
                        answered = true
                    case .failure(let error as EtcdError) where (error == .corrupt || error == .noSpace) && corruptVictim != nil:
                        // Once CORRUPT is raised, a definite refusal; so is
                        // NOSPACE then (refused before proposing), as the
                        // filler cannot be deleted while writes are refused.
                        answered = true
                    default:
                        break
                    }
                    if answered {
                        readAll(member, client: client, reads) { ok in
                            if !ok { failures.append("\(node.name): final reads failed") }
                            pending -= 1
                            unfinished.remove(node.name)
                        }
                    } else {
                        // Unknown outcome: keep it in the history.
                        record(client, invoke: invoke, input, nil)
                        report.unknownOutcomes += 1
                        if tries >= 20 {
                            failures.append("\(node.name): no write succeeded after the heal (\(result))")
                            pending -= 1
                            unfinished.remove(node.name)
                        } else {
                            schedule(after: 500_000) { attempt(tries + 1) }
                        }
                    }
                }
            }
            attempt(0)
        }
        let deadline = now + 60_000_000
        run(until: deadline) { pending == 0 }
        if pending > 0 { failures.append("\(pending) members did not finish the final operations: \(unfinished.sorted())") }
        for failure in failures { violation("liveness: \(failure)") }
        waitForConvergence()
    }

    func readAll(_ member: Member, client: Int, _ keys: [String], _ done: @escaping (Bool) -> Void) {
        guard let key = keys.first else { return done(true) }
        let invoke = now
        barrier(on: member) { [self] result in
            guard case .success = result, let response = try? member.rangeNow(Self.rangeRequest(key)) else { return done(false) }
            record(client, invoke: invoke, .get(KVBytes(key)), .range(revision: response.header.revision, kvs: response.kvs.map(Self.record)))
            schedule(after: 0) { [self] in readAll(member, client: client, Array(keys.dropFirst()), done) }
        }
    }

    /// All members applied the same index: their KV hashes must be equal.
    func waitForConvergence() {
        // A corrupted member's snapshot may have reached every other one.
        if liveNodes.allSatisfy(\.corrupted) { return log("every member is corrupted: nothing left to converge") }
        let deadline = now + 30_000_000
        var converged = false
        while now < deadline && !converged {
            run(until: now + 200_000)
            let live = liveNodes.filter { !$0.corrupted }
            let members = live.compactMap(\.member)
            guard members.count == live.count else { continue }
            let applied = Set(members.map { $0.raftStatus().appliedIndex })
            let revisions = Set(members.map { $0.header().revision })
            guard applied.count == 1, revisions.count == 1 else { continue }
            converged = true
            let hashes = members.map { try? $0.hashKV(revision: 0).hash }
            if Set(hashes.map { $0 ?? 0 }).count != 1 || hashes.contains(where: { $0 == nil }) {
                violation("members converged at index \(applied.first!) with different KV hashes: \(hashes.map { $0.map { String($0, radix: 16) } ?? "error" })")
            }
        }
        if !converged {
            let states = liveNodes.filter { !$0.corrupted }.map { node in
                node.member.map { member in
                    let status = member.raftStatus()
                    return "\(node.name): term \(status.term) leader \(String(status.leader, radix: 16)) commit \(status.committedIndex) applied \(status.appliedIndex)"
                } ?? "\(node.name): down"
            }
            violation("liveness: members did not converge to one applied index within 30 s: \(states.joined(separator: "; "))")
        }
    }
}
