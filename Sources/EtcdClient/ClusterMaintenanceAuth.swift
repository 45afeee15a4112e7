import EtcdGRPC
import EtcdProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2

public typealias Member = Etcdserverpb_Member
public typealias StatusResponse = Etcdserverpb_StatusResponse
public typealias AlarmMember = Etcdserverpb_AlarmMember
public typealias Permission = Authpb_Permission

typealias Transport = HTTP2ClientTransport.Posix

// MARK: - Cluster

extension EtcdClient {
    func cluster<R: Sendable>(_ safety: CallSafety,
                              _ body: @Sendable @escaping (Etcdserverpb_Cluster.Client<Transport>, CallOptions, Metadata) async throws -> R) async throws -> R {
        try await call(safety) { grpc, o, m in try await body(Etcdserverpb_Cluster.Client(wrapping: grpc), o, m) }
    }

    /// The cluster's members.
    public func memberList() async throws -> Etcdserverpb_MemberListResponse {
        try await cluster(.idempotent) { c, o, m in try await c.memberList(Etcdserverpb_MemberListRequest(), metadata: m, options: o) }
    }

    /// Adds a member (a learner when `isLearner`).
    public func memberAdd(peerURLs: [String], isLearner: Bool = false) async throws -> Etcdserverpb_MemberAddResponse {
        var r = Etcdserverpb_MemberAddRequest()
        r.peerUrls = peerURLs
        r.isLearner = isLearner
        return try await cluster(.mutating) { [r] c, o, m in try await c.memberAdd(r, metadata: m, options: o) }
    }

    /// Removes a member.
    @discardableResult
    public func memberRemove(id: UInt64) async throws -> Etcdserverpb_MemberRemoveResponse {
        var r = Etcdserverpb_MemberRemoveRequest()
        r.id = id
        return try await cluster(.mutating) { [r] c, o, m in try await c.memberRemove(r, metadata: m, options: o) }
    }

    /// Changes a member's peer URLs.
    @discardableResult
    public func memberUpdate(id: UInt64, peerURLs: [String]) async throws -> Etcdserverpb_MemberUpdateResponse {
        var r = Etcdserverpb_MemberUpdateRequest()
        r.id = id
        r.peerUrls = peerURLs
        return try await cluster(.idempotent) { [r] c, o, m in try await c.memberUpdate(r, metadata: m, options: o) }
    }

    /// Promotes a learner to a voting member.
    @discardableResult
    public func memberPromote(id: UInt64) async throws -> Etcdserverpb_MemberPromoteResponse {
        var r = Etcdserverpb_MemberPromoteRequest()
        r.id = id
        return try await cluster(.mutating) { [r] c, o, m in try await c.memberPromote(r, metadata: m, options: o) }
    }
}

// MARK: - Maintenance

extension EtcdClient {
    func maintenance<R: Sendable>(_ safety: CallSafety, endpoint: String? = nil, timeout: Duration?? = nil,
                                  _ body: @Sendable @escaping (Etcdserverpb_Maintenance.Client<Transport>, CallOptions, Metadata) async throws -> R) async throws -> R {
        try await call(safety, endpoint: endpoint, timeout: timeout) { grpc, o, m in try await body(Etcdserverpb_Maintenance.Client(wrapping: grpc), o, m) }
    }

    /// The status of one member (`endpoint`, or the active endpoint when nil).
    public func status(endpoint: String? = nil) async throws -> StatusResponse {
        try await maintenance(.idempotent, endpoint: endpoint) { c, o, m in try await c.status(Etcdserverpb_StatusRequest(), metadata: m, options: o) }
    }

    /// Active alarms of every member.
    public func alarmList() async throws -> Etcdserverpb_AlarmResponse {
        var r = Etcdserverpb_AlarmRequest()
        r.action = .get
        return try await maintenance(.idempotent) { [r] c, o, m in try await c.alarm(r, metadata: m, options: o) }
    }

    /// Disarms an alarm (memberID 0 and type `.none`: every alarm).
    @discardableResult
    public func alarmDisarm(memberID: UInt64 = 0, alarm: Etcdserverpb_AlarmType = .none) async throws -> Etcdserverpb_AlarmResponse {
        if memberID == 0 && alarm == .none {
            // Like etcd's client: disarm each active alarm.
            let active = try await alarmList()
            var last = active
            last.alarms = []
            for a in active.alarms {
                let response = try await alarmDisarm(memberID: a.memberID, alarm: a.alarm)
                last.header = response.header
                last.alarms += response.alarms
            }
            return last
        }
        var r = Etcdserverpb_AlarmRequest()
        r.action = .deactivate
        r.memberID = memberID
        r.alarm = alarm
        return try await maintenance(.idempotent) { [r] c, o, m in try await c.alarm(r, metadata: m, options: o) }
    }

    /// Defragments one member's backend.
    @discardableResult
    public func defragment(endpoint: String? = nil, timeout: Duration?? = nil) async throws -> Etcdserverpb_DefragmentResponse {
        try await maintenance(.idempotent, endpoint: endpoint, timeout: timeout) { c, o, m in
            try await c.defragment(Etcdserverpb_DefragmentRequest(), metadata: m, options: o)
        }
    }

    /// Maintenance.Downgrade: VALIDATE or ENABLE a downgrade to `version`
    /// (`3.5`), or CANCEL the one in progress.
    @discardableResult
    public func downgrade(_ action: Etcdserverpb_DowngradeRequest.DowngradeAction, version: String = "") async throws
        -> Etcdserverpb_DowngradeResponse
    {
        var r = Etcdserverpb_DowngradeRequest()
        r.action = action
        r.version = version
        return try await maintenance(.idempotent) { [r] c, o, m in try await c.downgrade(r, metadata: m, options: o) }
    }

    /// The hash of a member's whole backend.
    public func hash(endpoint: String? = nil) async throws -> Etcdserverpb_HashResponse {
        try await maintenance(.idempotent, endpoint: endpoint) { c, o, m in try await c.hash(Etcdserverpb_HashRequest(), metadata: m, options: o) }
    }

    /// The hash of a member's key-value history up to `revision` (0: all).
    public func hashKV(endpoint: String? = nil, revision: Int64 = 0) async throws -> Etcdserverpb_HashKVResponse {
        var r = Etcdserverpb_HashKVRequest()
        r.revision = revision
        return try await maintenance(.idempotent, endpoint: endpoint) { [r] c, o, m in try await c.hashKV(r, metadata: m, options: o) }
    }

    /// Transfers leadership to `targetID`; must be sent to the leader (`endpoint`).
    @discardableResult
    public func moveLeader(targetID: UInt64, endpoint: String? = nil) async throws -> Etcdserverpb_MoveLeaderResponse {
        var r = Etcdserverpb_MoveLeaderRequest()
        r.targetID = targetID
        return try await maintenance(.mutating, endpoint: endpoint) { [r] c, o, m in try await c.moveLeader(r, metadata: m, options: o) }
    }

    /// Streams a backend snapshot from one member as chunks of bytes.
    ///
    /// The stream has no time limit; cancel the iteration to stop it.
    public func snapshot(endpoint: String? = nil) -> AsyncThrowingStream<Data, any Error> {
        let (stream, continuation) = AsyncThrowingStream<Data, any Error>.makeStream()
        let task = Task {
            do {
                try await self.maintenance(.idempotent, endpoint: endpoint, timeout: .some(nil)) { c, o, m in
                    try await c.snapshot(Etcdserverpb_SnapshotRequest(), metadata: m, options: o) { response in
                        for try await chunk in response.messages {
                            continuation.yield(chunk.blob)
                        }
                    }
                }
                continuation.finish()
            } catch {
                continuation.finish(throwing: EtcdClientError(error))
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }
}

// MARK: - Auth

extension EtcdClient {
    func auth<R: Sendable>(_ safety: CallSafety,
                           _ body: @Sendable @escaping (Etcdserverpb_Auth.Client<Transport>, CallOptions, Metadata) async throws -> R) async throws -> R {
        try await call(safety) { grpc, o, m in try await body(Etcdserverpb_Auth.Client(wrapping: grpc), o, m) }
    }

    /// Turns authentication on (needs a `root` user with the `root` role).
    @discardableResult
    public func authEnable() async throws -> Etcdserverpb_AuthEnableResponse {
        try await auth(.idempotent) { a, o, m in try await a.authEnable(Etcdserverpb_AuthEnableRequest(), metadata: m, options: o) }
    }

    /// Turns authentication off.
    @discardableResult
    public func authDisable() async throws -> Etcdserverpb_AuthDisableResponse {
        try await auth(.idempotent) { a, o, m in try await a.authDisable(Etcdserverpb_AuthDisableRequest(), metadata: m, options: o) }
    }

    /// Whether authentication is enabled (etcd 3.5 and later; 3.4 answers `Unimplemented`).
    public func authStatus() async throws -> Etcdserverpb_AuthStatusResponse {
        try await auth(.idempotent) { a, o, m in try await a.authStatus(Etcdserverpb_AuthStatusRequest(), metadata: m, options: o) }
    }

    /// Creates a user (`noPassword`: only certificate CN authentication).
    @discardableResult
    public func userAdd(_ name: String, password: String, noPassword: Bool = false) async throws -> Etcdserverpb_AuthUserAddResponse {
        var r = Etcdserverpb_AuthUserAddRequest()
        r.name = name
        r.password = password
        var options = Authpb_UserAddOptions()
        options.noPassword = noPassword
        r.options = options
        return try await auth(.mutating) { [r] a, o, m in try await a.userAdd(r, metadata: m, options: o) }
    }

    /// A user's roles.
    public func userGet(_ name: String) async throws -> Etcdserverpb_AuthUserGetResponse {
        var r = Etcdserverpb_AuthUserGetRequest()
        r.name = name
        return try await auth(.idempotent) { [r] a, o, m in try await a.userGet(r, metadata: m, options: o) }
    }

    /// All user names.
    public func userList() async throws -> Etcdserverpb_AuthUserListResponse {
        try await auth(.idempotent) { a, o, m in try await a.userList(Etcdserverpb_AuthUserListRequest(), metadata: m, options: o) }
    }

    /// Deletes a user.
    @discardableResult
    public func userDelete(_ name: String) async throws -> Etcdserverpb_AuthUserDeleteResponse {
        var r = Etcdserverpb_AuthUserDeleteRequest()
        r.name = name
        return try await auth(.mutating) { [r] a, o, m in try await a.userDelete(r, metadata: m, options: o) }
    }

    /// Changes a user's password.
    @discardableResult
    public func userChangePassword(_ name: String, password: String) async throws -> Etcdserverpb_AuthUserChangePasswordResponse {
        var r = Etcdserverpb_AuthUserChangePasswordRequest()
        r.name = name
        r.password = password
        return try await auth(.idempotent) { [r] a, o, m in try await a.userChangePassword(r, metadata: m, options: o) }
    }

    /// Grants a role to a user.
    @discardableResult
    public func userGrantRole(_ user: String, role: String) async throws -> Etcdserverpb_AuthUserGrantRoleResponse {
        var r = Etcdserverpb_AuthUserGrantRoleRequest()
        r.user = user
        r.role = role
        return try await auth(.idempotent) { [r] a, o, m in try await a.userGrantRole(r, metadata: m, options: o) }
    }

    /// Revokes a role from a user.
    @discardableResult
    public func userRevokeRole(_ user: String, role: String) async throws -> Etcdserverpb_AuthUserRevokeRoleResponse {
        var r = Etcdserverpb_AuthUserRevokeRoleRequest()
        r.name = user
        r.role = role
        return try await auth(.mutating) { [r] a, o, m in try await a.userRevokeRole(r, metadata: m, options: o) }
    }

    /// Creates a role.
    @discardableResult
    public func roleAdd(_ name: String) async throws -> Etcdserverpb_AuthRoleAddResponse {
        var r = Etcdserverpb_AuthRoleAddRequest()
        r.name = name
        return try await auth(.mutating) { [r] a, o, m in try await a.roleAdd(r, metadata: m, options: o) }
    }

    /// A role's permissions.
    public func roleGet(_ name: String) async throws -> Etcdserverpb_AuthRoleGetResponse {
        var r = Etcdserverpb_AuthRoleGetRequest()
        r.role = name
        return try await auth(.idempotent) { [r] a, o, m in try await a.roleGet(r, metadata: m, options: o) }
    }

    /// All role names.
    public func roleList() async throws -> Etcdserverpb_AuthRoleListResponse {
        try await auth(.idempotent) { a, o, m in try await a.roleList(Etcdserverpb_AuthRoleListRequest(), metadata: m, options: o) }
    }

    /// Deletes a role.
    @discardableResult
    public func roleDelete(_ name: String) async throws -> Etcdserverpb_AuthRoleDeleteResponse {
        var r = Etcdserverpb_AuthRoleDeleteRequest()
        r.role = name
        return try await auth(.mutating) { [r] a, o, m in try await a.roleDelete(r, metadata: m, options: o) }
    }

    /// Grants `type` access to `[key, rangeEnd)` (just `key` when `rangeEnd` is empty).
    @discardableResult
    public func roleGrantPermission(_ role: String, key: some EtcdBytes, rangeEnd: some EtcdBytes = Data(),
                                    type: Authpb_Permission.TypeEnum) async throws -> Etcdserverpb_AuthRoleGrantPermissionResponse {
        var r = Etcdserverpb_AuthRoleGrantPermissionRequest()
        r.name = role
        var perm = Authpb_Permission()
        perm.key = key.etcdBytes
        perm.rangeEnd = rangeEnd.etcdBytes
        perm.permType = type
        r.perm = perm
        return try await auth(.idempotent) { [r] a, o, m in try await a.roleGrantPermission(r, metadata: m, options: o) }
    }

    /// Revokes the permission on `[key, rangeEnd)` from a role.
    @discardableResult
    public func roleRevokePermission(_ role: String, key: some EtcdBytes, rangeEnd: some EtcdBytes = Data()) async throws -> Etcdserverpb_AuthRoleRevokePermissionResponse {
        var r = Etcdserverpb_AuthRoleRevokePermissionRequest()
        r.role = role
        r.key = key.etcdBytes
        r.rangeEnd = rangeEnd.etcdBytes
        return try await auth(.mutating) { [r] a, o, m in try await a.roleRevokePermission(r, metadata: m, options: o) }
    }
}
