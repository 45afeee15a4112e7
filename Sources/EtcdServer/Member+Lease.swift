import Auth
import EtcdProto
import Foundation
import Lease
import MVCC
import Raft

/// Leases: grants and revokes go through raft and are applied by every
/// member (`Applier`); keep-alives and expiry belong to the leader alone
/// (the primary lessor): its raft loop proposes a revoke once a lease runs
/// out and checkpoints the remaining TTL of long leases so a leader change
/// does not reset them.
extension Member {
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

    /// A revoke as the user `info` names: write permission on every key
    /// attached (checked here and at apply).
    public func leaseRevoke(_ request: Etcdserverpb_LeaseRevokeRequest, as info: AuthInfo? = nil) async throws -> Etcdserverpb_LeaseRevokeResponse {
        if !lessor.contains(request.id) { throw EtcdError.leaseNotFound }
        var internalRequest = Etcdserverpb_InternalRaftRequest()
        internalRequest.leaseRevoke = request
        guard case let .leaseRevoke(response) = try await propose(.other(internalRequest), auth: info) else { throw EtcdError(.internal, "unexpected apply result") }
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

    func leaseNow() -> Duration { leaseClock.now() }
}
