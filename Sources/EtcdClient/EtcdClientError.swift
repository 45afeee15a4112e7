import GRPCCore

/// An error from the etcd client, typed after the errors etcd's server sends.
///
/// The ``description`` of a server error is etcd's own message (for example
/// `etcdserver: requested lease not found`), so it can be shown to users and
/// compared with what etcd's Go tools print.
public enum EtcdClientError: Error, Sendable, Equatable, CustomStringConvertible {
    // KV
    case emptyKey, keyNotFound, valueProvided, leaseProvided, tooManyOps, duplicateKey
    /// The requested revision has been compacted.
    case compacted
    /// The requested revision is newer than the store's current revision.
    case futureRevision
    /// The database space quota is exhausted.
    case noSpace
    // Lease
    case leaseNotFound, leaseExists, leaseTTLTooLarge
    // Cluster
    case memberExists, peerURLExists, memberNotEnoughStarted, memberBadURLs, memberNotFound
    case memberNotLearner, learnerNotReady, tooManyLearners
    // Limits
    case requestTooLarge, tooManyRequests
    // Auth
    case rootUserNotExist, rootRoleNotExist, userAlreadyExists, userEmpty, userNotFound
    case roleAlreadyExists, roleNotFound, roleEmpty, authFailed, permissionDenied
    case roleNotGranted, permissionNotGranted, authNotEnabled, invalidAuthToken, invalidAuthMgmt, authOldRevision
    // Server state
    case noLeader, notLeader, leaderChanged, notCapable, stopped, timeout
    case timeoutDueToLeaderFail, timeoutDueToConnectionLost, timeoutWaitAppliedIndex, unhealthy, corrupt
    case notSupportedForLearner, badLeaderTransferee
    /// etcd 3.6's downgrade errors.
    case wrongDowngradeVersionFormat, invalidDowngradeTargetVersion, downgradeInProcess, noInflightDowngrade, clusterVersionUnavailable
    /// The watch was canceled by the server (`reason` is the server's cancel reason).
    case watchCanceled(reason: String)
    /// A watch's start revision has been compacted; `compactRevision` is the oldest revision still available.
    case watchCompacted(compactRevision: Int64)
    /// The call did not finish in time (also: no endpoint could be reached within the dial timeout).
    case deadlineExceeded
    /// The call was cancelled.
    case canceled
    /// The client has no endpoints.
    case noAvailableEndpoints
    /// The client was closed.
    case closed
    /// The session's lease expired or was revoked.
    case sessionExpired
    /// `Election.proclaim` / `resign` by a campaigner that is not the leader.
    case electionNotLeader
    /// `Election.leader` when there is no leader.
    case electionNoLeader
    /// A lock was lost (its key vanished) before it could be reported held.
    case lockLost
    /// An STM transaction kept conflicting and ran out of retries.
    case stmConflict
    /// The TLS files cannot be used (missing, unreadable, unparsable, a certificate without its key).
    case tlsConfiguration(message: String)
    /// The TLS handshake with `endpoint` failed (an unknown CA, a name mismatch, a missing client certificate, ...).
    case tlsHandshakeFailed(endpoint: String, reason: String)
    /// Any other gRPC failure.
    case rpc(code: RPCError.Code, message: String)

    /// etcd's message for the error (what etcd's Go client and etcdctl print).
    public var description: String {
        switch self {
        case let .watchCanceled(reason): return reason.isEmpty ? "etcdserver: watch canceled" : reason
        case .watchCompacted: return "etcdserver: mvcc: required revision has been compacted"
        case .deadlineExceeded: return "context deadline exceeded"
        case .canceled: return "context canceled"
        case .noAvailableEndpoints: return "etcdclient: no available endpoints"
        case .closed: return "grpc: the client connection is closing"
        case .sessionExpired: return "session expired"
        case .electionNotLeader: return "election: not leader"
        case .electionNoLeader: return "election: no leader"
        case .lockLost: return "lock lost on init"
        case .stmConflict: return "stm: too many conflicts"
        case let .rpc(code, message): return "rpc error: code = \(Self.goName(code)) desc = \(message)"
        case let .tlsConfiguration(message): return message
        case let .tlsHandshakeFailed(_, reason): return "transport: authentication handshake failed: \(reason)"
        default:
            return Self.table.first { $0.error == self }?.message ?? "unknown error"
        }
    }

    /// The gRPC status code etcd uses for this error.
    public var code: RPCError.Code {
        switch self {
        case let .rpc(code, _): return code
        case .watchCanceled: return .cancelled
        case .watchCompacted: return .outOfRange
        case .deadlineExceeded: return .deadlineExceeded
        case .canceled: return .cancelled
        case .noAvailableEndpoints, .closed, .tlsHandshakeFailed: return .unavailable
        case .tlsConfiguration: return .invalidArgument
        case .sessionExpired, .electionNotLeader, .electionNoLeader, .lockLost, .stmConflict: return .failedPrecondition
        default: return Self.table.first { $0.error == self }?.code ?? .unknown
        }
    }

    /// True for errors that mean "this endpoint cannot serve now; another one may".
    var isEndpointUnavailable: Bool {
        switch self {
        case .noLeader, .notCapable, .stopped, .unhealthy, .notSupportedForLearner, .leaderChanged,
             .timeout, .timeoutDueToLeaderFail, .timeoutDueToConnectionLost, .timeoutWaitAppliedIndex: return true
        default: return false
        }
    }

    static let table: [(error: EtcdClientError, code: RPCError.Code, message: String)] = [
        (.emptyKey, .invalidArgument, "etcdserver: key is not provided"),
        (.keyNotFound, .invalidArgument, "etcdserver: key not found"),
        (.valueProvided, .invalidArgument, "etcdserver: value is provided"),
        (.leaseProvided, .invalidArgument, "etcdserver: lease is provided"),
        (.tooManyOps, .invalidArgument, "etcdserver: too many operations in txn request"),
        (.duplicateKey, .invalidArgument, "etcdserver: duplicate key given in txn request"),
        (.compacted, .outOfRange, "etcdserver: mvcc: required revision has been compacted"),
        (.futureRevision, .outOfRange, "etcdserver: mvcc: required revision is a future revision"),
        (.noSpace, .resourceExhausted, "etcdserver: mvcc: database space exceeded"),
        (.leaseNotFound, .notFound, "etcdserver: requested lease not found"),
        (.leaseExists, .failedPrecondition, "etcdserver: lease already exists"),
        (.leaseTTLTooLarge, .outOfRange, "etcdserver: too large lease TTL"),
        (.memberExists, .failedPrecondition, "etcdserver: member ID already exist"),
        (.peerURLExists, .failedPrecondition, "etcdserver: Peer URLs already exists"),
        (.memberNotEnoughStarted, .failedPrecondition, "etcdserver: re-configuration failed due to not enough started members"),
        (.memberBadURLs, .invalidArgument, "etcdserver: given member URLs are invalid"),
        (.memberNotFound, .notFound, "etcdserver: member not found"),
        (.memberNotLearner, .failedPrecondition, "etcdserver: can only promote a learner member"),
        (.learnerNotReady, .failedPrecondition, "etcdserver: can only promote a learner member which is in sync with leader"),
        (.tooManyLearners, .failedPrecondition, "etcdserver: too many learner members in cluster"),
        (.requestTooLarge, .invalidArgument, "etcdserver: request is too large"),
        (.tooManyRequests, .resourceExhausted, "etcdserver: too many requests"),
        (.rootUserNotExist, .failedPrecondition, "etcdserver: root user does not exist"),
        (.rootRoleNotExist, .failedPrecondition, "etcdserver: root user does not have root role"),
        (.userAlreadyExists, .failedPrecondition, "etcdserver: user name already exists"),
        (.userEmpty, .invalidArgument, "etcdserver: user name is empty"),
        (.userNotFound, .failedPrecondition, "etcdserver: user name not found"),
        (.roleAlreadyExists, .failedPrecondition, "etcdserver: role name already exists"),
        (.roleNotFound, .failedPrecondition, "etcdserver: role name not found"),
        (.roleEmpty, .invalidArgument, "etcdserver: role name is empty"),
        (.authFailed, .invalidArgument, "etcdserver: authentication failed, invalid user ID or password"),
        (.permissionDenied, .permissionDenied, "etcdserver: permission denied"),
        (.roleNotGranted, .failedPrecondition, "etcdserver: role is not granted to the user"),
        (.permissionNotGranted, .failedPrecondition, "etcdserver: permission is not granted to the role"),
        (.authNotEnabled, .failedPrecondition, "etcdserver: authentication is not enabled"),
        (.invalidAuthToken, .unauthenticated, "etcdserver: invalid auth token"),
        (.invalidAuthMgmt, .invalidArgument, "etcdserver: invalid auth management"),
        (.authOldRevision, .invalidArgument, "etcdserver: revision of auth store is old"),
        (.noLeader, .unavailable, "etcdserver: no leader"),
        (.notLeader, .failedPrecondition, "etcdserver: not leader"),
        (.leaderChanged, .unavailable, "etcdserver: leader changed"),
        (.notCapable, .unavailable, "etcdserver: not capable"),
        (.stopped, .unavailable, "etcdserver: server stopped"),
        (.timeout, .unavailable, "etcdserver: request timed out"),
        (.timeoutDueToLeaderFail, .unavailable, "etcdserver: request timed out, possibly due to previous leader failure"),
        (.timeoutDueToConnectionLost, .unavailable, "etcdserver: request timed out, possibly due to connection lost"),
        (.timeoutWaitAppliedIndex, .unavailable, "etcdserver: request timed out, waiting for the applied index took too long"),
        (.unhealthy, .unavailable, "etcdserver: unhealthy cluster"),
        (.corrupt, .dataLoss, "etcdserver: corrupt cluster"),
        (.notSupportedForLearner, .unavailable, "etcdserver: rpc not supported for learner"),
        (.badLeaderTransferee, .failedPrecondition, "etcdserver: bad leader transferee"),
        (.wrongDowngradeVersionFormat, .invalidArgument, "etcdserver: wrong downgrade target version format"),
        (.invalidDowngradeTargetVersion, .invalidArgument, "etcdserver: invalid downgrade target version"),
        (.downgradeInProcess, .failedPrecondition, "etcdserver: cluster has a downgrade job in progress"),
        (.noInflightDowngrade, .failedPrecondition, "etcdserver: no inflight downgrade job"),
        (.clusterVersionUnavailable, .failedPrecondition, "etcdserver: cluster version not found during downgrade"),
    ]

    /// Maps any error thrown by a call to an `EtcdClientError`.
    public init(_ error: any Error) {
        if let error = error as? EtcdClientError { self = error; return }
        if let failure = error as? EtcdAuthenticationFailure { self = failure.error; return }
        if error is CancellationError { self = .canceled; return }
        if let rpc = error as? RPCError {
            if let known = Self.table.first(where: { $0.message == rpc.message }) { self = known.error; return }
            switch rpc.code {
            case .deadlineExceeded: self = .deadlineExceeded
            case .cancelled where rpc.message.isEmpty || rpc.message.lowercased().contains("cancel"): self = .canceled
            default: self = .rpc(code: rpc.code, message: rpc.message)
            }
            return
        }
        self = .rpc(code: .unknown, message: "\(error)")
    }

    /// The Go spelling of a gRPC status code (`Unavailable`, `DeadlineExceeded`, ...).
    public static func goName(_ code: RPCError.Code) -> String {
        switch code {
        case .cancelled: return "Canceled"
        case .unknown: return "Unknown"
        case .invalidArgument: return "InvalidArgument"
        case .deadlineExceeded: return "DeadlineExceeded"
        case .notFound: return "NotFound"
        case .alreadyExists: return "AlreadyExists"
        case .permissionDenied: return "PermissionDenied"
        case .resourceExhausted: return "ResourceExhausted"
        case .failedPrecondition: return "FailedPrecondition"
        case .aborted: return "Aborted"
        case .outOfRange: return "OutOfRange"
        case .unimplemented: return "Unimplemented"
        case .internalError: return "Internal"
        case .unavailable: return "Unavailable"
        case .dataLoss: return "DataLoss"
        case .unauthenticated: return "Unauthenticated"
        default: return "Code(\(code.rawValue))"
        }
    }
}

/// Authenticate failed inside a call (internal: the call rethrows the
/// underlying error and ``EtcdClient/authenticationFailed`` says so).
struct EtcdAuthenticationFailure: Error, Sendable {
    let error: EtcdClientError
}
