import CLMDB

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Every failure the backend reports. LMDB return codes and OS errors are
/// translated into these cases; the backend never traps on a storage error.
public enum BackendError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The database needs more space than `BackendConfig.quotaBytes` allows.
    /// The operation that hit the limit was not applied; the rest of the
    /// pending batch is intact.
    case quotaExceeded(quotaBytes: Int)
    /// The file system ran out of space (`ENOSPC`) while writing `path`.
    case diskFull(path: String)
    /// LMDB found an inconsistent page, a bad meta page or a file that is not
    /// an LMDB environment. Restore the member from a snapshot.
    case corrupted(path: String, detail: String)
    /// The LMDB reader table is full: too many concurrent read transactions.
    case tooManyReaders(limit: Int)
    /// An operating-system call failed.
    case io(operation: String, path: String, errno: Int32)
    /// Any other LMDB error, with LMDB's own message.
    case lmdb(operation: String, code: Int32, message: String)
    /// The backend was closed.
    case closed
    /// An online defragmentation gave up (the data is untouched).
    case defragmentationAborted(reason: String)

    public var description: String {
        switch self {
        case .quotaExceeded(let quota):
            return "backend: database space exceeded (quota \(quota) bytes)"
        case .diskFull(let path):
            return "backend: no space left on device writing \(path)"
        case .corrupted(let path, let detail):
            return "backend: database \(path) is corrupted: \(detail)"
        case .tooManyReaders(let limit):
            return "backend: too many concurrent read transactions (limit \(limit))"
        case .io(let operation, let path, let code):
            return "backend: \(operation) \(path): \(String(cString: strerror(code)))"
        case .lmdb(let operation, let code, let message):
            return "backend: \(operation) failed: \(message) (\(code))"
        case .closed:
            return "backend: closed"
        case .defragmentationAborted(let reason):
            return "backend: defragmentation aborted: \(reason)"
        }
    }
}

/// Translates an LMDB return code into a `BackendError`. `MDB_MAP_FULL` is
/// handled by the caller (it grows the map) before it gets here.
func backendError(_ code: Int32, operation: String, path: String, maxReaders: Int) -> BackendError {
    switch code {
    case ENOSPC:
        return .diskFull(path: path)
    case MDB_CORRUPTED, MDB_PAGE_NOTFOUND, MDB_INVALID, MDB_VERSION_MISMATCH, MDB_PANIC:
        return .corrupted(path: path, detail: "\(operation): \(String(cString: mdb_strerror(code)))")
    case MDB_READERS_FULL:
        return .tooManyReaders(limit: maxReaders)
    case EIO, EACCES, EROFS, ENOENT, EEXIST, EPERM:
        return .io(operation: operation, path: path, errno: code)
    default:
        return .lmdb(operation: operation, code: code, message: String(cString: mdb_strerror(code)))
    }
}
