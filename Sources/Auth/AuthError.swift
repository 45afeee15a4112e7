/// Why the auth store refused a request, one case per error etcd's auth
/// store reports. The member turns each into etcd's gRPC code and message
/// (`EtcdError(AuthError)`), so the text lives there.
public enum AuthError: Error, Equatable, Sendable {
    case rootUserNotExist
    case rootRoleNotExist
    case userAlreadyExist
    case userEmpty
    case userNotFound
    case roleAlreadyExist
    case roleNotFound
    case roleEmpty
    case authFailed
    /// A password was given for a user added with `no_password`.
    case noPasswordUser
    case permissionDenied
    case roleNotGranted
    case permissionNotGranted
    case authNotEnabled
    /// The request was checked at an auth revision older than the store's.
    case oldRevision
    case invalidToken
    /// Deleting root, its role, or revoking root from root while enabled.
    case invalidManagement
    /// One of `AuthLimits` would be passed.
    case limitExceeded(String)
    // JWT tokens (`JWTTokens`): a sign method etcd does not know, no key
    // given, a public key that does not match the private one, a key file
    // that cannot be read or parsed, signing with only a public key.
    case invalidAuthMethod
    case missingKey
    case keyMismatch
    case invalidKey(String)
    case verifyOnly
}

/// Who a request acts as: the user a token (or later a client certificate)
/// names, and the auth revision the identity was resolved at. Proposals
/// carry both in their header so every member re-checks at apply.
public struct AuthInfo: Sendable, Equatable {
    public var username: String
    public var revision: UInt64

    public init(username: String, revision: UInt64) {
        self.username = username
        self.revision = revision
    }
}
