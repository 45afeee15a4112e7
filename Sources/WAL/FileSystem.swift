#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The file operations the WAL and the snapshotter perform, and nothing
/// more. Production code uses `PosixFileSystem`; tests wrap it to count
/// fsyncs or to inject faults.
public protocol WALFileSystem: Sendable {
    func fileExists(atPath path: String) -> Bool
    /// Creates `path` and any missing parents.
    func createDirectory(atPath path: String) throws(WALError)
    /// Names (not paths) of the entries in a directory, excluding `.`/`..`.
    func contentsOfDirectory(atPath path: String) throws(WALError) -> [String]
    /// Removes a file, or a directory and everything below it.
    func removeItem(atPath path: String) throws(WALError)
    func rename(atPath source: String, toPath destination: String) throws(WALError)
    /// fsyncs a directory so that entries created, renamed or removed in it
    /// are durable.
    func syncDirectory(atPath path: String) throws(WALError)
    func readFile(atPath path: String) throws(WALError) -> [UInt8]
    func openFile(atPath path: String, mode: WALFileOpenMode) throws(WALError) -> any WALFileHandle
    /// Takes an exclusive advisory lock on a directory, held until the
    /// returned lock is released or deallocated, so that two processes
    /// never append to one log. Fails with `.locked` if it is held. The
    /// default implementation locks nothing.
    func lockDirectory(atPath path: String) throws(WALError) -> any WALDirectoryLock
}

extension WALFileSystem {
    public func lockDirectory(atPath path: String) throws(WALError) -> any WALDirectoryLock {
        NoDirectoryLock()
    }
}

/// A held directory lock.
public protocol WALDirectoryLock: AnyObject {
    func release()
}

private final class NoDirectoryLock: WALDirectoryLock {
    func release() {}
}

public enum WALFileOpenMode: Sendable {
    /// Create the file, or truncate it to zero length if it exists.
    case createTruncate
    /// Open an existing file for reading and writing.
    case readWrite
}

/// An open file. Owned by one WAL or one snapshotter call at a time.
public protocol WALFileHandle: AnyObject {
    /// Writes all of `bytes` at `offset` (positional; there is no cursor).
    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(WALError)
    /// Makes the file's data and the metadata needed to read it (size,
    /// allocation) durable: fdatasync.
    func sync() throws(WALError)
    func truncate(toSize size: Int64) throws(WALError)
    /// Extends the file with zeros to at least `size` bytes and reserves
    /// its blocks, so later appends do not allocate.
    func preallocate(toSize size: Int64) throws(WALError)
    func size() throws(WALError) -> Int64
    func close()
}

/// `WALFileSystem` on the local POSIX file system.
public struct PosixFileSystem: WALFileSystem {
    public init() {}

    public func fileExists(atPath path: String) -> Bool {
        access(path, F_OK) == 0
    }

    public func createDirectory(atPath path: String) throws(WALError) {
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") {
            prefix += component
            if mkdir(prefix, 0o700) != 0 {
                let code = errno
                var status = stat()
                guard code == EEXIST, stat(prefix, &status) == 0, (status.st_mode & S_IFMT) == S_IFDIR else {
                    throw .ioError(operation: "mkdir", path: prefix, errno: code)
                }
            }
            prefix += "/"
        }
    }

    public func contentsOfDirectory(atPath path: String) throws(WALError) -> [String] {
        guard let directory = opendir(path) else {
            throw .ioError(operation: "opendir", path: path, errno: errno)
        }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) { pointer in
                pointer.withMemoryRebound(to: CChar.self, capacity: MemoryLayout.size(ofValue: entry.pointee.d_name)) {
                    String(cString: $0)
                }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    public func removeItem(atPath path: String) throws(WALError) {
        var status = stat()
        guard lstat(path, &status) == 0 else {
            throw .ioError(operation: "lstat", path: path, errno: errno)
        }
        if (status.st_mode & S_IFMT) == S_IFDIR {
            for name in try contentsOfDirectory(atPath: path) {
                try removeItem(atPath: path + "/" + name)
            }
            guard rmdir(path) == 0 else { throw .ioError(operation: "rmdir", path: path, errno: errno) }
        } else {
            guard unlink(path) == 0 else { throw .ioError(operation: "unlink", path: path, errno: errno) }
        }
    }

    public func rename(atPath source: String, toPath destination: String) throws(WALError) {
        guard systemRename(source, destination) == 0 else {
            throw .ioError(operation: "rename to \(destination)", path: source, errno: errno)
        }
    }

    public func syncDirectory(atPath path: String) throws(WALError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .ioError(operation: "open directory", path: path, errno: errno) }
        defer { _ = systemClose(fd) }
        guard fsync(fd) == 0 else { throw .ioError(operation: "fsync directory", path: path, errno: errno) }
    }

    public func readFile(atPath path: String) throws(WALError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .ioError(operation: "open", path: path, errno: errno) }
        defer { _ = systemClose(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw .ioError(operation: "fstat", path: path, errno: errno) }
        var bytes = [UInt8](repeating: 0, count: Int(status.st_size))
        var filled = 0
        while filled < bytes.count {
            let count = bytes.withUnsafeMutableBytes { buffer in
                pread(fd, buffer.baseAddress! + filled, buffer.count - filled, off_t(filled))
            }
            if count < 0 {
                if errno == EINTR { continue }
                throw .ioError(operation: "read", path: path, errno: errno)
            }
            if count == 0 { break }  // the file shrank under us
            filled += count
        }
        if filled < bytes.count { bytes.removeSubrange(filled...) }
        return bytes
    }

    public func openFile(atPath path: String, mode: WALFileOpenMode) throws(WALError) -> any WALFileHandle {
        let flags: Int32
        switch mode {
        case .createTruncate: flags = O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC
        case .readWrite: flags = O_RDWR | O_CLOEXEC
        }
        let fd = open(path, flags, 0o600)
        guard fd >= 0 else { throw .ioError(operation: "open", path: path, errno: errno) }
        return PosixFileHandle(fd: fd, path: path)
    }
}

extension PosixFileSystem {
    public func lockDirectory(atPath path: String) throws(WALError) -> any WALDirectoryLock {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .ioError(operation: "open directory", path: path, errno: errno) }
        // flock locks belong to the open file description, so this also
        // excludes a second lock from the same process. A lock just released
        // can linger for a moment in a child this process is spawning (the
        // child shares the descriptor until its exec closes it), so a busy
        // lock is retried for up to 100 ms before it counts as held.
        var attempts = 0
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            attempts += 1
            if code == EWOULDBLOCK && attempts < 20 {
                usleep(5_000)
                continue
            }
            _ = systemClose(fd)
            if code == EWOULDBLOCK { throw .locked(path: path) }
            throw .ioError(operation: "flock", path: path, errno: code)
        }
        return PosixDirectoryLock(fd: fd)
    }
}

private final class PosixDirectoryLock: WALDirectoryLock {
    private var fd: Int32

    init(fd: Int32) {
        self.fd = fd
    }

    deinit { release() }

    func release() {
        if fd >= 0 {
            _ = systemClose(fd)  // closing the last descriptor drops the lock
            fd = -1
        }
    }
}

final class PosixFileHandle: WALFileHandle {
    private var fd: Int32
    private let path: String

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    deinit { close() }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(WALError) {
        var written = 0
        while written < bytes.count {
            let count = pwrite(fd, bytes.baseAddress! + written, bytes.count - written, off_t(offset) + off_t(written))
            if count < 0 {
                if errno == EINTR { continue }
                throw .ioError(operation: "write", path: path, errno: errno)
            }
            written += count
        }
    }

    func sync() throws(WALError) {
        #if canImport(Darwin)
        let result = fsync(fd)
        #else
        let result = fdatasync(fd)
        #endif
        guard result == 0 else { throw .ioError(operation: "fdatasync", path: path, errno: errno) }
    }

    func truncate(toSize size: Int64) throws(WALError) {
        guard ftruncate(fd, off_t(size)) == 0 else {
            throw .ioError(operation: "ftruncate", path: path, errno: errno)
        }
    }

    func preallocate(toSize size: Int64) throws(WALError) {
        let current = try self.size()
        guard size > current else { return }
        #if canImport(Glibc) || canImport(Musl)
        // Reserve real blocks; fall back to a sparse extension where the file
        // system cannot.
        let code = posix_fallocate(fd, 0, off_t(size))
        if code == 0 { return }
        guard code == EOPNOTSUPP || code == ENOSYS || code == EINVAL else {
            throw .ioError(operation: "posix_fallocate", path: path, errno: code)
        }
        #endif
        try truncate(toSize: size)
    }

    func size() throws(WALError) -> Int64 {
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw .ioError(operation: "fstat", path: path, errno: errno) }
        return Int64(status.st_size)
    }

    func close() {
        if fd >= 0 {
            _ = systemClose(fd)
            fd = -1
        }
    }
}

/// strerror text for error descriptions.
func errnoDescription(_ code: Int32) -> String {
    guard let message = strerror(code) else { return "unknown error" }
    return String(cString: message)
}

// Module-qualified wrappers: the unqualified names are shadowed by the
// protocol methods of the same name inside the types above.
private func systemClose(_ fd: Int32) -> Int32 {
    close(fd)
}

private func systemRename(_ source: String, _ destination: String) -> Int32 {
    rename(source, destination)
}

extension Array where Element == UInt8 {
    /// `withUnsafeBytes` for a body that throws `WALError` (the standard
    /// library version only rethrows untyped errors).
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws(WALError) -> R) throws(WALError) -> R {
        let result: Result<R, WALError> = withUnsafeBytes { buffer in
            Result { () throws(WALError) -> R in try body(buffer) }
        }
        return try result.get()
    }
}
