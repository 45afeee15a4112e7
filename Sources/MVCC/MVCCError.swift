import Backend

/// Errors of the KV store. `message` is the exact string etcd sends to
/// clients (they match on it); each case notes the gRPC status code the API
/// layer should use.
public enum MVCCError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The requested revision is older than the last compaction. gRPC: OUT_OF_RANGE.
    case compacted
    /// The requested revision is newer than the store. gRPC: OUT_OF_RANGE.
    case futureRevision
    /// A txn puts a key twice or puts and deletes it. gRPC: INVALID_ARGUMENT.
    case duplicateKey
    /// `ignore_value`/`ignore_lease` on a key that does not exist. gRPC: INVALID_ARGUMENT.
    case keyNotFound
    /// An empty key in a request. gRPC: INVALID_ARGUMENT.
    case emptyKey
    /// More operations in a txn than `StoreConfig.maxTxnOps`. gRPC: INVALID_ARGUMENT.
    case tooManyOperations
    /// A value together with `ignore_value`. gRPC: INVALID_ARGUMENT.
    case valueProvided
    /// A lease together with `ignore_lease`. gRPC: INVALID_ARGUMENT.
    case leaseProvided
    /// A put names a lease that does not exist. gRPC: NOT_FOUND.
    case leaseNotFound
    /// The backend failed. After a failed write the store refuses further
    /// writes until it is reopened (the WAL replays what was lost).
    /// gRPC: `quotaExceeded` → RESOURCE_EXHAUSTED, anything else → INTERNAL.
    case backend(BackendError)
    /// A stored entry could not be decoded. gRPC: DATA_LOSS.
    case corruptEntry(String)

    public var message: String {
        switch self {
        case .compacted: return "etcdserver: mvcc: required revision has been compacted"
        case .futureRevision: return "etcdserver: mvcc: required revision is a future revision"
        case .duplicateKey: return "etcdserver: duplicate key given in txn request"
        case .keyNotFound: return "etcdserver: key not found"
        case .emptyKey: return "etcdserver: key is not provided"
        case .tooManyOperations: return "etcdserver: too many operations in txn request"
        case .valueProvided: return "etcdserver: value is provided"
        case .leaseProvided: return "etcdserver: lease is provided"
        case .leaseNotFound: return "etcdserver: requested lease not found"
        case .backend(.quotaExceeded): return "etcdserver: mvcc: database space exceeded"
        case .backend(let error): return "etcdserver: \(error.description)"
        case .corruptEntry(let detail): return "etcdserver: corrupt mvcc entry: \(detail)"
        }
    }

    public var description: String { message }
}
