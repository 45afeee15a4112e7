import Backend
import EtcdProto
import Foundation
import Locks

/// etcd's lessor: the leases of a member, their attached keys, and (on the
/// primary, i.e. the raft leader) their expiry and checkpoint schedules.
///
/// Time is always a parameter (`now`: a monotonic instant from an arbitrary
/// origin); the lessor has no clock, thread or timer. The server polls
/// `expiredLeases` and `dueCheckpoints` (waking at `nextDeadline`) and
/// proposes revocations and checkpoints through raft.
///
/// `grant`, `revoke` and `checkpoint` are applied from the raft log: they
/// write the backend's open batch and must run on the backend's writer
/// thread; they never commit. Everything else may be called from any thread.
public final class Lessor: Sendable {
    private let backend: Backend
    public let config: LessorConfig
    private let state: Mutex<LessorState>

    /// Loads every lease from the backend's `lease` bucket (raising TTLs
    /// below the minimum, as etcd does). Loaded leases do not expire until
    /// `promote`.
    public init(backend: Backend, config: LessorConfig) throws(LeaseError) {
        let loaded = try Lessor.load(backend, config)
        self.backend = backend
        self.config = config
        self.state = Mutex(LessorState(config: config, leases: loaded))
    }

    /// After the backend's file was replaced (`Backend.replace(withFileAt:)`):
    /// replaces every lease, and drops every attachment, with what the
    /// `lease` bucket holds now, loaded as `init` does. On the primary the
    /// new leases expire as `promote(now:extend:)` would have them expire;
    /// otherwise they do not expire. Then reattach the keys with
    /// `restoreAttachments(store.restoredLeases)`. Backend writer thread.
    public func reload(now: Duration, extend: Duration) throws(LeaseError) {
        let loaded = try Lessor.load(backend, config)
        state.withLock { s in
            let primary = s.isPrimary
            s = LessorState(config: config, leases: loaded)
            if primary { s.promote(now: now, extend: extend) }
        }
    }

    private static func load(_ backend: Backend, _ config: LessorConfig) throws(LeaseError) -> [Int64: LeaseRecord] {
        var loaded: [Int64: LeaseRecord] = [:]
        do {
            try backend.read { tx in
                try tx.forEach(.lease) { _, value in
                    let lease = try LeaseStorage.decode(value)
                    loaded[lease.id] = LeaseRecord(
                        ttl: max(lease.ttl, config.minTTLSeconds), remainingTTL: lease.remainingTtl)
                    return true
                }
            }
        } catch let error as BackendError {
            throw .backend(error.description)
        } catch {
            throw .backend("lease: cannot decode a stored lease: \(error)")
        }
        return loaded
    }

    // MARK: - Applied from the raft log (backend writer thread)

    /// Grants lease `id` (non-zero; the server picks ids) with `ttlSeconds`,
    /// raised to `minTTLSeconds`. On the primary it expires at now + TTL.
    public func grant(id: Int64, ttlSeconds: Int64, now: Duration) throws(LeaseError) -> LeaseInfo {
        try state.withLock { (s) throws(LeaseError) -> LeaseInfo in
            let ttl = try s.admit(id: id, ttlSeconds: ttlSeconds)
            try persist(id: id, ttl: ttl, remainingTTL: 0)
            s.insert(id: id, ttl: ttl, now: now)
            return LeaseInfo(id: id, grantedTTL: ttl, remainingTTL: ttl, keys: [])
        }
    }

    /// Removes the lease from memory and the backend and returns its
    /// attached keys, sorted bytewise, for the server to delete in the same
    /// revision. The keys are detached already.
    public func revoke(id: Int64) throws(LeaseError) -> [Data] {
        try state.withLock { (s) throws(LeaseError) -> [Data] in
            guard s.leases[id] != nil else { throw .notFound }
            do throws(BackendError) {
                try backend.delete(.lease, key: LeaseStorage.key(id))
            } catch {
                throw .backend(error.description)
            }
            return s.remove(id)
        }
    }

    /// Records (and persists, as etcd 3.6 does) a checkpointed remaining
    /// TTL; 0 clears it. It takes effect at the next `promote`.
    ///
    /// etcd ignores checkpoints of unknown leases (one may be revoked while
    /// its checkpoint is in flight): the apply loop should treat `notFound`
    /// here as success and go on with the next checkpoint of the request.
    public func checkpoint(id: Int64, remainingTTLSeconds: Int64, now: Duration) throws(LeaseError) {
        try state.withLock { (s) throws(LeaseError) in
            guard let record = s.leases[id] else { throw .notFound }
            try persist(id: id, ttl: record.ttl, remainingTTL: remainingTTLSeconds)
            s.recordCheckpoint(id, remainingTTL: remainingTTLSeconds, now: now)
        }
    }

    /// Keeps key attachments in step with the MVCC writes of one request:
    /// each event's key leaves the lease it is attached to (looked up by key,
    /// so events need not carry `prevKv`), and a put joins `kv.lease` if that
    /// is non-zero and exists. Unknown lease ids are ignored.
    public func apply(events: [Mvccpb_Event]) {
        state.withLock { $0.apply(events) }
    }

    /// After a restart or a `reload`: attaches each key to the lease the
    /// MVCC store found on it, replacing every attachment made before.
    /// Unknown lease ids are ignored.
    public func restoreAttachments(_ keys: [Data: Int64]) {
        state.withLock { s in
            s.detachAll()
            for (key, id) in keys {
                s.attach(key, to: id)
            }
        }
    }

    private func persist(id: Int64, ttl: Int64, remainingTTL: Int64) throws(LeaseError) {
        do {
            try backend.put(
                .lease, key: LeaseStorage.key(id),
                value: LeaseStorage.value(id: id, ttl: ttl, remainingTTL: remainingTTL))
        } catch {
            throw .backend(error.description)
        }
    }

    // MARK: - Any thread

    public func contains(_ id: Int64) -> Bool {
        state.withLock { $0.leases[id] != nil }
    }

    /// Primary only: restarts the lease's TTL from now and returns the
    /// granted TTL. A checkpointed remaining TTL is cleared the way etcd
    /// clears it, through raft: the next `dueCheckpoints` hands out a
    /// checkpoint of 0 for the lease. An expired lease cannot be renewed
    /// (`notFound`; etcd waits for its revocation and then says the same).
    public func renew(id: Int64, now: Duration) throws(LeaseError) -> Int64 {
        try state.withLock { (s) throws(LeaseError) -> Int64 in try s.renew(id, now: now) }
    }

    /// The lease's TTLs and keys, or nil if it does not exist.
    public func timeToLive(id: Int64, now: Duration) -> LeaseInfo? {
        state.withLock { $0.info(id, now: now) }
    }

    /// The ids of all leases, sorted.
    public func leases() -> [Int64] {
        state.withLock { Array($0.leases.keys) }.sorted()
    }

    /// The number of leases.
    public var count: Int {
        state.withLock { $0.leases.count }
    }

    /// Whether this lessor is the primary (leases expire only there).
    public var isPrimary: Bool {
        state.withLock { $0.isPrimary }
    }

    /// Becoming leader: every lease expires at now + extend + its
    /// checkpointed remaining TTL (or else its TTL). With at least
    /// `revokeRatePerSecond` leases, piled-up expiries are spread out to
    /// 3/4 of that rate, as etcd does.
    public func promote(now: Duration, extend: Duration) {
        state.withLock { $0.promote(now: now, extend: extend) }
    }

    /// Losing leadership: no lease expires until the next `promote`.
    public func demote() {
        state.withLock { $0.demote() }
    }

    /// Primary only: leases whose expiry has passed (expiry <= now), oldest
    /// first, at most `limit`. Each one returned is returned again
    /// `expiredRetrySeconds` later if it still exists (its revocation, a
    /// raft proposal, may have been lost).
    public func expiredLeases(now: Duration, limit: Int) -> [Int64] {
        state.withLock { $0.expired(now: now, limit: limit) }
    }

    /// Primary only: the checkpoints due now, at most `limit` (etcd batches
    /// up to 1000 in one proposal). Leases with a TTL above
    /// `checkpointIntervalSeconds` are checkpointed every interval while
    /// their remaining TTL stays above it; a renewed lease with a
    /// checkpointed remaining TTL gets a checkpoint of 0 at once.
    public func dueCheckpoints(now: Duration, limit: Int) -> [(id: Int64, remainingTTLSeconds: Int64)] {
        state.withLock { $0.dueCheckpoints(now: now, limit: limit) }
    }

    /// The earliest instant at which `expiredLeases` or `dueCheckpoints` may
    /// return something, or nil (not primary, or nothing scheduled).
    public func nextDeadline() -> Duration? {
        state.withLock { $0.nextDeadline }
    }
}
