import Backend
import Bbolt
import Foundation
import Logging

/// A data dir written by the real etcd holds its backend as a bbolt file at
/// `member/snap/db`. At start, before the backend opens, such a file is
/// converted once into our LMDB backend (same buckets, keys and values: the
/// formats agree) and kept beside it as `db.bbolt`, so an operator can stop
/// an etcd member and start ours on its data dir.
///
/// Crash safety: the LMDB file is built as `db.converting` and renamed in
/// only after the original was renamed to `db.bbolt`; a start that finds
/// `db.bbolt` but no `db` converts again from `db.bbolt`.
enum BboltConversion {
    static func convertIfNeeded(backendPath path: String, logger: Logger) throws {
        let fm = FileManager.default
        let kept = path + ".bbolt"
        let source: String
        if fm.fileExists(atPath: path) {
            guard isBbolt(path) else { return }
            source = path
        } else if fm.fileExists(atPath: kept) {
            source = kept
        } else {
            return
        }
        let staging = path + ".converting"
        try? fm.removeItem(atPath: staging)
        try? fm.removeItem(atPath: staging + "-lock")
        let reader = try BboltReader(path: source)
        let started = Date()
        let backend = try Backend(path: staging, config: SnapshotRestore.loadingConfig(for: reader, quotaBytes: 8 << 30))
        let copied: (keys: Int, latestRevision: Int64)
        do {
            copied = try SnapshotRestore.copyBuckets(from: reader, into: backend)
            try backend.sync()
            try backend.close()
        } catch {
            backend.abandon()
            try? fm.removeItem(atPath: staging)
            try? fm.removeItem(atPath: staging + "-lock")
            throw error
        }
        if source == path {
            guard rename(path, kept) == 0 else { throw BackendError.io(operation: "rename", path: path, errno: errno) }
        }
        guard rename(staging, path) == 0 else { throw BackendError.io(operation: "rename", path: staging, errno: errno) }
        try? fm.removeItem(atPath: staging + "-lock")
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        let fd = open(directory, O_RDONLY | O_DIRECTORY)
        if fd >= 0 { _ = fsync(fd); close(fd) }
        logger.notice("converted etcd's bbolt backend to ours (LMDB); the original is kept beside it", metadata: [
            "path": "\(path)", "original": "\(kept)", "keys": "\(copied.keys)",
            "revision": "\(copied.latestRevision)", "took": "\(Date().timeIntervalSince(started))s",
        ])
    }

    /// Whether the file starts with a bbolt meta page (magic after the page header).
    static func isBbolt(_ path: String) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        guard let head = try? handle.read(upToCount: 24), head.count == 24 else { return false }
        let magic = head[16..<20].withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) }
        return magic == BboltFormat.magic
    }
}
