/// Names the auth store reserves.
public enum AuthNames {
    /// The only user allowed to enable auth, and the role that grants everything.
    public static let root = "root"
}

/// Bounds on what the auth store and the token table hold. etcd has none
/// (only the backend quota); ours keep memory bounded and make a request
/// that would pass them fail with RESOURCE_EXHAUSTED instead.
public struct AuthLimits: Sendable, Equatable {
    /// Users in the store.
    public var maxUsers: Int = 10_000
    /// Roles in the store.
    public var maxRoles: Int = 10_000
    /// Key permissions in one role.
    public var maxPermissionsPerRole: Int = 10_000
    /// Roles granted to one user.
    public var maxRolesPerUser: Int = 1_000
    /// Bytes in a user or role name.
    public var maxNameBytes: Int = 4_096
    /// Live simple tokens; past it the token nearest to expiry is dropped.
    public var maxTokens: Int = 100_000

    public init() {}
}
