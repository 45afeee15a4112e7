import Auth
import EtcdGRPC
import EtcdProto
import EtcdServer
import GRPCCore
import GRPCWire
import NIOCore
import SwiftProtobuf

extension WireCall {
    /// The simple token a client sends in the `token` metadata (Go's
    /// clientv3 sets it on every call once it has authenticated).
    var authToken: String? { headers.first(name: "token") }
}

extension Member {
    /// Who `call` acts as: its token, else the Common Name of the client
    /// certificate the TLS listener verified.
    func identity(of call: WireCall) throws(EtcdError) -> AuthInfo? {
        try authInfo(token: call.authToken, commonName: call.peerCommonName)
    }
}

extension WireRouter {
    /// etcd's root-only calls. Maintenance's Defragment, Hash, HashKV,
    /// MoveLeader, Downgrade and Snapshot answer with the auth store's own
    /// error (UNKNOWN "auth: permission denied"), as etcd's do; membership
    /// changes, Compact and raising or disarming an alarm answer with etcd's
    /// gRPC errors. Status, MemberList, Alarm GET, leases and health stay
    /// open, as in etcd. (etcd 3.4 lets any user compact and disarm alarms;
    /// we keep both to root.) Wraps each method; checked per call, since
    /// auth is enabled while serving.
    mutating func requireRoot(_ member: Member) {
        let maintenance: [MethodDescriptor] = [
            Etcdserverpb_Maintenance.Method.Defragment.descriptor,
            Etcdserverpb_Maintenance.Method.Hash.descriptor,
            Etcdserverpb_Maintenance.Method.HashKV.descriptor,
            Etcdserverpb_Maintenance.Method.MoveLeader.descriptor,
            Etcdserverpb_Maintenance.Method.Downgrade.descriptor,
            Etcdserverpb_Maintenance.Method.Snapshot.descriptor,
        ]
        let others: [MethodDescriptor] = [
            Etcdserverpb_KV.Method.Compact.descriptor,
            Etcdserverpb_Cluster.Method.MemberAdd.descriptor,
            Etcdserverpb_Cluster.Method.MemberRemove.descriptor,
            Etcdserverpb_Cluster.Method.MemberUpdate.descriptor,
            Etcdserverpb_Cluster.Method.MemberPromote.descriptor,
        ]
        for descriptor in maintenance {
            gate(descriptor) { call, _ in try member.authorizeMaintenance(token: call.authToken, commonName: call.peerCommonName) }
        }
        for descriptor in others {
            gate(descriptor) { call, _ in try member.authorizeAdmin(member.identity(of: call)) }
        }
        gate(Etcdserverpb_Maintenance.Method.Alarm.descriptor) { call, bytes in
            guard let bytes, let request = try? Etcdserverpb_AlarmRequest(grpcMessage: bytes), request.action == .get else {
                return try member.authorizeAdmin(member.identity(of: call))
            }
        }
    }

    /// Runs `check` before the method at `descriptor` (bytes: the request
    /// of a unary call); a throw ends the call with its error.
    private mutating func gate(_ descriptor: MethodDescriptor, _ check: @escaping @Sendable (WireCall, ByteBuffer?) throws -> Void) {
        let path = "/" + descriptor.fullyQualifiedMethod
        switch methods[path] {
        case .unary(let serve)?:
            methods[path] = .unary { call, bytes in
                do { try check(call, bytes) } catch { return call.finish(wireStatus(error)) }
                serve(call, bytes)
            }
        case .streaming(let open)?:
            methods[path] = .streaming { call in
                do { try check(call, nil) } catch {
                    call.finish(wireStatus(error))
                    return RefusedStream()
                }
                return open(call)
            }
        case nil:
            break
        }
    }

    /// A unary method whose body needs the caller's identity, resolved on
    /// the event loop before the task starts (a bad token ends the call).
    mutating func unaryAsUser<Request: SwiftProtobuf.Message & Sendable, Response: SwiftProtobuf.Message>(
        _ method: MethodDescriptor, _ member: Member,
        _ body: @escaping @Sendable (Request, AuthInfo?) async throws -> Response
    ) {
        self["/" + method.fullyQualifiedMethod] = .unary { call, bytes in
            let request: Request
            let info: AuthInfo?
            do {
                request = try Request(grpcMessage: bytes)
                info = try member.identity(of: call)
            } catch {
                return call.finish(wireStatus(error))
            }
            Task {
                do {
                    call.respond(try await etcdCall { try await body(request, info) }.framed())
                } catch {
                    call.finish(wireStatus(error))
                }
            }
        }
    }

    /// The host part of a gRPC peer description ("ipv4:127.0.0.1:5000",
    /// "ipv6:[::1]:5000"): what Authenticate's per-client budget is kept by.
    static func clientHost(_ peer: String) -> String? {
        if peer.hasPrefix("ipv6:["), let end = peer.firstIndex(of: "]") { return String(peer[peer.index(peer.startIndex, offsetBy: 6)..<end]) }
        if peer.hasPrefix("ipv4:"), let colon = peer.lastIndex(of: ":") { return String(peer[peer.index(peer.startIndex, offsetBy: 5)..<colon]) }
        return nil
    }

    /// The Auth service. Every call but Authenticate and AuthStatus acts as
    /// the caller (root for changes; see `Member+Auth.swift`).
    mutating func addAuth(member: Member) {
        typealias Auth = Etcdserverpb_Auth.Method
        unaryAsUser(Auth.AuthEnable.descriptor, member) { (_: Etcdserverpb_AuthEnableRequest, info) in try await member.authEnable(as: info) }
        unaryAsUser(Auth.AuthDisable.descriptor, member) { (_: Etcdserverpb_AuthDisableRequest, info) in try await member.authDisable(as: info) }
        unaryAsUser(Auth.AuthStatus.descriptor, member) { (_: Etcdserverpb_AuthStatusRequest, _) in try await member.authStatus() }
        // Authenticate ignores any token the client still sends (etcd's does too).
        unary(Auth.Authenticate.descriptor) { (request: Etcdserverpb_AuthenticateRequest, context) in
            try await etcdCall { try await member.authenticate(request, client: Self.clientHost(context.remotePeer)) }
        }
        unaryAsUser(Auth.UserAdd.descriptor, member, member.userAdd(_:as:))
        unaryAsUser(Auth.UserGet.descriptor, member, member.userGet(_:as:))
        unaryAsUser(Auth.UserList.descriptor, member) { (_: Etcdserverpb_AuthUserListRequest, info) in try await member.userList(as: info) }
        unaryAsUser(Auth.UserDelete.descriptor, member, member.userDelete(_:as:))
        unaryAsUser(Auth.UserChangePassword.descriptor, member, member.userChangePassword(_:as:))
        unaryAsUser(Auth.UserGrantRole.descriptor, member, member.userGrantRole(_:as:))
        unaryAsUser(Auth.UserRevokeRole.descriptor, member, member.userRevokeRole(_:as:))
        unaryAsUser(Auth.RoleAdd.descriptor, member, member.roleAdd(_:as:))
        unaryAsUser(Auth.RoleGet.descriptor, member, member.roleGet(_:as:))
        unaryAsUser(Auth.RoleList.descriptor, member) { (_: Etcdserverpb_AuthRoleListRequest, info) in try await member.roleList(as: info) }
        unaryAsUser(Auth.RoleDelete.descriptor, member, member.roleDelete(_:as:))
        unaryAsUser(Auth.RoleGrantPermission.descriptor, member, member.roleGrantPermission(_:as:))
        unaryAsUser(Auth.RoleRevokePermission.descriptor, member, member.roleRevokePermission(_:as:))
    }
}
