import EtcdGRPC
import EtcdProto
import EtcdServer
import Foundation
import GRPCCore

/// etcdserverpb.Maintenance: Status, Alarm, Defragment, Hash, HashKV, Snapshot, MoveLeader and Downgrade.
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
        response.isLearner = member.isLearner
        response.storageVersion = EtcdVersion.api + ".0"
        response.downgradeInfo = member.downgradeInfo()
        // As etcd: each active alarm in its text form.
        response.errors = member.activeAlarms().map { "memberID:\($0.memberID) alarm:\($0.alarm.etcdName) " }
        return response
    }

    func alarm(request: Etcdserverpb_AlarmRequest, context: ServerContext) async throws -> Etcdserverpb_AlarmResponse {
        try await etcdCall { try await member.alarm(request) }
    }

    func defragment(request: Etcdserverpb_DefragmentRequest, context: ServerContext) async throws -> Etcdserverpb_DefragmentResponse {
        try await etcdCall {
            try await member.defragment()
            var response = Etcdserverpb_DefragmentResponse()
            response.header = member.header()
            return response
        }
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

    /// As etcd: the backend as a bbolt file in 32 KiB chunks, each with the
    /// bytes still to come, then one message with the file's SHA-256 (and,
    /// as 3.6 does, the storage version on every message). The copy is
    /// taken from one read transaction on a thread of its own and sent while
    /// it is written (`BackendSnapshot`): each 1 MiB block it hands over
    /// goes out as 32 chunks in one write, and the next block is taken once
    /// that write has reached the socket. Writes go on meanwhile.
    func snapshot(request: Etcdserverpb_SnapshotRequest, response: RPCWriter<Etcdserverpb_SnapshotResponse>, context: ServerContext) async throws {
        let member = self.member
        let snapshot: BackendSnapshot
        do {
            snapshot = try await onOwnThread { try member.backendSnapshot() }
        } catch {
            throw RPCError(code: .unknown, message: "\(error)")
        }
        defer { snapshot.cancel() }
        let version = EtcdVersion.api + ".0"
        func message(_ blob: Data, remaining: Int) -> Etcdserverpb_SnapshotResponse {
            var out = Etcdserverpb_SnapshotResponse()
            out.header = member.header()
            out.remainingBytes = UInt64(remaining)
            out.blob = blob
            out.version = version
            return out
        }
        var sent = 0
        while true {
            let block: Data?
            do { block = try await snapshot.nextBlock() } catch is CancellationError { throw CancellationError() } catch {
                throw RPCError(code: .unknown, message: "\(error)")
            }
            guard let block else { break }
            var messages: [Etcdserverpb_SnapshotResponse] = []
            var start = block.startIndex
            while start < block.endIndex {
                let end = min(start + Self.snapshotChunkBytes, block.endIndex)
                sent += end - start
                messages.append(message(block[start..<end], remaining: snapshot.size - sent))
                start = end
            }
            try await response.write(contentsOf: messages)
        }
        try await response.write(message(Data(snapshot.digest()), remaining: 0))
    }

    /// etcd's snapshotSendBufferSize. Blocks (`BboltWriter.defaultBlockBytes`)
    /// are a multiple of it, so every chunk but the last is full.
    static let snapshotChunkBytes = 32 * 1024

    func moveLeader(request: Etcdserverpb_MoveLeaderRequest, context: ServerContext) async throws -> Etcdserverpb_MoveLeaderResponse {
        try await etcdCall {
            try await member.moveLeader(to: request.targetID)
            var response = Etcdserverpb_MoveLeaderResponse()
            response.header = member.header()
            return response
        }
    }

    func downgrade(request: Etcdserverpb_DowngradeRequest, context: ServerContext) async throws -> Etcdserverpb_DowngradeResponse {
        try await etcdCall { try await member.downgrade(request) }
    }
}

/// etcdserverpb.Cluster: the members as applied from the raft log, and
/// membership changes through raft.
struct ClusterService: Etcdserverpb_Cluster.SimpleServiceProtocol {
    let member: Member

    private func members() -> [Etcdserverpb_Member] { member.memberList().map(Etcdserverpb_Member.init) }

    /// etcd's Cluster responses carry cluster, member and term, no revision.
    private func header() -> Etcdserverpb_ResponseHeader { member.header(revision: 0) }

    func memberList(request: Etcdserverpb_MemberListRequest, context: ServerContext) async throws -> Etcdserverpb_MemberListResponse {
        var response = Etcdserverpb_MemberListResponse()
        response.header = header()
        response.members = members()
        return response
    }

    func memberAdd(request: Etcdserverpb_MemberAddRequest, context: ServerContext) async throws -> Etcdserverpb_MemberAddResponse {
        try await etcdCall {
            let added = try await member.memberAdd(peerURLs: request.peerUrls, isLearner: request.isLearner)
            var response = Etcdserverpb_MemberAddResponse()
            response.header = header()
            response.member = Etcdserverpb_Member(added)
            response.members = members()
            return response
        }
    }

    func memberRemove(request: Etcdserverpb_MemberRemoveRequest, context: ServerContext) async throws -> Etcdserverpb_MemberRemoveResponse {
        try await etcdCall {
            try await member.memberRemove(id: request.id)
            var response = Etcdserverpb_MemberRemoveResponse()
            response.header = header()
            response.members = members()
            return response
        }
    }

    func memberUpdate(request: Etcdserverpb_MemberUpdateRequest, context: ServerContext) async throws -> Etcdserverpb_MemberUpdateResponse {
        try await etcdCall {
            try await member.memberUpdate(id: request.id, peerURLs: request.peerUrls)
            var response = Etcdserverpb_MemberUpdateResponse()
            response.header = header()
            response.members = members()
            return response
        }
    }

    func memberPromote(request: Etcdserverpb_MemberPromoteRequest, context: ServerContext) async throws -> Etcdserverpb_MemberPromoteResponse {
        try await etcdCall {
            try await member.memberPromote(id: request.id)
            var response = Etcdserverpb_MemberPromoteResponse()
            response.header = header()
            response.members = members()
            return response
        }
    }
}

extension Etcdserverpb_Member {
    init(_ record: MemberRecord) {
        self.init()
        id = record.id
        name = record.name
        peerUrls = record.peerURLs
        clientUrls = record.clientURLs
        isLearner = record.isLearner
    }
}

/// Runs blocking work (file I/O for a whole snapshot) on a new thread, not
/// on the cooperative pool.
func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
    }
}
