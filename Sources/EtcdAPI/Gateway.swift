import EtcdGRPC
import EtcdProto
import Foundation
import GRPCCore
import GRPCWire
import NIOCore
import NIOHPACK
import NIOHTTP1
import SwiftProtobuf

/// etcd's JSON gateway (grpc-gateway in etcd): `POST /v3/...` with a JSON
/// request body, answered with the JSON of the gRPC response. Each request
/// becomes a local call of the same `WireRouter` method a gRPC client
/// reaches, so handling, auth and errors are the gRPC service's own; only
/// the encoding differs. JSON as grpc-gateway writes it: proto field names,
/// 64-bit integers as strings, bytes base64, default values omitted.
struct GatewayRoute: Sendable {
    /// The HTTP path, e.g. `/v3/kv/range`.
    let path: String
    /// The gRPC method, e.g. `/etcdserverpb.KV/Range`.
    let grpcPath: String
    /// Request JSON to protobuf bytes.
    let decode: @Sendable (ByteBuffer) throws -> [UInt8]
    /// One response message (protobuf bytes) to JSON.
    let encode: @Sendable (ByteBuffer) throws -> [UInt8]
    /// A streaming method: the body is a sequence of JSON requests, the
    /// answer newline-delimited `{"result":...}` objects.
    let streaming: Bool

    init<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ path: String, _ method: MethodDescriptor, _ request: Request.Type, _ response: Response.Type, streaming: Bool = false
    ) {
        self.path = path
        self.grpcPath = "/" + method.fullyQualifiedMethod
        self.streaming = streaming
        decode = { body in
            let request: Request
            do {
                request = try Request(jsonUTF8Bytes: Gateway.bytes(body), options: Gateway.decodingOptions)
            } catch {
                throw WireStatus(code: .invalidArgument, message: "json: cannot decode \(Request.protoMessageName): \(error)")
            }
            return try request.serializedBytes()
        }
        encode = { bytes in
            let response = try Response(serializedBytes: Gateway.bytes(bytes))
            return try response.jsonUTF8Bytes(options: Gateway.encodingOptions)
        }
    }
}

enum Gateway {
    /// Every path the gateway serves under `/v3/` (and `/v3beta/`), as etcd's
    /// rpc.proto binds them. One line per method: adding a service's
    /// methods (Lock, Election) is adding their lines here.
    static let routes: [GatewayRoute] = [
        GatewayRoute("/v3/kv/range", Etcdserverpb_KV.Method.Range.descriptor, Etcdserverpb_RangeRequest.self, Etcdserverpb_RangeResponse.self),
        GatewayRoute("/v3/kv/put", Etcdserverpb_KV.Method.Put.descriptor, Etcdserverpb_PutRequest.self, Etcdserverpb_PutResponse.self),
        GatewayRoute("/v3/kv/deleterange", Etcdserverpb_KV.Method.DeleteRange.descriptor,
                     Etcdserverpb_DeleteRangeRequest.self, Etcdserverpb_DeleteRangeResponse.self),
        GatewayRoute("/v3/kv/txn", Etcdserverpb_KV.Method.Txn.descriptor, Etcdserverpb_TxnRequest.self, Etcdserverpb_TxnResponse.self),
        GatewayRoute("/v3/kv/compaction", Etcdserverpb_KV.Method.Compact.descriptor,
                     Etcdserverpb_CompactionRequest.self, Etcdserverpb_CompactionResponse.self),
        GatewayRoute("/v3/watch", Etcdserverpb_Watch.Method.Watch.descriptor, Etcdserverpb_WatchRequest.self, Etcdserverpb_WatchResponse.self,
                     streaming: true),
        GatewayRoute("/v3/lease/grant", Etcdserverpb_Lease.Method.LeaseGrant.descriptor,
                     Etcdserverpb_LeaseGrantRequest.self, Etcdserverpb_LeaseGrantResponse.self),
        GatewayRoute("/v3/lease/revoke", Etcdserverpb_Lease.Method.LeaseRevoke.descriptor,
                     Etcdserverpb_LeaseRevokeRequest.self, Etcdserverpb_LeaseRevokeResponse.self),
        GatewayRoute("/v3/kv/lease/revoke", Etcdserverpb_Lease.Method.LeaseRevoke.descriptor,
                     Etcdserverpb_LeaseRevokeRequest.self, Etcdserverpb_LeaseRevokeResponse.self),
        GatewayRoute("/v3/lease/keepalive", Etcdserverpb_Lease.Method.LeaseKeepAlive.descriptor,
                     Etcdserverpb_LeaseKeepAliveRequest.self, Etcdserverpb_LeaseKeepAliveResponse.self, streaming: true),
        GatewayRoute("/v3/lease/timetolive", Etcdserverpb_Lease.Method.LeaseTimeToLive.descriptor,
                     Etcdserverpb_LeaseTimeToLiveRequest.self, Etcdserverpb_LeaseTimeToLiveResponse.self),
        GatewayRoute("/v3/kv/lease/timetolive", Etcdserverpb_Lease.Method.LeaseTimeToLive.descriptor,
                     Etcdserverpb_LeaseTimeToLiveRequest.self, Etcdserverpb_LeaseTimeToLiveResponse.self),
        GatewayRoute("/v3/lease/leases", Etcdserverpb_Lease.Method.LeaseLeases.descriptor,
                     Etcdserverpb_LeaseLeasesRequest.self, Etcdserverpb_LeaseLeasesResponse.self),
        GatewayRoute("/v3/kv/lease/leases", Etcdserverpb_Lease.Method.LeaseLeases.descriptor,
                     Etcdserverpb_LeaseLeasesRequest.self, Etcdserverpb_LeaseLeasesResponse.self),
        GatewayRoute("/v3/cluster/member/add", Etcdserverpb_Cluster.Method.MemberAdd.descriptor,
                     Etcdserverpb_MemberAddRequest.self, Etcdserverpb_MemberAddResponse.self),
        GatewayRoute("/v3/cluster/member/remove", Etcdserverpb_Cluster.Method.MemberRemove.descriptor,
                     Etcdserverpb_MemberRemoveRequest.self, Etcdserverpb_MemberRemoveResponse.self),
        GatewayRoute("/v3/cluster/member/update", Etcdserverpb_Cluster.Method.MemberUpdate.descriptor,
                     Etcdserverpb_MemberUpdateRequest.self, Etcdserverpb_MemberUpdateResponse.self),
        GatewayRoute("/v3/cluster/member/list", Etcdserverpb_Cluster.Method.MemberList.descriptor,
                     Etcdserverpb_MemberListRequest.self, Etcdserverpb_MemberListResponse.self),
        GatewayRoute("/v3/cluster/member/promote", Etcdserverpb_Cluster.Method.MemberPromote.descriptor,
                     Etcdserverpb_MemberPromoteRequest.self, Etcdserverpb_MemberPromoteResponse.self),
        GatewayRoute("/v3/maintenance/alarm", Etcdserverpb_Maintenance.Method.Alarm.descriptor,
                     Etcdserverpb_AlarmRequest.self, Etcdserverpb_AlarmResponse.self),
        GatewayRoute("/v3/maintenance/status", Etcdserverpb_Maintenance.Method.Status.descriptor,
                     Etcdserverpb_StatusRequest.self, Etcdserverpb_StatusResponse.self),
        GatewayRoute("/v3/maintenance/defragment", Etcdserverpb_Maintenance.Method.Defragment.descriptor,
                     Etcdserverpb_DefragmentRequest.self, Etcdserverpb_DefragmentResponse.self),
        // Hash and HashKV share this path in rpc.proto; grpc-gateway serves
        // the first registered, Hash.
        GatewayRoute("/v3/maintenance/hash", Etcdserverpb_Maintenance.Method.Hash.descriptor,
                     Etcdserverpb_HashRequest.self, Etcdserverpb_HashResponse.self),
        GatewayRoute("/v3/maintenance/snapshot", Etcdserverpb_Maintenance.Method.Snapshot.descriptor,
                     Etcdserverpb_SnapshotRequest.self, Etcdserverpb_SnapshotResponse.self, streaming: true),
        GatewayRoute("/v3/maintenance/transfer-leadership", Etcdserverpb_Maintenance.Method.MoveLeader.descriptor,
                     Etcdserverpb_MoveLeaderRequest.self, Etcdserverpb_MoveLeaderResponse.self),
        GatewayRoute("/v3/maintenance/downgrade", Etcdserverpb_Maintenance.Method.Downgrade.descriptor,
                     Etcdserverpb_DowngradeRequest.self, Etcdserverpb_DowngradeResponse.self),
        GatewayRoute("/v3/auth/enable", Etcdserverpb_Auth.Method.AuthEnable.descriptor,
                     Etcdserverpb_AuthEnableRequest.self, Etcdserverpb_AuthEnableResponse.self),
        GatewayRoute("/v3/auth/disable", Etcdserverpb_Auth.Method.AuthDisable.descriptor,
                     Etcdserverpb_AuthDisableRequest.self, Etcdserverpb_AuthDisableResponse.self),
        GatewayRoute("/v3/auth/status", Etcdserverpb_Auth.Method.AuthStatus.descriptor,
                     Etcdserverpb_AuthStatusRequest.self, Etcdserverpb_AuthStatusResponse.self),
        GatewayRoute("/v3/lock/lock", V3lockpb_Lock.Method.Lock.descriptor, V3lockpb_LockRequest.self, V3lockpb_LockResponse.self),
        GatewayRoute("/v3/lock/unlock", V3lockpb_Lock.Method.Unlock.descriptor, V3lockpb_UnlockRequest.self, V3lockpb_UnlockResponse.self),
        GatewayRoute("/v3/election/campaign", V3electionpb_Election.Method.Campaign.descriptor,
                     V3electionpb_CampaignRequest.self, V3electionpb_CampaignResponse.self),
        GatewayRoute("/v3/election/proclaim", V3electionpb_Election.Method.Proclaim.descriptor,
                     V3electionpb_ProclaimRequest.self, V3electionpb_ProclaimResponse.self),
        GatewayRoute("/v3/election/leader", V3electionpb_Election.Method.Leader.descriptor,
                     V3electionpb_LeaderRequest.self, V3electionpb_LeaderResponse.self),
        GatewayRoute("/v3/election/observe", V3electionpb_Election.Method.Observe.descriptor,
                     V3electionpb_LeaderRequest.self, V3electionpb_LeaderResponse.self, streaming: true),
        GatewayRoute("/v3/election/resign", V3electionpb_Election.Method.Resign.descriptor,
                     V3electionpb_ResignRequest.self, V3electionpb_ResignResponse.self),
        GatewayRoute("/v3/auth/authenticate", Etcdserverpb_Auth.Method.Authenticate.descriptor,
                     Etcdserverpb_AuthenticateRequest.self, Etcdserverpb_AuthenticateResponse.self),
        GatewayRoute("/v3/auth/user/add", Etcdserverpb_Auth.Method.UserAdd.descriptor,
                     Etcdserverpb_AuthUserAddRequest.self, Etcdserverpb_AuthUserAddResponse.self),
        GatewayRoute("/v3/auth/user/get", Etcdserverpb_Auth.Method.UserGet.descriptor,
                     Etcdserverpb_AuthUserGetRequest.self, Etcdserverpb_AuthUserGetResponse.self),
        GatewayRoute("/v3/auth/user/list", Etcdserverpb_Auth.Method.UserList.descriptor,
                     Etcdserverpb_AuthUserListRequest.self, Etcdserverpb_AuthUserListResponse.self),
        GatewayRoute("/v3/auth/user/delete", Etcdserverpb_Auth.Method.UserDelete.descriptor,
                     Etcdserverpb_AuthUserDeleteRequest.self, Etcdserverpb_AuthUserDeleteResponse.self),
        GatewayRoute("/v3/auth/user/changepw", Etcdserverpb_Auth.Method.UserChangePassword.descriptor,
                     Etcdserverpb_AuthUserChangePasswordRequest.self, Etcdserverpb_AuthUserChangePasswordResponse.self),
        GatewayRoute("/v3/auth/user/grant", Etcdserverpb_Auth.Method.UserGrantRole.descriptor,
                     Etcdserverpb_AuthUserGrantRoleRequest.self, Etcdserverpb_AuthUserGrantRoleResponse.self),
        GatewayRoute("/v3/auth/user/revoke", Etcdserverpb_Auth.Method.UserRevokeRole.descriptor,
                     Etcdserverpb_AuthUserRevokeRoleRequest.self, Etcdserverpb_AuthUserRevokeRoleResponse.self),
        GatewayRoute("/v3/auth/role/add", Etcdserverpb_Auth.Method.RoleAdd.descriptor,
                     Etcdserverpb_AuthRoleAddRequest.self, Etcdserverpb_AuthRoleAddResponse.self),
        GatewayRoute("/v3/auth/role/get", Etcdserverpb_Auth.Method.RoleGet.descriptor,
                     Etcdserverpb_AuthRoleGetRequest.self, Etcdserverpb_AuthRoleGetResponse.self),
        GatewayRoute("/v3/auth/role/list", Etcdserverpb_Auth.Method.RoleList.descriptor,
                     Etcdserverpb_AuthRoleListRequest.self, Etcdserverpb_AuthRoleListResponse.self),
        GatewayRoute("/v3/auth/role/delete", Etcdserverpb_Auth.Method.RoleDelete.descriptor,
                     Etcdserverpb_AuthRoleDeleteRequest.self, Etcdserverpb_AuthRoleDeleteResponse.self),
        GatewayRoute("/v3/auth/role/grant", Etcdserverpb_Auth.Method.RoleGrantPermission.descriptor,
                     Etcdserverpb_AuthRoleGrantPermissionRequest.self, Etcdserverpb_AuthRoleGrantPermissionResponse.self),
        GatewayRoute("/v3/auth/role/revoke", Etcdserverpb_Auth.Method.RoleRevokePermission.descriptor,
                     Etcdserverpb_AuthRoleRevokePermissionRequest.self, Etcdserverpb_AuthRoleRevokePermissionResponse.self),
    ]

    static let byPath: [String: GatewayRoute] = Dictionary(routes.map { ($0.path, $0) }, uniquingKeysWith: { first, _ in first })

    /// grpc-gateway's jsonpb: unknown fields are ignored.
    static let decodingOptions: JSONDecodingOptions = {
        var options = JSONDecodingOptions()
        options.ignoreUnknownFields = true
        return options
    }()

    /// grpc-gateway's `JSONPb{OrigName: true}`: proto field names, defaults omitted.
    static let encodingOptions: JSONEncodingOptions = {
        var options = JSONEncodingOptions()
        options.preserveProtoFieldNames = true
        return options
    }()

    static func bytes(_ buffer: ByteBuffer) -> [UInt8] { buffer.getBytes(at: buffer.readerIndex, length: buffer.readableBytes) ?? [] }

    /// The HTTP status grpc-gateway (v1, as in etcd) answers a gRPC code with.
    static func httpStatus(_ code: WireStatus.Code) -> Int {
        switch code {
        case .ok: 200
        case .cancelled: 408
        case .unknown: 500
        case .invalidArgument: 400
        case .deadlineExceeded: 504
        case .notFound: 404
        case .alreadyExists: 409
        case .permissionDenied: 403
        case .unauthenticated: 401
        case .resourceExhausted: 429
        case .failedPrecondition: 412
        case .aborted: 409
        case .outOfRange: 400
        case .unimplemented: 501
        case .internalError: 500
        case .unavailable: 503
        case .dataLoss: 500
        }
    }

    /// grpc-gateway's error body: `{"error":…,"message":…,"code":…}`.
    static func errorBody(_ status: WireStatus) -> ByteBuffer {
        let message = jsonString(status.message)
        return ByteBuffer(string: "{\"error\":\(message),\"message\":\(message),\"code\":\(status.code.rawValue)}")
    }

    /// A stream's error, as grpc-gateway writes it into a stream.
    static func streamErrorBody(_ status: WireStatus) -> ByteBuffer {
        let http = httpStatus(status.code)
        let text = HTTPResponseStatus(statusCode: http).reasonPhrase
        return ByteBuffer(string: "{\"error\":{\"grpc_code\":\(status.code.rawValue),\"http_code\":\(http),\"message\":\(jsonString(status.message)),"
                          + "\"http_status\":\(jsonString(text))}}\n")
    }

    /// `text` as a JSON string literal (via Foundation's encoder).
    static func jsonString(_ text: String) -> String {
        guard let data = try? JSONEncoder().encode(text), let quoted = String(data: data, encoding: .utf8) else { return "\"\"" }
        return quoted
    }
}
