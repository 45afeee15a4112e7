import EtcdProto
import Foundation
import GRPCCore

public typealias Member = Etcdserverpb_Member
public typealias StatusResponse = Etcdserverpb_StatusResponse
public typealias AlarmMember = Etcdserverpb_AlarmMember
public typealias Permission = Authpb_Permission

// MARK: - Cluster

extension EtcdClient {
    /// The cluster's members.
    public func memberList() async throws -> Etcdserverpb_MemberListResponse {
        try await unary("/etcdserverpb.Cluster/MemberList", Etcdserverpb_MemberListRequest(), .idempotent)
    }

    /// Adds a member (a learner when `isLearner`).
    public func memberAdd(peerURLs: [String], isLearner: Bool = false) async throws -> Etcdserverpb_MemberAddResponse {
        var r = Etcdserverpb_MemberAddRequest()
        r.peerUrls = peerURLs
        r.isLearner = isLearner
        return try await unary("/etcdserverpb.Cluster/MemberAdd", r, .mutating)
    }

    /// Removes a member.
    @discardableResult
    public func memberRemove(id: UInt64) async throws -> Etcdserverpb_MemberRemoveResponse {
        var r = Etcdserverpb_MemberRemoveRequest()
        r.id = id
        return try await unary("/etcdserverpb.Cluster/MemberRemove", r, .mutating)
    }

    /// Changes a member's peer URLs.
    @discardableResult
    public func memberUpdate(id: UInt64, peerURLs: [String]) async throws -> Etcdserverpb_MemberUpdateResponse {
        var r = Etcdserverpb_MemberUpdateRequest()
        r.id = id
        r.peerUrls = peerURLs
        return try await unary("/etcdserverpb.Cluster/MemberUpdate", r, .idempotent)
    }

    /// Promotes a learner to a voting member.
    @discardableResult
    public func memberPromote(id: UInt64) async throws -> Etcdserverpb_MemberPromoteResponse {
        var r = Etcdserverpb_MemberPromoteRequest()
        r.id = id
        return try await unary("/etcdserverpb.Cluster/MemberPromote", r, .mutating)
    }
}

// MARK: - Maintenance

extension EtcdClient {
    /// The status of one member (`endpoint`, or the active endpoint when nil).
    public func status(endpoint: String? = nil) async throws -> StatusResponse {
        try await unary("/etcdserverpb.Maintenance/Status", Etcdserverpb_StatusRequest(), .idempotent, endpoint: endpoint)
    }

    /// Active alarms of every member.
    public func alarmList() async throws -> Etcdserverpb_AlarmResponse {
        var r = Etcdserverpb_AlarmRequest()
        r.action = .get
        return try await unary("/etcdserverpb.Maintenance/Alarm", r, .idempotent)
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
        return try await unary("/etcdserverpb.Maintenance/Alarm", r, .idempotent)
    }

    /// Defragments one member's backend.
    @discardableResult
    public func defragment(endpoint: String? = nil, timeout: Duration?? = nil) async throws -> Etcdserverpb_DefragmentResponse {
        try await unary("/etcdserverpb.Maintenance/Defragment", Etcdserverpb_DefragmentRequest(), .idempotent, endpoint: endpoint, timeout: timeout)
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
        return try await unary("/etcdserverpb.Maintenance/Downgrade", r, .idempotent)
    }

    /// The hash of a member's whole backend.
    public func hash(endpoint: String? = nil) async throws -> Etcdserverpb_HashResponse {
        try await unary("/etcdserverpb.Maintenance/Hash", Etcdserverpb_HashRequest(), .idempotent, endpoint: endpoint)
    }

    /// The hash of a member's key-value history up to `revision` (0: all).
    public func hashKV(endpoint: String? = nil, revision: Int64 = 0) async throws -> Etcdserverpb_HashKVResponse {
        var r = Etcdserverpb_HashKVRequest()
        r.revision = revision
        return try await unary("/etcdserverpb.Maintenance/HashKV", r, .idempotent, endpoint: endpoint)
    }

    /// Transfers leadership to `targetID`; must be sent to the leader (`endpoint`).
    @discardableResult
    public func moveLeader(targetID: UInt64, endpoint: String? = nil) async throws -> Etcdserverpb_MoveLeaderResponse {
        var r = Etcdserverpb_MoveLeaderRequest()
        r.targetID = targetID
        return try await unary("/etcdserverpb.Maintenance/MoveLeader", r, .mutating, endpoint: endpoint)
    }

    /// Streams a backend snapshot from one member as chunks of bytes.
    ///
    /// The stream has no time limit; cancel the iteration to stop it.
    /// Chunks are pulled from the call as the consumer asks for them, and a
    /// consumer that is behind makes the member wait: the member may send
    /// `snapshotWindowBytes` ahead, so its chunks keep flowing while the
    /// consumer writes. Opening the stream fails over and retries until the
    /// first chunk; a failure after it ends the sequence with the error.
    public func snapshot(endpoint: String? = nil) -> AsyncThrowingStream<Data, any Error> {
        let source = SnapshotSource(client: self, endpoint: endpoint)
        return AsyncThrowingStream(unfolding: { try await source.next() })
    }

    /// The receive window of a snapshot stream (see `snapshot`).
    static let snapshotWindowBytes = 8 << 20
}

/// The call behind `EtcdClient.snapshot`. `next` is only called by the
/// stream's iterator, one call at a time; dropping the stream cancels the
/// call.
private final class SnapshotSource: @unchecked Sendable {
    private let client: EtcdClient
    private let endpoint: String?
    private var call: EtcdStream<Etcdserverpb_SnapshotResponse>?
    private var done = false

    init(client: EtcdClient, endpoint: String?) {
        self.client = client
        self.endpoint = endpoint
    }

    deinit { call?.cancel() }

    func next() async throws -> Data? {
        if done { return nil }
        do {
            let response: Etcdserverpb_SnapshotResponse?
            if let call {
                // (The iterator holds no position: the call's inbox does.)
                var iterator = call.wire.makeAsyncIterator()
                response = try await call.next(&iterator)
            } else {
                let request = try Etcdserverpb_SnapshotRequest().framed()
                let (call, first) = try await client.call(.idempotent, endpoint: endpoint, timeout: .some(nil)) { connection, context in
                    let call = try await connection.stream("/etcdserverpb.Maintenance/Snapshot", request: request, token: context.token,
                                                           windowBytes: EtcdClient.snapshotWindowBytes, of: Etcdserverpb_SnapshotResponse.self)
                    do {
                        var iterator = call.wire.makeAsyncIterator()
                        return (call, try await call.next(&iterator))
                    } catch {
                        call.cancel()
                        throw error
                    }
                }
                self.call = call
                response = first
            }
            guard let response else {
                done = true
                return nil
            }
            return response.blob
        } catch {
            done = true
            call?.cancel()
            throw EtcdClientError(error)
        }
    }
}

// MARK: - Auth

extension EtcdClient {
    /// Turns authentication on (needs a `root` user with the `root` role).
    @discardableResult
    public func authEnable() async throws -> Etcdserverpb_AuthEnableResponse {
        try await unary("/etcdserverpb.Auth/AuthEnable", Etcdserverpb_AuthEnableRequest(), .idempotent)
    }

    /// Turns authentication off.
    @discardableResult
    public func authDisable() async throws -> Etcdserverpb_AuthDisableResponse {
        try await unary("/etcdserverpb.Auth/AuthDisable", Etcdserverpb_AuthDisableRequest(), .idempotent)
    }

    /// Whether authentication is enabled (etcd 3.5 and later; 3.4 answers `Unimplemented`).
    public func authStatus() async throws -> Etcdserverpb_AuthStatusResponse {
        try await unary("/etcdserverpb.Auth/AuthStatus", Etcdserverpb_AuthStatusRequest(), .idempotent)
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
        return try await unary("/etcdserverpb.Auth/UserAdd", r, .mutating)
    }

    /// A user's roles.
    public func userGet(_ name: String) async throws -> Etcdserverpb_AuthUserGetResponse {
        var r = Etcdserverpb_AuthUserGetRequest()
        r.name = name
        return try await unary("/etcdserverpb.Auth/UserGet", r, .idempotent)
    }

    /// All user names.
    public func userList() async throws -> Etcdserverpb_AuthUserListResponse {
        try await unary("/etcdserverpb.Auth/UserList", Etcdserverpb_AuthUserListRequest(), .idempotent)
    }

    /// Deletes a user.
    @discardableResult
    public func userDelete(_ name: String) async throws -> Etcdserverpb_AuthUserDeleteResponse {
        var r = Etcdserverpb_AuthUserDeleteRequest()
        r.name = name
        return try await unary("/etcdserverpb.Auth/UserDelete", r, .mutating)
    }

    /// Changes a user's password.
    @discardableResult
    public func userChangePassword(_ name: String, password: String) async throws -> Etcdserverpb_AuthUserChangePasswordResponse {
        var r = Etcdserverpb_AuthUserChangePasswordRequest()
        r.name = name
        r.password = password
        return try await unary("/etcdserverpb.Auth/UserChangePassword", r, .idempotent)
    }

    /// Grants a role to a user.
    @discardableResult
    public func userGrantRole(_ user: String, role: String) async throws -> Etcdserverpb_AuthUserGrantRoleResponse {
        var r = Etcdserverpb_AuthUserGrantRoleRequest()
        r.user = user
        r.role = role
        return try await unary("/etcdserverpb.Auth/UserGrantRole", r, .idempotent)
    }

    /// Revokes a role from a user.
    @discardableResult
    public func userRevokeRole(_ user: String, role: String) async throws -> Etcdserverpb_AuthUserRevokeRoleResponse {
        var r = Etcdserverpb_AuthUserRevokeRoleRequest()
        r.name = user
        r.role = role
        return try await unary("/etcdserverpb.Auth/UserRevokeRole", r, .mutating)
    }

    /// Creates a role.
    @discardableResult
    public func roleAdd(_ name: String) async throws -> Etcdserverpb_AuthRoleAddResponse {
        var r = Etcdserverpb_AuthRoleAddRequest()
        r.name = name
        return try await unary("/etcdserverpb.Auth/RoleAdd", r, .mutating)
    }

    /// A role's permissions.
    public func roleGet(_ name: String) async throws -> Etcdserverpb_AuthRoleGetResponse {
        var r = Etcdserverpb_AuthRoleGetRequest()
        r.role = name
        return try await unary("/etcdserverpb.Auth/RoleGet", r, .idempotent)
    }

    /// All role names.
    public func roleList() async throws -> Etcdserverpb_AuthRoleListResponse {
        try await unary("/etcdserverpb.Auth/RoleList", Etcdserverpb_AuthRoleListRequest(), .idempotent)
    }

    /// Deletes a role.
    @discardableResult
    public func roleDelete(_ name: String) async throws -> Etcdserverpb_AuthRoleDeleteResponse {
        var r = Etcdserverpb_AuthRoleDeleteRequest()
        r.role = name
        return try await unary("/etcdserverpb.Auth/RoleDelete", r, .mutating)
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
        return try await unary("/etcdserverpb.Auth/RoleGrantPermission", r, .idempotent)
    }

    /// Revokes the permission on `[key, rangeEnd)` from a role.
    @discardableResult
    public func roleRevokePermission(_ role: String, key: some EtcdBytes, rangeEnd: some EtcdBytes = Data()) async throws -> Etcdserverpb_AuthRoleRevokePermissionResponse {
        var r = Etcdserverpb_AuthRoleRevokePermissionRequest()
        r.role = role
        r.key = key.etcdBytes
        r.rangeEnd = rangeEnd.etcdBytes
        return try await unary("/etcdserverpb.Auth/RoleRevokePermission", r, .mutating)
    }
}
