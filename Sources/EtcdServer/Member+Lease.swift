import EtcdProto
import Foundation
import Lease
import MVCC
import Raft

/// Leases: grants and revokes go through raft and are applied by every
/// member; keep-alives and expiry belong to the leader alone (the primary
/// lessor), which proposes a revoke once a lease runs out and checkpoints
/// the remaining TTL of long leases so a leader change does not reset them.
extension Member {
    /// Leases the leader revokes per tick (etcd revokes at most 1,000/s).
    static let maxRevokesPerTick = 100
    /// Checkpoints the leader proposes per tick.
    static let maxCheckpointsPerTick = 100

    // MARK: - Client requests

    public func leaseGrant(_ request: Etcdserverpb_LeaseGrantRequest) async throws -> Etcdserverpb_LeaseGrantResponse {
        var grant = request
        if grant.ttl > LeaseLimits.maxTTLSeconds { throw EtcdError.leaseTTLTooLarge }
        // The id is chosen before proposing, so every member applies the same one.
        while grant.id <= 0 { grant.id = Int64(bitPattern: leaseIDs.next() & UInt64(Int64.max)) }
        var internalRequest = Etcdserverpb_InternalRaftRequest()
        internalRequest.leaseGrant = grant
        guard case let .leaseGrant(response) = try await propose(.other(internalRequest)) else { throw EtcdError(.internal, "unexpected apply result") }
        return response
    }

    public func leaseRevoke(_ request: Etcdserverpb_LeaseRevokeRequest) async throws -> Etcdserverpb_LeaseRevokeResponse {
        if !lessor.contains(request.id) { throw EtcdError.leaseNotFound }
        var internalRequest = Etcdserverpb_InternalRaftRequest()
        internalRequest.leaseRevoke = request
        guard case let .leaseRevoke(response) = try await propose(.other(internalRequest)) else { throw EtcdError(.internal, "unexpected apply result") }
        return response
    }

    /// A keep-alive: the lease's granted TTL, counted again from now.
    /// Only the leader keeps leases alive.
    public func leaseRenew(id: Int64) throws -> Int64 {
        do {
            return try lessor.renew(id: id, now: leaseNow())
        } catch {
            throw EtcdError(error)
        }
    }

    /// LeaseTimeToLive; nil when the lease does not exist.
    public func leaseTimeToLive(id: Int64) -> LeaseInfo? {
        lessor.timeToLive(id: id, now: leaseNow())
    }

    public func leaseIDsGranted() -> [Int64] { lessor.leases() }

    /// Whether this member leads (and so keeps leases alive).
    public var isLeader: Bool { raftStatus().leader == memberID }

    func leaseNow() -> Duration { config.leaseClockForTesting?() ?? (environment.now() - clockOrigin) }

    // MARK: - The raft loop's side

    /// On the leader, once per tick: propose revokes for expired leases and
    /// checkpoints for long ones. Proposals that are lost come back: an
    /// expired lease is offered again a few seconds later.
    func proposeLeaseMaintenance(_ loop: inout RaftLoopState) {
        guard loop.isLeader else { return }
        let now = leaseNow()
        for id in lessor.expiredLeases(now: now, limit: Self.maxRevokesPerTick) {
            var internalRequest = Etcdserverpb_InternalRaftRequest()
            internalRequest.leaseRevoke.id = id
            proposeFromLoop(internalRequest, &loop)
        }
        let due = lessor.dueCheckpoints(now: now, limit: Self.maxCheckpointsPerTick)
        if !due.isEmpty {
            var internalRequest = Etcdserverpb_InternalRaftRequest()
            internalRequest.leaseCheckpoint.checkpoints = due.map { item in
                var checkpoint = Etcdserverpb_LeaseCheckpoint()
                checkpoint.id = item.id
                checkpoint.remainingTtl = item.remainingTTLSeconds
                return checkpoint
            }
            proposeFromLoop(internalRequest, &loop)
        }
    }

    /// Promotes the lessor when this member becomes leader (every lease gets
    /// an election timeout more, so none expires early because of the
    /// change) and demotes it when leadership is lost.
    func followLeadership(_ loop: inout RaftLoopState) {
        // `lead` is this member exactly while it leads (cheaper than
        // status(), which copies the progress of every peer).
        let leading = loop.node.lead == memberID
        guard leading != loop.isLeader else { return }
        loop.isLeader = leading
        if leading {
            lessor.promote(now: leaseNow(), extend: .milliseconds(config.electionTimeoutMilliseconds))
        } else {
            lessor.demote()
        }
    }

    /// A proposal the member makes itself: nobody waits for its result.
    func proposeFromLoop(_ request: Etcdserverpb_InternalRaftRequest, _ loop: inout RaftLoopState) {
        var request = request
        request.id = requestIDs.next()
        request.header.id = request.id
        guard let data = try? request.serializedData() else { return }
        try? loop.node.propose(data)
    }

    /// Applies LeaseGrant, LeaseRevoke (its keys are deleted in one
    /// revision, with delete events) and LeaseCheckpoint.
    func applyLease(_ request: Etcdserverpb_InternalRaftRequest) throws(MVCCError) -> Result<ApplyResult, EtcdError> {
        do {
            if request.hasLeaseGrant {
                let info = try lessor.grant(id: request.leaseGrant.id, ttlSeconds: request.leaseGrant.ttl, now: leaseNow())
                var response = Etcdserverpb_LeaseGrantResponse()
                response.id = info.id
                response.ttl = info.grantedTTL
                return .success(.leaseGrant(response))
            }
            if request.hasLeaseRevoke {
                let keys = try lessor.revoke(id: request.leaseRevoke.id)
                _ = published(try store.deleteKeys(keys))
                return .success(.leaseRevoke(Etcdserverpb_LeaseRevokeResponse()))
            }
            for checkpoint in request.leaseCheckpoint.checkpoints {
                // A checkpoint of a lease revoked meanwhile is moot.
                try? lessor.checkpoint(id: checkpoint.id, remainingTTLSeconds: checkpoint.remainingTtl, now: leaseNow())
            }
            return .success(.none)
        } catch let error as LeaseError {
            if case .backend(let message) = error {
                throw MVCCError.backend(.lmdb(operation: "lease bucket", code: 0, message: message))
            }
            return .failure(EtcdError(error))
        } catch let error as MVCCError {
            throw error
        } catch {
            return .failure(EtcdError(.internal, "\(error)"))
        }
    }
}

extension EtcdError {
    init(_ error: LeaseError) {
        switch error {
        case .notFound: self = .leaseNotFound
        case .alreadyExists: self = .leaseExists
        case .ttlTooLarge: self = .leaseTTLTooLarge
        case .notPrimary: self = .notPrimary
        case .tooManyLeases: self = EtcdError(.resourceExhausted, error.description)
        case .backend(let message): self = EtcdError(.internal, "etcdserver: lease backend: \(message)")
        }
    }
}
