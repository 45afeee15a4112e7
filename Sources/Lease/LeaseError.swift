/// Why a lessor operation failed.
public enum LeaseError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The lease does not exist (or, for `renew`, has already expired).
    case notFound
    /// `grant` with an id that is already in use.
    case alreadyExists
    /// `grant` with a TTL above `LeaseLimits.maxTTLSeconds`.
    case ttlTooLarge
    /// `renew` on a lessor that is not the primary (the raft leader): the
    /// server forwards the request instead.
    case notPrimary
    /// `grant` when `LessorConfig.maxLeases` leases exist (not in etcd).
    case tooManyLeases
    /// The backend failed; the description of its error.
    case backend(String)

    /// The message etcd sends for this error (ours for `tooManyLeases`).
    public var description: String {
        switch self {
        case .notFound: return "etcdserver: requested lease not found"
        case .alreadyExists: return "etcdserver: lease already exists"
        case .ttlTooLarge: return "etcdserver: too large lease TTL"
        case .notPrimary: return "etcdserver: not primary"
        case .tooManyLeases: return "etcdserver: too many leases"
        case .backend(let detail): return detail
        }
    }
}
