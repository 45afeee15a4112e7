import Auth
import EtcdProto
import Foundation

/// etcd's auth applier: every member checks each committed request against
/// the auth store as the user its header names, at the auth revision the
/// proposer resolved, so a permission change that commits between a check
/// at the API and the apply fails the request with "revision of auth store
/// is old" on every member alike. And the Auth service's changes.
extension Applier {
    /// Refuses `proposed` when its user may not do it.
    ///
    /// KV writes need write permission on what they change (and read
    /// permission when they return previous values); a txn needs read
    /// permission on every compare and every op of every branch, nested
    /// txns included; a lease revoke needs write permission on every key
    /// attached; the Auth service's changes need root. A lease revoke with
    /// no user is the leader's own expiry and passes.
    func authorize(_ proposed: ProposedRequest, as info: AuthInfo?) throws(AuthError) {
        try Self.authorize(proposed, as: info, auth, leaseKeys: { [lessor, leaseClock] in
            lessor.timeToLive(id: $0, now: leaseClock.now())?.keys ?? []
        }, atApply: true)
    }

    /// The check itself, shared by the proposer (which refuses early what
    /// the applier would refuse) and the applier. `leaseKeys`: the keys
    /// attached to a lease (none when it does not exist).
    static func authorize(_ proposed: ProposedRequest, as info: AuthInfo?, _ auth: AuthStore,
                          leaseKeys: (Int64) -> [Data], atApply: Bool) throws(AuthError) {
        guard auth.isEnabled else { return }
        switch proposed {
        case .put(let put): try authorize(put, as: info, auth, leaseKeys: leaseKeys)
        case .deleteRange(let delete): try authorize(delete, as: info, auth)
        case .txn(let txn): try authorize(txn, as: info, auth)
        case .other(let request):
            if needsAdmin(request) { try auth.checkAdmin(info) }
            // At apply, a revoke without a user is the leader's own expiry.
            if request.hasLeaseRevoke, info != nil || !atApply {
                for key in leaseKeys(request.leaseRevoke.id) { try auth.check(info, .write, key: Array(key), rangeEnd: []) }
            }
        }
    }

    static func authorize(_ put: Etcdserverpb_PutRequest, as info: AuthInfo?, _ auth: AuthStore,
                          leaseKeys: (Int64) -> [Data]) throws(AuthError) {
        try auth.check(info, .write, key: Array(put.key), rangeEnd: [])
        // Moving keys onto a lease lets its revoke delete them: etcd asks
        // for write permission on every key the lease already holds.
        if put.lease != 0 {
            for key in leaseKeys(put.lease) { try auth.check(info, .write, key: Array(key), rangeEnd: []) }
        }
        if put.prevKv { try auth.check(info, .read, key: Array(put.key), rangeEnd: []) }
    }

    static func authorize(_ delete: Etcdserverpb_DeleteRangeRequest, as info: AuthInfo?, _ auth: AuthStore) throws(AuthError) {
        try auth.check(info, .write, key: Array(delete.key), rangeEnd: Array(delete.rangeEnd))
        if delete.prevKv { try auth.check(info, .read, key: Array(delete.key), rangeEnd: Array(delete.rangeEnd)) }
    }

    /// Every compare, then every op of both branches, depth first.
    static func authorize(_ txn: Etcdserverpb_TxnRequest, as info: AuthInfo?, _ auth: AuthStore) throws(AuthError) {
        for compare in txn.compare {
            try auth.check(info, .read, key: Array(compare.key), rangeEnd: Array(compare.rangeEnd))
        }
        for op in txn.success + txn.failure {
            switch op.request {
            case .requestRange(let range)?:
                try auth.check(info, .read, key: Array(range.key), rangeEnd: Array(range.rangeEnd))
            case .requestPut(let put)?:
                // A txn's put is checked as etcd checks it: the key only.
                try auth.check(info, .write, key: Array(put.key), rangeEnd: [])
            case .requestDeleteRange(let delete)?:
                try authorize(delete, as: info, auth)
            case .requestTxn(let nested)?:
                try authorize(nested, as: info, auth)
            case nil:
                break
            }
        }
    }

    /// The Auth service's changes (etcd's needAdminPermission).
    static func needsAdmin(_ request: Etcdserverpb_InternalRaftRequest) -> Bool {
        request.hasAuthEnable || request.hasAuthDisable || request.hasAuthUserAdd || request.hasAuthUserDelete
            || request.hasAuthUserChangePassword || request.hasAuthUserGrantRole || request.hasAuthUserRevokeRole
            || request.hasAuthRoleAdd || request.hasAuthRoleGrantPermission || request.hasAuthRoleRevokePermission
            || request.hasAuthRoleDelete || request.hasAuthUserList || request.hasAuthRoleList
    }

    /// Applies an Auth service change; nil when `request` is none.
    func applyAuth(_ request: Etcdserverpb_InternalRaftRequest, index: UInt64) -> Result<ApplyResult, ApplyFailure>? {
        let body: () throws -> ApplyResult
        if request.hasAuthenticate {
            body = { [self] in .authenticate(try authenticate(request.authenticate, index: index)) }
        } else if request.hasAuthEnable {
            body = { [self] in
                try auth.enable(in: backend)
                logger.info("enabled authentication")
                return .none
            }
        } else if request.hasAuthDisable {
            body = { [self] in
                try auth.disable(in: backend)
                tokens.removeAll()
                logger.info("disabled authentication")
                return .none
            }
        } else if request.hasAuthUserAdd {
            let add = request.authUserAdd
            body = { [self] in
                try auth.addUser(add.name, hashedPassword: Data(add.hashedPassword.utf8), noPassword: add.options.noPassword, in: backend)
                return .none
            }
        } else if request.hasAuthUserDelete {
            let name = request.authUserDelete.name
            body = { [self] in
                try auth.deleteUser(name, in: backend)
                tokens.invalidate(user: name)
                return .none
            }
        } else if request.hasAuthUserChangePassword {
            let change = request.authUserChangePassword
            body = { [self] in
                try auth.changePassword(change.name, hashedPassword: Data(change.hashedPassword.utf8), in: backend)
                tokens.invalidate(user: change.name)
                return .none
            }
        } else if request.hasAuthUserGrantRole {
            let grant = request.authUserGrantRole
            body = { [self] in try auth.grantRole(grant.role, to: grant.user, in: backend); return .none }
        } else if request.hasAuthUserRevokeRole {
            let revoke = request.authUserRevokeRole
            body = { [self] in try auth.revokeRole(revoke.role, from: revoke.name, in: backend); return .none }
        } else if request.hasAuthRoleAdd {
            let name = request.authRoleAdd.name
            body = { [self] in try auth.addRole(name, in: backend); return .none }
        } else if request.hasAuthRoleDelete {
            let name = request.authRoleDelete.role
            body = { [self] in try auth.deleteRole(name, in: backend); return .none }
        } else if request.hasAuthRoleGrantPermission {
            let grant = request.authRoleGrantPermission
            body = { [self] in try auth.grantPermission(grant.perm, to: grant.name, in: backend); return .none }
        } else if request.hasAuthRoleRevokePermission {
            let revoke = request.authRoleRevokePermission
            body = { [self] in
                try auth.revokePermission(key: revoke.key, rangeEnd: revoke.rangeEnd, from: revoke.role, in: backend)
                return .none
            }
        } else {
            return nil
        }
        do {
            return .success(try body())
        } catch let error as AuthError {
            return .failure(.rejected(EtcdError(error)))
        } catch {
            return .failure(.fatal(error))
        }
    }

    /// etcd's Authenticate apply (the password was compared before the
    /// proposal): every member assigns the same token, `<prefix>.<index>`.
    private func authenticate(_ request: Etcdserverpb_InternalAuthenticateRequest, index: UInt64) throws(AuthError) -> Etcdserverpb_AuthenticateResponse {
        guard auth.isEnabled else { throw .authNotEnabled }
        guard let user = auth.user(request.name), !user.options.noPassword else { throw .authFailed }
        var response = Etcdserverpb_AuthenticateResponse()
        // No prefix: the member runs JWT tokens, and its proposer signs one.
        guard !request.simpleToken.isEmpty else { return response }
        response.token = SimpleTokens.token(prefix: request.simpleToken, index: index)
        tokens.assign(response.token, to: request.name, now: leaseClock.now())
        return response
    }
}

extension EtcdError {
    /// The auth store's own error text, as etcd's Maintenance service sends
    /// it (it returns the store's error unconverted, so clients see UNKNOWN
    /// and "auth: permission denied").
    public init(unconverted error: AuthError) {
        let text: String
        switch error {
        case .rootUserNotExist: text = "root user does not exist"
        case .rootRoleNotExist: text = "root user does not have root role"
        case .userAlreadyExist: text = "user already exists"
        case .userEmpty: text = "user name is empty"
        case .userNotFound: text = "user not found"
        case .roleAlreadyExist: text = "role already exists"
        case .roleNotFound: text = "role not found"
        case .roleEmpty: text = "role name is empty"
        case .authFailed: text = "authentication failed, invalid user ID or password"
        case .noPasswordUser: text = "authentication failed, password was given for no password user"
        case .permissionDenied: text = "permission denied"
        case .roleNotGranted: text = "role is not granted to the user"
        case .permissionNotGranted: text = "permission is not granted to the role"
        case .authNotEnabled: text = "authentication is not enabled"
        case .oldRevision: text = "revision in header is old"
        case .invalidToken: text = "invalid auth token"
        case .invalidManagement: text = "invalid auth management"
        case .limitExceeded(let what): text = what
        case .invalidAuthMethod: text = "invalid auth signature method"
        case .missingKey: text = "missing key data"
        case .keyMismatch: text = "public and private keys don't match"
        case .invalidKey(let why): text = why
        case .verifyOnly: text = "token signing attempted with verify-only key"
        }
        self = EtcdError(.unknown, "auth: " + text)
    }

    /// etcd's gRPC error for each auth store error (rpctypes), code and message.
    public init(_ error: AuthError) {
        switch error {
        case .rootUserNotExist: self = EtcdError(.failedPrecondition, "etcdserver: root user does not exist")
        case .rootRoleNotExist: self = EtcdError(.failedPrecondition, "etcdserver: root user does not have root role")
        case .userAlreadyExist: self = EtcdError(.failedPrecondition, "etcdserver: user name already exists")
        case .userEmpty: self = EtcdError(.invalidArgument, "etcdserver: user name is empty")
        case .userNotFound: self = EtcdError(.failedPrecondition, "etcdserver: user name not found")
        case .roleAlreadyExist: self = EtcdError(.failedPrecondition, "etcdserver: role name already exists")
        case .roleNotFound: self = EtcdError(.failedPrecondition, "etcdserver: role name not found")
        case .roleEmpty: self = EtcdError(.invalidArgument, "etcdserver: role name is empty")
        case .authFailed: self = EtcdError(.invalidArgument, "etcdserver: authentication failed, invalid user ID or password")
        // Not in etcd's table of gRPC errors, so etcd sends it as UNKNOWN with the store's own text.
        case .noPasswordUser: self = EtcdError(.unknown, "auth: authentication failed, password was given for no password user")
        case .permissionDenied: self = EtcdError(.permissionDenied, "etcdserver: permission denied")
        case .roleNotGranted: self = EtcdError(.failedPrecondition, "etcdserver: role is not granted to the user")
        case .permissionNotGranted: self = EtcdError(.failedPrecondition, "etcdserver: permission is not granted to the role")
        case .authNotEnabled: self = EtcdError(.failedPrecondition, "etcdserver: authentication is not enabled")
        case .oldRevision: self = EtcdError(.invalidArgument, "etcdserver: revision of auth store is old")
        case .invalidToken: self = EtcdError(.unauthenticated, "etcdserver: invalid auth token")
        case .invalidManagement: self = EtcdError(.invalidArgument, "etcdserver: invalid auth management")
        case .limitExceeded(let what): self = EtcdError(.resourceExhausted, "etcdserver: \(what)")
        // The JWT errors are not in etcd's table either.
        case .invalidAuthMethod, .missingKey, .keyMismatch, .invalidKey, .verifyOnly: self = EtcdError(unconverted: error)
        }
    }
}
