import Checksum
import CLMDB

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension Backend {
    /// Keys left out of `hash()` because they differ between members that
    /// hold the same data: the raft position of the last applied entry.
    public static let defaultHashIgnores: [(Bucket, [UInt8])] = [
        (.meta, MetaKey.consistentIndex),
        (.meta, MetaKey.term),
    ]

    /// CRC-32C over every bucket, as etcd computes it: buckets in name order,
    /// each contributing its name and then its keys and values in key order.
    /// Includes the open batch. Any thread.
    public func hash(ignoring ignores: [(Bucket, [UInt8])] = Backend.defaultHashIgnores) throws -> UInt32 {
        return try read { tx in
            var crc = CRC32C()
            for bucket in Backend.bucketsInNameOrder {
                crc.update(bucket.nameBytes)
                let ignored = ignores.filter { $0.0 == bucket }.map(\.1)
                try tx.scan(bucket) { key, value in
                    if !ignored.isEmpty, ignored.contains(where: { $0.withUnsafeBytes { compareBytes($0, key) } == 0 }) {
                        return true
                    }
                    crc.update(key)
                    crc.update(value)
                    return true
                }
            }
            return crc.value
        }
    }

    /// Rewrites the file without free pages (LMDB's compacting copy), then
    /// swaps it in and reopens. Commits the open batch first. Readers wait
    /// during the swap. Writer thread.
    public func defragment() throws(BackendError) {
        cancelOnlineDefragment()
        try forceCommit()
        let env = try currentEnv()
        let temporary = path + ".defrag"
        unlink(temporary)
        let rc = try Backend.compactingCopy(env, to: temporary)
        guard rc == 0 else {
            unlink(temporary)
            throw lmdbError(rc, "mdb_env_copyfd2")
        }
        try Backend.fsyncFile(temporary)
        try installCopy(at: temporary)
    }

    /// Installs the LMDB file at `source` (a copy made by `snapshot` or
    /// `copy(to:)`, on the same file system as `path`) in place of the
    /// backend's file, which it supersedes entirely: the open batch is
    /// dropped, not committed. `source` is checked first (opened read-only)
    /// and then renamed over `path`. Readers wait during the swap and see
    /// either the old data or the new one. Afterwards the backend is as if
    /// freshly opened on the new file. On failure the old data (and batch)
    /// stays, unless the new file was in place and could not be opened: then
    /// the backend is closed. Writer thread.
    public func replace(withFileAt source: String) throws(BackendError) {
        _ = try currentEnv()
        cancelOnlineDefragment()
        try Backend.validateEnvironment(at: source, maxReaders: config.maxReaders)
        try Backend.fsyncFile(source)
        suspendWriteTxn()
        try withExclusiveEnvironment { () throws(BackendError) in
            closeEnvironmentForReplacement()
            guard rename(source, path) == 0 else {
                let code = errno
                try reopenEnvironment()
                throw .io(operation: "rename", path: source, errno: code)
            }
            discardBatch()
            try Backend.fsyncDirectory(of: path)
            try reopenEnvironment()
        }
    }

    /// Opens the file at `path` read-only as an LMDB environment and reads
    /// its main database, or throws.
    static func validateEnvironment(at path: String, maxReaders: Int) throws(BackendError) {
        func failure(_ rc: Int32, _ operation: String) -> BackendError {
            backendError(rc, operation: operation, path: path, maxReaders: maxReaders)
        }
        var env: OpaquePointer?
        var rc = mdb_env_create(&env)
        guard rc == 0, let env else { throw failure(rc, "mdb_env_create") }
        defer { mdb_env_close(env) }
        rc = mdb_env_set_maxdbs(env, MDB_dbi(Bucket.allCases.count + 4))
        if rc == 0 {
            rc = mdb_env_open(env, path, UInt32(MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS), 0o600)
        }
        guard rc == 0 else { throw failure(rc, "mdb_env_open") }
        var txn: OpaquePointer?
        rc = mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &txn)
        guard rc == 0, let txn else { throw failure(rc, "mdb_txn_begin") }
        defer { mdb_txn_abort(txn) }
        var dbi: MDB_dbi = 0
        var stat = MDB_stat()
        rc = mdb_dbi_open(txn, nil, 0, &dbi)
        if rc == 0 { rc = mdb_stat(txn, dbi, &stat) }
        guard rc == 0 else { throw failure(rc, "mdb_stat") }
    }

    /// Streams a consistent copy of the committed data (a complete LMDB file,
    /// compacted) to `write` in chunks of up to 1 MiB; returns the byte
    /// count. The copy holds exactly the data described by its own stored
    /// consistent index. Call `forceCommit()` first (writer thread) to
    /// include the open batch. Any thread.
    @discardableResult
    public func snapshot(to write: (UnsafeRawBufferPointer) throws -> Void) throws -> Int {
        let fd = try writeCopyToTemporaryFile()
        defer { systemClose(fd) }
        guard lseek(fd, 0, SEEK_SET) == 0 else {
            throw BackendError.io(operation: "lseek", path: path, errno: errno)
        }
        let chunkBytes = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkBytes, alignment: 16)
        defer { buffer.deallocate() }
        var total = 0
        while true {
            let n = systemRead(fd, buffer.baseAddress, chunkBytes)
            if n < 0 {
                if errno == EINTR { continue }
                throw BackendError.io(operation: "read snapshot", path: path, errno: errno)
            }
            if n == 0 { break }
            try write(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            total += n
        }
        return total
    }

    /// Writes a compacted copy of the committed data to a new file at
    /// `destination` (which must not exist). Any thread.
    public func copy(to destination: String) throws(BackendError) {
        let rc: Int32 = try withSharedEnvironment { env throws(BackendError) in
            defer { ReadTx.releaseMappedPages(of: path) }
            return try Backend.compactingCopy(env, to: destination)
        }
        guard rc == 0 else { throw lmdbError(rc, "mdb_env_copyfd2 \(destination)") }
        try Backend.fsyncFile(destination)
    }

    /// LMDB's compacting copy of `env` into a new file at `path`, created
    /// here with the backend's 0600 mode (`mdb_env_copy2` would create it
    /// 0644 and write it with O_DIRECT, several times slower here than
    /// buffered writes and the one fsync the callers make). LMDB's code.
    static func compactingCopy(_ env: OpaquePointer, to path: String) throws(BackendError) -> Int32 {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .io(operation: "create", path: path, errno: errno) }
        defer { systemClose(fd) }
        return mdb_env_copyfd2(env, fd, UInt32(MDB_CP_COMPACT))
    }

    private func writeCopyToTemporaryFile() throws(BackendError) -> Int32 {
        var template = Array((path + ".snapshot.XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw .io(operation: "mkstemp", path: path, errno: errno) }
        let name = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        unlink(name)
        let rc: Int32
        do {
            rc = try withSharedEnvironment { env in
                // LMDB's copy reads every page through the map: give them back.
                defer { ReadTx.releaseMappedPages(of: path) }
                return mdb_env_copyfd2(env, fd, UInt32(MDB_CP_COMPACT))
            }
        } catch {
            systemClose(fd)
            throw error
        }
        guard rc == 0 else {
            systemClose(fd)
            throw lmdbError(rc, "mdb_env_copyfd2")
        }
        return fd
    }

    static func fsyncFile(_ path: String) throws(BackendError) {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw .io(operation: "open", path: path, errno: errno) }
        defer { systemClose(fd) }
        guard fsync(fd) == 0 else { throw .io(operation: "fsync", path: path, errno: errno) }
    }

    /// Flushes the directory holding `path` (a rename or create in it).
    public static func fsyncDirectory(of path: String) throws(BackendError) {
        var directory = path
        if let slash = directory.lastIndex(of: "/") {
            directory = String(directory[..<slash])
            if directory.isEmpty { directory = "/" }
        } else {
            directory = "."
        }
        let fd = open(directory, O_RDONLY | O_DIRECTORY)
        guard fd >= 0 else { throw .io(operation: "open", path: directory, errno: errno) }
        defer { systemClose(fd) }
        _ = fsync(fd)
    }
}

private func systemClose(_ fd: Int32) {
    _ = close(fd)
}

private func systemRead(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int) -> Int {
    read(fd, buffer, count)
}
