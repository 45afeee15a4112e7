/// An error a client sees, as etcd reports it: a gRPC status code and etcd's
/// exact message (clients such as Go's clientv3 match on the message to decide
/// whether to retry). EtcdServer does not depend on gRPC; the API layer turns
/// `code` into the gRPC status.
public struct EtcdError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The gRPC status codes etcd uses, with gRPC's numbering.
    public enum Code: Int, Sendable {
        case canceled = 1, unknown = 2, invalidArgument = 3, deadlineExceeded = 4, notFound = 5
        case alreadyExists = 6, permissionDenied = 7, resourceExhausted = 8, failedPrecondition = 9
        case aborted = 10, outOfRange = 11, unimplemented = 12, `internal` = 13, unavailable = 14
        case dataLoss = 15, unauthenticated = 16
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    public static let emptyKey = EtcdError(.invalidArgument, "etcdserver: key is not provided")
    public static let keyNotFound = EtcdError(.invalidArgument, "etcdserver: key not found")
    public static let valueProvided = EtcdError(.invalidArgument, "etcdserver: value is provided")
    public static let leaseProvided = EtcdError(.invalidArgument, "etcdserver: lease is provided")
    public static let tooManyOps = EtcdError(.invalidArgument, "etcdserver: too many operations in txn request")
    public static let duplicateKey = EtcdError(.invalidArgument, "etcdserver: duplicate key given in txn request")
    public static let leaseNotFound = EtcdError(.notFound, "etcdserver: requested lease not found")
    public static let leaseExists = EtcdError(.failedPrecondition, "etcdserver: lease already exists")
    public static let leaseTTLTooLarge = EtcdError(.outOfRange, "etcdserver: too large lease TTL")
    public static let compacted = EtcdError(.outOfRange, "etcdserver: mvcc: required revision has been compacted")
    public static let futureRevision = EtcdError(.outOfRange, "etcdserver: mvcc: required revision is a future revision")
    public static let noSpace = EtcdError(.resourceExhausted, "etcdserver: mvcc: database space exceeded")
    public static let requestTooLarge = EtcdError(.invalidArgument, "etcdserver: request is too large")
    public static let noLeader = EtcdError(.unavailable, "etcdserver: no leader")
    public static let leaderChanged = EtcdError(.unavailable, "etcdserver: leader changed")
    public static let timeout = EtcdError(.unavailable, "etcdserver: request timed out")
    public static let stopped = EtcdError(.unavailable, "etcdserver: server stopped")
    public static let notPrimary = EtcdError(.failedPrecondition, "etcdserver: not primary")
    public static let corrupt = EtcdError(.dataLoss, "etcdserver: corrupt cluster")
}
