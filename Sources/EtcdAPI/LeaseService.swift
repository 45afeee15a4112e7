import Auth
import EtcdGRPC
import EtcdProto
import EtcdServer
import GRPCCore
import Lease

/// etcdserverpb.Lease over a member.
/// Keep-alives and TimeToLive need the leader's lessor (expiry lives
/// there): a follower forwards them to the leader.
struct LeaseService: Etcdserverpb_Lease.SimpleServiceProtocol {
    let member: Member
    let forwarder: LeaderForwarder

    func leaseGrant(request: Etcdserverpb_LeaseGrantRequest, context: ServerContext) async throws -> Etcdserverpb_LeaseGrantResponse {
        try await etcdCall {
            var response = try await member.leaseGrant(request)
            response.header = member.header()
            return response
        }
    }

    func leaseRevoke(request: Etcdserverpb_LeaseRevokeRequest, context: ServerContext) async throws -> Etcdserverpb_LeaseRevokeResponse {
        try await leaseRevoke(request, as: nil)
    }

    /// A revoke as the user `info` names (write permission on its keys).
    func leaseRevoke(_ request: Etcdserverpb_LeaseRevokeRequest, as info: AuthInfo?) async throws -> Etcdserverpb_LeaseRevokeResponse {
        try await etcdCall {
            var response = try await member.leaseRevoke(request, as: info)
            response.header = member.header()
            return response
        }
    }

    /// Many leases per stream; each request renews one and gets its TTL
    /// back. A lease that does not exist (or expired) answers TTL 0, as etcd
    /// does, and the stream goes on.
    func leaseKeepAlive(
        request: RPCAsyncSequence<Etcdserverpb_LeaseKeepAliveRequest, any Error>,
        response: RPCWriter<Etcdserverpb_LeaseKeepAliveResponse>,
        context: ServerContext
    ) async throws {
        try await etcdCall {
            for try await keepAlive in request {
                var answer = Etcdserverpb_LeaseKeepAliveResponse()
                answer.id = keepAlive.id
                do {
                    answer.ttl = try member.leaseRenew(id: keepAlive.id)
                } catch let error as EtcdError where error == .leaseNotFound {
                    answer.ttl = 0
                } catch let error as EtcdError where error == .notPrimary {
                    answer.ttl = try await forwarder.renew(id: keepAlive.id)
                }
                answer.header = member.header()
                try await response.write(answer)
            }
        }
    }

    /// A lease that does not exist answers TTL -1 (not an error), as etcd does.
    func leaseTimeToLive(request: Etcdserverpb_LeaseTimeToLiveRequest, context: ServerContext) async throws -> Etcdserverpb_LeaseTimeToLiveResponse {
        try await leaseTimeToLive(request)
    }

    func leaseTimeToLive(_ request: Etcdserverpb_LeaseTimeToLiveRequest) async throws -> Etcdserverpb_LeaseTimeToLiveResponse {
        if !member.isLeader {
            return try await etcdCall { try await forwarder.timeToLive(request) }
        }
        var response = Etcdserverpb_LeaseTimeToLiveResponse()
        response.header = member.header()
        response.id = request.id
        guard let info = member.leaseTimeToLive(id: request.id) else {
            response.ttl = -1
            return response
        }
        response.ttl = info.remainingTTL
        response.grantedTtl = info.grantedTTL
        if request.keys { response.keys = info.keys }
        return response
    }

    func leaseLeases(request: Etcdserverpb_LeaseLeasesRequest, context: ServerContext) async throws -> Etcdserverpb_LeaseLeasesResponse {
        var response = Etcdserverpb_LeaseLeasesResponse()
        response.header = member.header()
        response.leases = member.leaseIDsGranted().map { id in
            var status = Etcdserverpb_LeaseStatus()
            status.id = id
            return status
        }
        return response
    }
}
