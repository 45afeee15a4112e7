import EtcdProto
import EtcdServer
import Foundation
import Raft

/// One lock acquisition the lock workload made.
struct LockAcquisition {
    var client: Int
    var key: String
    var createRevision: Int64
    /// The revision of the linearizable read that showed the key as the
    /// oldest under the lock's prefix (the moment the client took the lock).
    var observedAt: Int64
}

/// The lock workload's state (about half the seeds run it).
struct LockWorkloadState {
    /// Its own random choices, so the other workloads draw the same numbers
    /// with or without it.
    var random: SplitMix64
    var enabled = false
    var acquisitions: [LockAcquisition] = []
}

/// etcd's lock recipe (clientv3 concurrency's Mutex, as the Lock service
/// runs it) by a few clients under the run's faults: create your key under
/// the prefix unless it exists (a txn on its create revision), hold once a
/// linearizable read shows it is the oldest key there, release by deleting
/// it. `checkLocks` then checks against the reference history that no two
/// holds overlapped: each holder's key was deleted at or before the
/// revision at which the next holder saw itself first.
extension SimWorld {
    static let lockPrefix = "lock/"

    func startLocks() {
        guard locks.random.chance(0.5) else { return }
        locks.enabled = true
        let clients = Int(locks.random.int(2...3))
        for c in 0..<clients {
            schedule(after: locks.random.int(1_000...500_000)) { [self] in acquireLock(c) }
        }
    }

    private func lockMember() -> Member? {
        let up = nodes.filter { $0.member != nil && !$0.removed && !$0.corrupted }
        return up.isEmpty ? nil : up[locks.random.index(up.count)].member
    }

    private func lockRetry(_ action: @escaping () -> Void) {
        schedule(after: locks.random.int(20_000...100_000), action)
    }

    /// Creates this client's key unless it exists already (a retry after an
    /// unknown outcome finds it and takes its create revision).
    func acquireLock(_ c: Int) {
        guard !clientsStopped else { return }
        guard let member = lockMember() else { return lockRetry { [self] in acquireLock(c) } }
        let key = Self.lockPrefix + "c\(c)"
        var compare = Etcdserverpb_Compare()
        compare.key = Data(key.utf8)
        compare.target = .create
        compare.result = .equal
        compare.createRevision = 0
        var put = Etcdserverpb_RequestOp()
        put.requestPut.key = Data(key.utf8)
        put.requestPut.value = Data("held".utf8)
        var get = Etcdserverpb_RequestOp()
        get.requestRange.key = Data(key.utf8)
        var request = Etcdserverpb_InternalRaftRequest()
        request.txn.compare = [compare]
        request.txn.success = [put]
        request.txn.failure = [get]
        inFlight += 1
        submitWrite(request, on: member, notApplied: { [self] in
            inFlight -= 1
            lockRetry { [self] in acquireLock(c) }
        }) { [self] result in
            inFlight -= 1
            guard case let .txn(response) = result else { return lockRetry { [self] in acquireLock(c) } }
            let created = response.succeeded
                ? response.header.revision
                : response.responses.first?.responseRange.kvs.first?.createRevision ?? 0
            guard created > 0 else {
                violation("lock client \(c): its key is neither new nor there (txn at revision \(response.header.revision))")
                return
            }
            awaitLock(c, key: key, createRevision: created)
        }
    }

    /// Reads (linearizably) the oldest key under the prefix until it is ours.
    func awaitLock(_ c: Int, key: String, createRevision: Int64) {
        guard !clientsStopped else { return }
        guard let member = lockMember() else { return lockRetry { [self] in awaitLock(c, key: key, createRevision: createRevision) } }
        inFlight += 1
        barrier(on: member) { [self] result in
            inFlight -= 1
            guard case .success = result, !isCorrupted(member),
                  let response = try? member.rangeNow(Self.oldestLockKey()) else {
                return lockRetry { [self] in awaitLock(c, key: key, createRevision: createRevision) }
            }
            guard let oldest = response.kvs.first, oldest.createRevision <= createRevision else {
                violation("lock client \(c): its key (created at revision \(createRevision)) is gone at revision \(response.header.revision)")
                return
            }
            guard oldest.createRevision == createRevision else {
                return lockRetry { [self] in awaitLock(c, key: key, createRevision: createRevision) }
            }
            report.otherChecks += 1
            locks.acquisitions.append(LockAcquisition(client: c, key: key, createRevision: createRevision,
                                                      observedAt: response.header.revision))
            log("lock client \(c) holds \(key) (created at \(createRevision)) from revision \(response.header.revision)")
            schedule(after: locks.random.int(0...300_000)) { [self] in releaseLock(c, key: key) }
        }
    }

    /// Deletes the key (again after an unknown outcome), then queues up again.
    func releaseLock(_ c: Int, key: String) {
        guard let member = lockMember() else { return lockRetry { [self] in releaseLock(c, key: key) } }
        var request = Etcdserverpb_InternalRaftRequest()
        request.deleteRange.key = Data(key.utf8)
        inFlight += 1
        submitWrite(request, on: member, notApplied: { [self] in
            inFlight -= 1
            lockRetry { [self] in releaseLock(c, key: key) }
        }) { [self] result in
            inFlight -= 1
            guard case .deleteRange = result else { return lockRetry { [self] in releaseLock(c, key: key) } }
            if !clientsStopped { schedule(after: locks.random.int(0...200_000)) { [self] in acquireLock(c) } }
        }
    }

    static func oldestLockKey() -> Etcdserverpb_RangeRequest {
        var request = Etcdserverpb_RangeRequest()
        request.key = Data(lockPrefix.utf8)
        request.rangeEnd = Data("lock0".utf8)
        request.sortTarget = .create
        request.sortOrder = .ascend
        request.limit = 1
        return request
    }

    /// No two holds overlapped: in the order they were seen, each holder's
    /// key was deleted at or before the revision the next holder saw itself
    /// as the oldest.
    func checkLocks() {
        guard locks.enabled else { return }
        var deletions: [String: [Int64]] = [:]
        for (revision, events) in appliedEvents {
            for event in events where event.type == .delete {
                let key = String(decoding: event.kv.key.bytes, as: UTF8.self)
                if key.hasPrefix(Self.lockPrefix) { deletions[key, default: []].append(revision) }
            }
        }
        let holds = locks.acquisitions.sorted { $0.observedAt < $1.observedAt }
        for (held, next) in zip(holds, holds.dropFirst()) {
            let released = deletions[held.key]?.filter { $0 > held.createRevision }.min()
            guard let released, released <= next.observedAt else {
                violation("lock: client \(held.client) held it from revision \(held.observedAt) (key created at \(held.createRevision)), "
                    + "client \(next.client) from \(next.observedAt); released at \(released.map { "\($0)" } ?? "never")")
                return
            }
        }
        report.locks = "\(holds.count) holds"
    }
}
