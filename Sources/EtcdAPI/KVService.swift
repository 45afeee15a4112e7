import EtcdGRPC
import EtcdProto
import EtcdServer
import GRPCCore

/// etcdserverpb.KV over a member.
struct KVService: Etcdserverpb_KV.SimpleServiceProtocol {
    let member: Member

    func range(request: Etcdserverpb_RangeRequest, context: ServerContext) async throws -> Etcdserverpb_RangeResponse {
        try await etcdCall {
            var response = try await member.range(request)
            response.header = member.header(revision: response.header.revision)
            return response
        }
    }

    func put(request: Etcdserverpb_PutRequest, context: ServerContext) async throws -> Etcdserverpb_PutResponse {
        try await etcdCall {
            var response = try await member.put(request)
            response.header = member.header(revision: response.header.revision)
            return response
        }
    }

    func deleteRange(request: Etcdserverpb_DeleteRangeRequest, context: ServerContext) async throws -> Etcdserverpb_DeleteRangeResponse {
        try await etcdCall {
            var response = try await member.deleteRange(request)
            response.header = member.header(revision: response.header.revision)
            return response
        }
    }

    func txn(request: Etcdserverpb_TxnRequest, context: ServerContext) async throws -> Etcdserverpb_TxnResponse {
        try await etcdCall {
            var response = try await member.txn(request)
            response.header = member.header(revision: response.header.revision)
            return response
        }
    }

    func compact(request: Etcdserverpb_CompactionRequest, context: ServerContext) async throws -> Etcdserverpb_CompactionResponse {
        try await etcdCall {
            var response = try await member.compact(request)
            response.header = member.header(revision: response.header.revision)
            return response
        }
    }
}
