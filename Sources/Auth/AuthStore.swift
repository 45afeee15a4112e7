import Backend
import EtcdProto
import Foundation
import Locks

/// etcd's auth store: users, roles and their key permissions, whether auth
/// is enabled, and the auth revision every change bumps. It lives in the
/// backend under etcd's buckets and encodings — `auth` (`authEnabled`: one
/// byte 1 or 0; `authRevision`: big-endian u64), `authUsers` (name ->
/// authpb.User) and `authRoles` (name -> authpb.Role) — and in memory for
/// the checks, with each user's grants merged into intervals.
///
/// Changes come only from the raft loop's apply (every member applies the
/// same ones); checks and reads come from any thread.
public final class AuthStore: Sendable {
    public static let enabledKey: [UInt8] = Array("authEnabled".utf8)
    public static let revisionKey: [UInt8] = Array("authRevision".utf8)

    struct State: Sendable {
        var enabled = false
        var revision: UInt64 = 0
        var users: [String: Authpb_User] = [:]
        var roles: [String: Authpb_Role] = [:]
        /// Merged grants per user (rebuilt on every change, as etcd does).
        var permissions: [String: UserPermissions] = [:]
    }

    private let state = Mutex(State())
    public let limits: AuthLimits

    public init(limits: AuthLimits = AuthLimits()) {
        self.limits = limits
    }

    // MARK: - Loading

    /// Loads the store from `backend` (at start and after a snapshot is
    /// installed).
    public func load(from backend: Backend) throws {
        var loaded = State()
        try backend.read { tx in
            if let flag = try tx.get(.auth, Self.enabledKey) { loaded.enabled = flag == [1] }
            if let revision = try tx.get(.auth, Self.revisionKey) { loaded.revision = BigEndian.uint64(revision) ?? 0 }
            try tx.forEach(.authUsers) { _, value in
                let user = try Authpb_User(serializedBytes: Data(value))
                loaded.users[String(decoding: user.name, as: UTF8.self)] = user
                return true
            }
            try tx.forEach(.authRoles) { _, value in
                let role = try Authpb_Role(serializedBytes: Data(value))
                loaded.roles[String(decoding: role.name, as: UTF8.self)] = role
                return true
            }
        }
        loaded.permissions = Self.mergedPermissions(loaded)
        state.withLock { $0 = loaded }
    }

    // MARK: - Reads

    public var isEnabled: Bool { state.withLock { $0.enabled } }
    public var revision: UInt64 { state.withLock { $0.revision } }

    public func user(_ name: String) -> Authpb_User? { state.withLock { $0.users[name] } }
    public func role(_ name: String) -> Authpb_Role? { state.withLock { $0.roles[name] } }

    /// User names in the bucket's (byte) order.
    public func userNames() -> [String] { state.withLock { Self.byteSorted(Array($0.users.keys)) } }
    /// Role names in the bucket's (byte) order.
    public func roleNames() -> [String] { state.withLock { Self.byteSorted(Array($0.roles.keys)) } }

    static func byteSorted(_ names: [String]) -> [String] {
        names.sorted { a, b in a.utf8.lexicographicallyPrecedes(b.utf8) }
    }

    public func hasRole(user: String, role: String) -> Bool {
        state.withLock { $0.users[user]?.roles.contains(role) ?? false }
    }

    /// What Authenticate needs before it hashes: the stored hash and the
    /// auth revision it was read at (etcd's CheckPassword, minus the bcrypt
    /// comparison, which the caller runs off every lock).
    public func passwordHash(of name: String) throws(AuthError) -> (hash: Data, revision: UInt64) {
        let found: (Authpb_User?, Bool, UInt64) = state.withLock { ($0.users[name], $0.enabled, $0.revision) }
        guard found.1 else { throw .authNotEnabled }
        guard let user = found.0 else { throw .authFailed }
        if user.options.noPassword { throw .noPasswordUser }
        return (user.password, found.2)
    }

    // MARK: - Checks

    public enum Access: Sendable { case read, write }

    /// etcd's isOpPermitted: nothing to check while auth is disabled; a
    /// request without a user (revision 0) is refused, as is one resolved at
    /// an older revision; root passes; everyone else needs the range covered.
    public func check(_ info: AuthInfo?, _ access: Access, key: [UInt8], rangeEnd: [UInt8]) throws(AuthError) {
        let denied: AuthError? = state.withLock { state in
            guard state.enabled else { return nil }
            guard let info, info.revision != 0 else { return .userEmpty }
            if info.revision < state.revision { return .oldRevision }
            guard let user = state.users[info.username] else { return .permissionDenied }
            if user.roles.contains(AuthNames.root) { return nil }
            guard let granted = state.permissions[info.username] else { return .permissionDenied }
            let intervals = access == .read ? granted.read : granted.write
            return intervals.covers(key: key, rangeEnd: rangeEnd) ? nil : .permissionDenied
        }
        if let denied { throw denied }
    }

    /// etcd's IsAdminPermitted: the user must have the root role.
    public func checkAdmin(_ info: AuthInfo?) throws(AuthError) {
        let denied: AuthError? = state.withLock { state in
            guard state.enabled else { return nil }
            guard let info, !info.username.isEmpty else { return .userEmpty }
            guard let user = state.users[info.username] else { return .userNotFound }
            return user.roles.contains(AuthNames.root) ? nil : .permissionDenied
        }
        if let denied { throw denied }
    }

    // MARK: - Changes (raft loop only)

    /// AuthEnable: needs `root` with the `root` role; enabling twice is fine.
    /// Enabling bumps the revision (etcd 3.4.22+ and 3.5.5+ do: a token made
    /// before auth was last disabled must not pass), which the revision a
    /// JWT carries shows.
    public func enable(in backend: Backend) throws {
        try change(backend) { state in
            if state.enabled { return false }
            guard let root = state.users[AuthNames.root] else { throw AuthError.rootUserNotExist }
            guard root.roles.contains(AuthNames.root) else { throw AuthError.rootRoleNotExist }
            state.enabled = true
            try backend.put(.auth, key: Self.enabledKey, value: [1])
            return true
        }
    }

    /// AuthDisable; disabling a disabled store is fine.
    public func disable(in backend: Backend) throws {
        try change(backend) { state in
            if !state.enabled { return false }
            state.enabled = false
            try backend.put(.auth, key: Self.enabledKey, value: [0])
            return true
        }
    }

    /// UserAdd with the password already hashed (empty with no_password).
    public func addUser(_ name: String, hashedPassword: Data, noPassword: Bool, in backend: Backend) throws {
        guard !name.isEmpty else { throw AuthError.userEmpty }
        try checkName(name)
        try change(backend) { state in
            if state.users[name] != nil { throw AuthError.userAlreadyExist }
            guard state.users.count < limits.maxUsers else { throw AuthError.limitExceeded("too many users") }
            var user = Authpb_User()
            user.name = Data(name.utf8)
            user.password = noPassword ? Data() : hashedPassword
            user.options.noPassword = noPassword
            try put(user, in: backend, state: &state)
            return true
        }
    }

    /// UserDelete (not root while enabled).
    public func deleteUser(_ name: String, in backend: Backend) throws {
        try change(backend) { state in
            if state.enabled && name == AuthNames.root { throw AuthError.invalidManagement }
            guard state.users[name] != nil else { throw AuthError.userNotFound }
            state.users[name] = nil
            try backend.delete(.authUsers, key: Array(name.utf8))
            return true
        }
    }

    public func changePassword(_ name: String, hashedPassword: Data, in backend: Backend) throws {
        try change(backend) { state in
            guard var user = state.users[name] else { throw AuthError.userNotFound }
            user.password = hashedPassword
            try put(user, in: backend, state: &state)
            return true
        }
    }

    /// UserGrantRole: the role must exist (root may be granted before it
    /// exists); granting twice is fine. Roles stay sorted, as etcd keeps them.
    public func grantRole(_ role: String, to name: String, in backend: Backend) throws {
        try change(backend) { state in
            guard var user = state.users[name] else { throw AuthError.userNotFound }
            if role != AuthNames.root && state.roles[role] == nil { throw AuthError.roleNotFound }
            if user.roles.contains(role) { return false }
            guard user.roles.count < limits.maxRolesPerUser else { throw AuthError.limitExceeded("too many roles granted to the user") }
            user.roles.append(role)
            user.roles = Self.byteSorted(user.roles)
            try put(user, in: backend, state: &state)
            return true
        }
    }

    public func revokeRole(_ role: String, from name: String, in backend: Backend) throws {
        try change(backend) { state in
            if state.enabled && name == AuthNames.root && role == AuthNames.root { throw AuthError.invalidManagement }
            guard var user = state.users[name] else { throw AuthError.userNotFound }
            let before = user.roles.count
            user.roles.removeAll { $0 == role }
            if user.roles.count == before { throw AuthError.roleNotGranted }
            try put(user, in: backend, state: &state)
            return true
        }
    }

    public func addRole(_ name: String, in backend: Backend) throws {
        guard !name.isEmpty else { throw AuthError.roleEmpty }
        try checkName(name)
        try change(backend) { state in
            if state.roles[name] != nil { throw AuthError.roleAlreadyExist }
            guard state.roles.count < limits.maxRoles else { throw AuthError.limitExceeded("too many roles") }
            var role = Authpb_Role()
            role.name = Data(name.utf8)
            try put(role, in: backend, state: &state)
            return true
        }
    }

    /// RoleDelete (not root while enabled): also revoked from every user.
    public func deleteRole(_ name: String, in backend: Backend) throws {
        try change(backend) { state in
            if state.enabled && name == AuthNames.root { throw AuthError.invalidManagement }
            guard state.roles[name] != nil else { throw AuthError.roleNotFound }
            state.roles[name] = nil
            try backend.delete(.authRoles, key: Array(name.utf8))
            for (_, var user) in state.users where user.roles.contains(name) {
                user.roles.removeAll { $0 == name }
                try put(user, in: backend, state: &state)
            }
            return true
        }
    }

    /// RoleGrantPermission: a permission on the same key and range end is
    /// replaced (its type updated); the list stays sorted by key.
    public func grantPermission(_ permission: Authpb_Permission, to name: String, in backend: Backend) throws {
        try change(backend) { state in
            guard var role = state.roles[name] else { throw AuthError.roleNotFound }
            if let index = role.keyPermission.firstIndex(where: { $0.key == permission.key && $0.rangeEnd == permission.rangeEnd }) {
                role.keyPermission[index].permType = permission.permType
            } else {
                guard role.keyPermission.count < limits.maxPermissionsPerRole else {
                    throw AuthError.limitExceeded("too many permissions in the role")
                }
                var added = Authpb_Permission()
                added.key = permission.key
                added.rangeEnd = permission.rangeEnd
                added.permType = permission.permType
                // Kept sorted by key: before the first permission whose key sorts after it.
                let at = role.keyPermission.firstIndex { Array(permission.key).lexicographicallyPrecedes(Array($0.key)) }
                    ?? role.keyPermission.count
                role.keyPermission.insert(added, at: at)
            }
            try put(role, in: backend, state: &state)
            return true
        }
    }

    public func revokePermission(key: Data, rangeEnd: Data, from name: String, in backend: Backend) throws {
        try change(backend) { state in
            guard var role = state.roles[name] else { throw AuthError.roleNotFound }
            let before = role.keyPermission.count
            role.keyPermission.removeAll { $0.key == key && $0.rangeEnd == rangeEnd }
            if role.keyPermission.count == before { throw AuthError.permissionNotGranted }
            try put(role, in: backend, state: &state)
            return true
        }
    }

    // MARK: - Helpers

    private func checkName(_ name: String) throws {
        if name.utf8.count > limits.maxNameBytes { throw AuthError.limitExceeded("name too long") }
    }

    /// Runs one change on a copy of the state; when `body` reports a change,
    /// bumps and stores the revision (etcd's commitRevision), rebuilds the
    /// merged grants and publishes the copy. A throw leaves everything as it
    /// was in memory (the backend writes all come after the checks).
    private func change(_ backend: Backend, _ body: (inout State) throws -> Bool) throws {
        var copy = state.withLock { $0 }
        guard try body(&copy) else { return }
        copy.revision += 1
        try backend.put(.auth, key: Self.revisionKey, value: BigEndian.bytes(copy.revision))
        copy.permissions = Self.mergedPermissions(copy)
        let published = copy
        state.withLock { $0 = published }
    }

    private func put(_ user: Authpb_User, in backend: Backend, state: inout State) throws {
        try backend.put(.authUsers, key: Array(user.name), value: Array(try user.serializedBytes() as [UInt8]))
        state.users[String(decoding: user.name, as: UTF8.self)] = user
    }

    private func put(_ role: Authpb_Role, in backend: Backend, state: inout State) throws {
        try backend.put(.authRoles, key: Array(role.name), value: Array(try role.serializedBytes() as [UInt8]))
        state.roles[String(decoding: role.name, as: UTF8.self)] = role
    }

    /// Every user's grants, merged over its roles (unknown roles grant nothing).
    static func mergedPermissions(_ state: State) -> [String: UserPermissions] {
        var merged: [String: UserPermissions] = [:]
        for (name, user) in state.users {
            var permissions = UserPermissions()
            for roleName in user.roles {
                guard let role = state.roles[roleName] else { continue }
                for permission in role.keyPermission {
                    let key = Array(permission.key), end = Array(permission.rangeEnd)
                    switch permission.permType {
                    case .read: permissions.read.insert(key: key, rangeEnd: end)
                    case .write: permissions.write.insert(key: key, rangeEnd: end)
                    case .readwrite:
                        permissions.read.insert(key: key, rangeEnd: end)
                        permissions.write.insert(key: key, rangeEnd: end)
                    case .UNRECOGNIZED: break
                    }
                }
            }
            merged[name] = permissions
        }
        return merged
    }
}
