import Checksum
import EtcdProto
import Foundation

/// Raft snapshot files in one directory (the server's `member/snap`), named
/// `%016x-%016x.snap` from the snapshot's term and index, each holding a
/// snappb.Snapshot { crc = CRC32C(data), data = marshaled raftpb.Snapshot }.
///
/// Files are written to a temp name, fsynced, renamed into place and the
/// directory fsynced, so a crash never leaves a partial `.snap` file. A file
/// that fails to load is renamed to `<name>.broken` and skipped.
public struct Snapshotter: Sendable {
    public let directory: String
    private let fs: any WALFileSystem

    static let suffix = ".snap"

    public init(dir directory: String, fs: any WALFileSystem = PosixFileSystem()) {
        self.directory = directory
        self.fs = fs
    }

    /// The file name for a snapshot at `term` and `index`.
    public static func fileName(term: UInt64, index: UInt64) -> String {
        hex16(term) + "-" + hex16(index) + suffix
    }

    /// Writes `snapshot` durably. An empty snapshot (index 0) is ignored.
    public func save(_ snapshot: Raftpb_Snapshot) throws(WALError) {
        guard snapshot.metadata.index != 0 else { return }
        let name = Self.fileName(term: snapshot.metadata.term, index: snapshot.metadata.index)
        let path = joinPath(directory, name)
        let tempPath = path + ".tmp"

        // Encoding generated messages without required fields cannot fail.
        let data: [UInt8] = (try? snapshot.serializedBytes()) ?? []
        var file = Snappb_snapshot()
        file.crc = CRC32C.checksum(data)
        file.data = Data(data)
        let bytes: [UInt8] = (try? file.serializedBytes()) ?? []

        try fs.createDirectory(atPath: directory)
        let handle = try fs.openFile(atPath: tempPath, mode: .createTruncate)
        do throws(WALError) {
            try bytes.withBytes { buffer throws(WALError) in try handle.write(buffer, at: 0) }
            try handle.sync()
            handle.close()
            try fs.rename(atPath: tempPath, toPath: path)
            try fs.syncDirectory(atPath: directory)
        } catch {
            handle.close()
            try? fs.removeItem(atPath: tempPath)
            throw error
        }
    }

    /// The newest snapshot that loads and checks out, or nil if there is
    /// none. Broken files on the way are renamed to `.broken`.
    public func loadNewest() throws(WALError) -> Raftpb_Snapshot? {
        try loadNewest { _ in true }
    }

    /// The newest valid snapshot that has a marker in `walSnapshots`
    /// (same term and index) — i.e. one the WAL can be opened at. See
    /// `WAL.validSnapshots(dir:fs:)`.
    public func loadNewestAvailable(among walSnapshots: [WALSnapshot]) throws(WALError) -> Raftpb_Snapshot? {
        try loadNewest { snapshot in
            walSnapshots.contains { $0.index == snapshot.metadata.index && $0.term == snapshot.metadata.term }
        }
    }

    /// Names of the snapshot files, newest (highest term, then index) first.
    public func snapshotFileNames() throws(WALError) -> [String] {
        guard fs.fileExists(atPath: directory) else { return [] }
        return try fs.contentsOfDirectory(atPath: directory)
            .filter { $0.hasSuffix(Self.suffix) }
            .sorted(by: >)
    }

    /// Removes all but the newest `count` snapshot files,
    /// as etcd's purge does; a failure to remove one is not an error.
    public func prune(keeping count: Int) {
        guard let names = try? snapshotFileNames() else { return }
        for name in names.dropFirst(count) { try? fs.removeItem(atPath: directory + "/" + name) }
    }

    private func loadNewest(matching accept: (Raftpb_Snapshot) -> Bool) throws(WALError) -> Raftpb_Snapshot? {
        for name in try snapshotFileNames() {
            let path = joinPath(directory, name)
            let snapshot: Raftpb_Snapshot
            do throws(WALError) {
                snapshot = try Self.read(path: path, fs: fs)
            } catch {
                if case .brokenSnapshotFile = error {
                    try fs.rename(atPath: path, toPath: path + ".broken")
                    continue
                }
                throw error
            }
            if accept(snapshot) { return snapshot }
        }
        return nil
    }

    /// Reads and verifies one snapshot file.
    public static func read(path: String, fs: any WALFileSystem = PosixFileSystem()) throws(WALError) -> Raftpb_Snapshot {
        let bytes = try fs.readFile(atPath: path)
        func broken(_ reason: String) -> WALError { .brokenSnapshotFile(path: path, reason: reason) }
        guard !bytes.isEmpty else { throw broken("empty file") }
        guard let file = try? Snappb_snapshot(serializedBytes: bytes) else { throw broken("not a snappb.Snapshot") }
        guard !file.data.isEmpty, file.crc != 0 else { throw broken("empty snapshot") }
        guard CRC32C.checksum(file.data) == file.crc else { throw broken("crc mismatch") }
        guard let snapshot = try? Raftpb_Snapshot(serializedBytes: file.data) else {
            throw broken("data is not a raftpb.Snapshot")
        }
        return snapshot
    }
}
