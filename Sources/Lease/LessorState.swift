import EtcdProto
import Foundation

/// Everything the lessor knows, without locking or persistence: `Lessor`
/// wraps it in a mutex and writes the backend.
struct LessorState {
    let config: LessorConfig
    var leases: [Int64: LeaseRecord]
    /// Which lease each attached key belongs to (a key has at most one).
    var owners: [Data: Int64] = [:]
    /// Primary only: when each lease is next due for `expiredLeases`.
    var expiries = DeadlineQueue()
    /// Primary only: when each lease is next due for `dueCheckpoints`.
    var checkpoints = DeadlineQueue()
    var isPrimary = false

    init(config: LessorConfig, leases: [Int64: LeaseRecord]) {
        self.config = config
        self.leases = leases
    }

    private var checkpointInterval: Duration { .seconds(config.checkpointIntervalSeconds) }
    private var retryInterval: Duration { .seconds(config.expiredRetrySeconds) }

    // MARK: - Applied changes

    /// Checks a grant as etcd does and returns the TTL to grant.
    func admit(id: Int64, ttlSeconds: Int64) throws(LeaseError) -> Int64 {
        guard id != 0 else { throw .notFound }
        guard ttlSeconds <= LeaseLimits.maxTTLSeconds else { throw .ttlTooLarge }
        guard leases[id] == nil else { throw .alreadyExists }
        guard leases.count < config.maxLeases else { throw .tooManyLeases }
        return max(ttlSeconds, config.minTTLSeconds)
    }

    /// Adds an admitted lease; on the primary it starts expiring now.
    mutating func insert(id: Int64, ttl: Int64, now: Duration) {
        var record = LeaseRecord(ttl: ttl)
        if isPrimary {
            let expiry = now + .seconds(ttl)
            record.expiry = expiry
            expiries.set(id, to: expiry)
        }
        leases[id] = record
        scheduleCheckpoint(id, now: now)
    }

    /// Drops a lease and its attachments; returns its keys, sorted.
    mutating func remove(_ id: Int64) -> [Data] {
        guard let record = leases.removeValue(forKey: id) else { return [] }
        for key in record.keys {
            owners.removeValue(forKey: key)
        }
        expiries.remove(id)
        checkpoints.remove(id)
        return record.sortedKeys
    }

    /// Records an applied checkpoint and, on the primary, schedules the
    /// next one as etcd does (only while the remaining TTL is above the
    /// checkpoint interval).
    mutating func recordCheckpoint(_ id: Int64, remainingTTL: Int64, now: Duration) {
        guard var record = leases[id] else { return }
        record.remainingTTL = remainingTTL
        if remainingTTL <= 0 { record.clearing = .none }
        leases[id] = record
        if record.clearing == .due { return }  // its entry is due already
        if !scheduleCheckpoint(id, now: now) {
            checkpoints.remove(id)
        }
    }

    /// Attaches `key` to lease `id`, detaching it from any other lease. An
    /// id of 0 or of no lease just detaches it.
    mutating func attach(_ key: Data, to id: Int64) {
        if owners[key] == id { return }
        detach(key)
        guard id != 0, leases[id] != nil else { return }
        leases[id]!.keys.insert(key)
        owners[key] = id
    }

    mutating func detach(_ key: Data) {
        guard let owner = owners.removeValue(forKey: key) else { return }
        leases[owner]?.keys.remove(key)
    }

    mutating func detachAll() {
        for id in Set(owners.values) { leases[id]?.keys.removeAll() }
        owners.removeAll()
    }

    mutating func apply(_ events: [Mvccpb_Event]) {
        for event in events {
            switch event.type {
            case .put: attach(event.kv.key, to: event.kv.lease)
            case .delete: detach(event.kv.key)
            default: continue
            }
        }
    }

    // MARK: - Queries

    func info(_ id: Int64, now: Duration) -> LeaseInfo? {
        guard let record = leases[id] else { return nil }
        let remaining = record.expiry.map { ($0 - now).truncatedSeconds } ?? record.effectiveTTL
        return LeaseInfo(id: id, grantedTTL: record.ttl, remainingTTL: remaining, keys: record.sortedKeys)
    }

    var nextDeadline: Duration? {
        guard isPrimary else { return nil }
        switch (expiries.first?.deadline, checkpoints.first?.deadline) {
        case let (a?, b?): return min(a, b)
        case let (a?, nil): return a
        case let (nil, b?): return b
        case (nil, nil): return nil
        }
    }

    // MARK: - Primary

    mutating func renew(_ id: Int64, now: Duration) throws(LeaseError) -> Int64 {
        guard isPrimary else { throw .notPrimary }
        guard var record = leases[id], let expiry = record.expiry else { throw .notFound }
        // etcd makes the renewal of an expired lease wait for its revocation
        // and then fail with "not found"; we fail at once.
        guard now < expiry else { throw .notFound }
        let newExpiry = now + .seconds(record.ttl)
        record.expiry = newExpiry
        expiries.set(id, to: newExpiry)
        if config.checkpointsEnabled && record.remainingTTL > 0 {
            switch record.clearing {
            case .none:
                record.clearing = .due
            case .proposed(let at) where now >= at + retryInterval:
                record.clearing = .due
            case .proposed, .due:
                break
            }
            if record.clearing == .due { checkpoints.set(id, to: now) }
        }
        leases[id] = record
        return record.ttl
    }

    mutating func promote(now: Duration, extend: Duration) {
        isPrimary = true
        var expiryEntries: [DeadlineQueue.Entry] = []
        var checkpointEntries: [DeadlineQueue.Entry] = []
        expiryEntries.reserveCapacity(leases.count)
        for index in leases.indices {
            let id = leases.keys[index]
            let record = leases.values[index]
            let expiry = now + extend + .seconds(record.effectiveTTL)
            leases.values[index].expiry = expiry
            expiryEntries.append(.init(id: id, deadline: expiry))
            if record.clearing == .due {
                checkpointEntries.append(.init(id: id, deadline: now))
            } else if config.checkpointsEnabled && record.effectiveTTL > config.checkpointIntervalSeconds {
                checkpointEntries.append(.init(id: id, deadline: now + checkpointInterval))
            }
        }
        if leases.count >= config.revokeRatePerSecond {
            spreadPileUps(&expiryEntries)
        }
        expiries = DeadlineQueue(expiryEntries)
        checkpoints = DeadlineQueue(checkpointEntries)
    }

    /// etcd's pile-up avoidance after a promotion: within each window that
    /// starts at an expiry, at most 3/4 of the revoke rate expire per
    /// second; the rest are pushed back evenly at that rate.
    private mutating func spreadPileUps(_ entries: inout [DeadlineQueue.Entry]) {
        guard !entries.isEmpty else { return }
        entries.sort { $0.deadline < $1.deadline || ($0.deadline == $1.deadline && $0.id < $1.id) }
        let target = max(1, 3 * config.revokeRatePerSecond / 4)
        var base = entries[0].deadline
        var windowEnd = base + .seconds(1)
        var expires = 0
        for index in entries.indices {
            let deadline = entries[index].deadline
            if deadline > windowEnd {
                base = deadline
                windowEnd = base + .seconds(1)
                expires = 1
                continue
            }
            expires += 1
            if expires <= target { continue }
            // Leases already later than the base need less delay.
            let delay = Duration.seconds(Double(expires) / Double(target)) - (deadline - base)
            windowEnd = base + delay
            let moved = deadline + delay
            entries[index].deadline = moved
            leases[entries[index].id]!.expiry = moved
        }
    }

    mutating func demote() {
        isPrimary = false
        for index in leases.indices {
            leases.values[index].expiry = nil
            leases.values[index].clearing = .none
        }
        expiries.removeAll()
        checkpoints.removeAll()
    }

    /// Expired leases, oldest first; each is due again after the retry
    /// interval in case its revocation is lost.
    mutating func expired(now: Duration, limit: Int) -> [Int64] {
        guard isPrimary, limit > 0 else { return [] }
        var result: [Int64] = []
        var requeue: [DeadlineQueue.Entry] = []
        while result.count < limit, let top = expiries.first, top.deadline <= now {
            _ = expiries.popFirst()
            guard let expiry = leases[top.id]?.expiry else { continue }
            if expiry <= now {
                result.append(top.id)
                requeue.append(.init(id: top.id, deadline: now + retryInterval))
            } else {
                requeue.append(.init(id: top.id, deadline: expiry))
            }
        }
        for entry in requeue {
            expiries.set(entry.id, to: entry.deadline)
        }
        return result
    }

    /// Checkpoints due now, as etcd computes them: the remaining TTL rounded
    /// up, skipped when it is not below the granted TTL or the lease has
    /// expired. Unlike etcd, a lease keeps its place in the schedule when its
    /// checkpoint is skipped or handed out (its application reschedules it
    /// again), so a lost proposal does not end its checkpoints.
    mutating func dueCheckpoints(now: Duration, limit: Int) -> [(id: Int64, remainingTTLSeconds: Int64)] {
        guard isPrimary, config.checkpointsEnabled, limit > 0 else { return [] }
        var result: [(id: Int64, remainingTTLSeconds: Int64)] = []
        var requeue: [Int64] = []
        while result.count < limit, let top = checkpoints.first, top.deadline <= now {
            _ = checkpoints.popFirst()
            let id = top.id
            guard let record = leases[id], let expiry = record.expiry, now < expiry else { continue }
            if record.clearing == .due {
                result.append((id, 0))
                leases[id]!.clearing = .proposed(at: now)
                if record.ttl > config.checkpointIntervalSeconds { requeue.append(id) }
                continue
            }
            let remaining = (expiry - now).ceiledSeconds
            if remaining < record.ttl { result.append((id, remaining)) }
            if remaining > config.checkpointIntervalSeconds { requeue.append(id) }
        }
        for id in requeue {
            checkpoints.set(id, to: now + checkpointInterval)
        }
        return result
    }

    /// Schedules the lease's next checkpoint one interval from now if etcd
    /// would (primary, checkpoints on, remaining TTL above the interval).
    @discardableResult
    private mutating func scheduleCheckpoint(_ id: Int64, now: Duration) -> Bool {
        guard isPrimary, config.checkpointsEnabled, let record = leases[id],
              record.effectiveTTL > config.checkpointIntervalSeconds
        else { return false }
        checkpoints.set(id, to: now + checkpointInterval)
        return true
    }
}
