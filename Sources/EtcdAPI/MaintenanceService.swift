import EtcdGRPC
import EtcdProto
import EtcdServer
import GRPCCore

/// etcdserverpb.Maintenance: Status, Hash and HashKV today; the rest answers UNIMPLEMENTED
/// until the server issue completes it.
struct MaintenanceService: Etcdserverpb_Maintenance.SimpleServiceProtocol {
    let member: Member

    func status(request: Etcdserverpb_StatusRequest, context: ServerContext) async throws -> Etcdserverpb_StatusResponse {
        let raft = member.raftStatus()
        var response = Etcdserverpb_StatusResponse()
        response.header = member.header()
        response.version = EtcdVersion.server
        response.dbSize = Int64(member.backendSizeBytes)
        response.dbSizeInUse = Int64(member.backendSizeInUseBytes())
        response.leader = raft.leader
        response.raftIndex = raft.committedIndex
        response.raftTerm = raft.term
        response.raftAppliedIndex = raft.appliedIndex
        response.storageVersion = EtcdVersion.api + ".0"
        return response
    }

    func alarm(request: Etcdserverpb_AlarmRequest, context: ServerContext) async throws -> Etcdserverpb_AlarmResponse {
        throw RPCError.notImplementedYet
    }

    func defragment(request: Etcdserverpb_DefragmentRequest, context: ServerContext) async throws -> Etcdserverpb_DefragmentResponse {
        throw RPCError.notImplementedYet
    }

    func hash(request: Etcdserverpb_HashRequest, context: ServerContext) async throws -> Etcdserverpb_HashResponse {
        try await etcdCall {
            let result = try member.backendHash()
            var response = Etcdserverpb_HashResponse()
            response.header = member.header(revision: result.revision)
            response.hash = result.hash
            return response
        }
    }

    func hashKV(request: Etcdserverpb_HashKVRequest, context: ServerContext) async throws -> Etcdserverpb_HashKVResponse {
        try await etcdCall {
            let result = try member.hashKV(revision: request.revision)
            var response = Etcdserverpb_HashKVResponse()
            response.header = member.header(revision: result.currentRevision)
            response.hash = result.hash
            response.compactRevision = result.compactRevision
            response.hashRevision = result.hashRevision
            return response
        }
    }

    func snapshot(request: Etcdserverpb_SnapshotRequest, response: RPCWriter<Etcdserverpb_SnapshotResponse>, context: ServerContext) async throws {
        throw RPCError.notImplementedYet
    }

    func moveLeader(request: Etcdserverpb_MoveLeaderRequest, context: ServerContext) async throws -> Etcdserverpb_MoveLeaderResponse {
        throw RPCError.notImplementedYet
    }

    func downgrade(request: Etcdserverpb_DowngradeRequest, context: ServerContext) async throws -> Etcdserverpb_DowngradeResponse {
        throw RPCError.notImplementedYet
    }
}

/// etcdserverpb.Cluster: the member list of this (single-member) cluster.
struct ClusterService: Etcdserverpb_Cluster.SimpleServiceProtocol {
    let member: Member

    func memberList(request: Etcdserverpb_MemberListRequest, context: ServerContext) async throws -> Etcdserverpb_MemberListResponse {
        var me = Etcdserverpb_Member()
        me.id = member.memberID
        me.name = member.config.name
        me.clientUrls = member.config.advertiseClientURLs
        me.peerUrls = member.config.initialAdvertisePeerURLs
        var response = Etcdserverpb_MemberListResponse()
        response.header = member.header()
        response.members = [me]
        return response
    }

    func memberAdd(request: Etcdserverpb_MemberAddRequest, context: ServerContext) async throws -> Etcdserverpb_MemberAddResponse {
        throw RPCError.notImplementedYet
    }

    func memberRemove(request: Etcdserverpb_MemberRemoveRequest, context: ServerContext) async throws -> Etcdserverpb_MemberRemoveResponse {
        throw RPCError.notImplementedYet
    }

    func memberUpdate(request: Etcdserverpb_MemberUpdateRequest, context: ServerContext) async throws -> Etcdserverpb_MemberUpdateResponse {
        throw RPCError.notImplementedYet
    }

    func memberPromote(request: Etcdserverpb_MemberPromoteRequest, context: ServerContext) async throws -> Etcdserverpb_MemberPromoteResponse {
        throw RPCError.notImplementedYet
    }
}
