import Backend
import Bbolt
import Crypto
import EtcdProto
import Foundation
import MVCC
import Raft
import WAL

/// `etcdutl snapshot restore`: a new data dir for one member of a new
/// cluster, holding the data of an etcd snapshot file (a bbolt database with
/// etcd's buckets and a SHA-256 trailer, from the real etcd or from ours).
///
/// As etcd's restore: the hash is checked unless skipped; the old
/// membership is dropped and the new one (from `--initial-cluster` and the
/// token, so the cluster id is new) written; everything else — every key
/// revision, leases, auth, alarms, compaction marks — is kept. The data dir
/// is then the one our server writes for a new cluster: the LMDB backend
/// (consistent index 1), and a WAL whose raft snapshot marker at index 1
/// holds the new voters. Built beside the target and renamed into place at
/// the end, so a failure leaves nothing behind.
public struct SnapshotRestore {
    public var snapshotPath: String
    public var name = "default"
    public var dataDir = ""
    public var walDir = ""
    public var initialCluster = "default=http://localhost:2380"
    public var initialClusterToken = "etcd-cluster"
    public var initialAdvertisePeerURLs = "http://localhost:2380"
    public var skipHashCheck = false
    /// etcd 3.6's `--bump-revision N --mark-compacted`: the store continues
    /// N revisions past the snapshot's latest, and everything up to there
    /// counts as compacted (so clients that cached revisions, like
    /// Kubernetes' watch caches, relist instead of missing writes).
    public var bumpRevision: UInt64 = 0

    public init(snapshotPath: String) { self.snapshotPath = snapshotPath }

    /// What was restored.
    public struct Result: Sendable {
        public var dataDir: String
        public var memberID: UInt64
        public var clusterID: UInt64
        public var keyCount: Int
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    public func run() throws -> Result {
        let fm = FileManager.default
        let dataDir = self.dataDir.isEmpty ? name + ".etcd" : self.dataDir
        guard fm.fileExists(atPath: snapshotPath) else { throw Failure("stat \(snapshotPath): no such file or directory") }
        if fm.fileExists(atPath: dataDir) { throw Failure("data-dir \"\(dataDir)\" exists") }
        if !walDir.isEmpty, fm.fileExists(atPath: walDir) { throw Failure("wal-dir \"\(walDir)\" exists") }

        // The new membership, as a new cluster derives it.
        var config = ServerConfig(name: name, dataDir: dataDir)
        config.initialClusterToken = initialClusterToken
        config.initialAdvertisePeerURLs = initialAdvertisePeerURLs.split(separator: ",").map(String.init)
        config.initialCluster = try Self.parseInitialCluster(initialCluster)
        let members = config.initialMembers
        guard let me = members.first(where: { $0.name == name }) else {
            throw Failure("couldn't find local name \"\(name)\" in the initial cluster configuration")
        }
        guard Set(me.peerURLs) == Set(config.initialAdvertisePeerURLs) else {
            throw Failure("--initial-cluster has \(name)=\(me.peerURLs.joined(separator: ",")) but missing from --initial-advertise-peer-urls=\(config.initialAdvertisePeerURLs.joined(separator: ","))")
        }
        guard Set(members.map(\.id)).count == members.count else {
            throw Failure("member count is unequal")
        }
        let clusterID = MemberIdentity.clusterID(memberIDs: members.map(\.id))

        // The hash is checked on a thread of its own while the copy runs;
        // its verdict is awaited before anything is moved into place, and a
        // file that fails both reports the hash (as etcd, which checks it
        // first).
        let hash = try HashCheck.start(path: snapshotPath, skip: skipHashCheck)
        defer { _ = hash?.wait() }
        func hashFailureOr(_ error: any Error) -> any Error { hash?.wait() ?? error }
        let reader: BboltReader
        do { reader = try BboltReader(path: snapshotPath) } catch { throw hashFailureOr(Failure("\(error)")) }

        // Build beside the targets, move into place at the end.
        let suffix = ".restoring-\(getpid())"
        let stagingData = dataDir + suffix
        let stagingWAL = walDir.isEmpty ? nil : walDir + suffix
        try? fm.removeItem(atPath: stagingData)
        if let stagingWAL { try? fm.removeItem(atPath: stagingWAL) }
        var staged = ServerConfig(name: name, dataDir: stagingData)
        staged.dedicatedWALDir = stagingWAL
        do {
            let keys = try Self.writeBackend(from: reader, to: staged, members: members, bumpRevision: bumpRevision)
            try Self.writeWAL(staged, memberID: me.id, clusterID: clusterID, voters: members.map(\.id).sorted())
            if let failure = hash?.wait() { throw failure }
            if let stagingWAL {
                try fm.createDirectory(atPath: URL(fileURLWithPath: walDir).deletingLastPathComponent().path, withIntermediateDirectories: true)
                try fm.moveItem(atPath: stagingWAL, toPath: walDir)
            }
            try fm.moveItem(atPath: stagingData, toPath: dataDir)
            try? Backend.fsyncDirectory(of: dataDir)
            return Result(dataDir: dataDir, memberID: me.id, clusterID: clusterID, keyCount: keys)
        } catch {
            try? fm.removeItem(atPath: stagingData)
            if let stagingWAL { try? fm.removeItem(atPath: stagingWAL) }
            let error = hashFailureOr(error)
            if let failure = error as? Failure { throw failure }
            throw Failure("\(error)")
        }
    }

    static func parseInitialCluster(_ text: String) throws -> [(name: String, peerURLs: [String])] {
        var order: [String] = []
        var urls: [String: [String]] = [:]
        for item in text.split(separator: ",") {
            let parts = item.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw Failure("failed to parse initial cluster: \(item) is not name=URL")
            }
            let name = String(parts[0])
            if urls[name] == nil { order.append(name) }
            urls[name, default: []].append(String(parts[1]))
        }
        guard !order.isEmpty else { throw Failure("--initial-cluster is empty") }
        return order.map { ($0, urls[$0]!) }
    }

    /// Copies every bucket into a new LMDB backend, replaces the membership
    /// and sets the consistent index to the bootstrap snapshot's (1).
    private static func writeBackend(from reader: BboltReader, to config: ServerConfig, members: [MemberRecord],
                                     bumpRevision: UInt64) throws -> Int {
        try FileManager.default.createDirectory(atPath: config.snapDir, withIntermediateDirectories: true)
        let backend = try Backend(path: config.backendPath, config: loadingConfig(for: reader, quotaBytes: config.quotaBackendBytes))
        do {
            let copied = try copyBuckets(from: reader, into: backend, skipping: [.members, .membersRemoved])
            if bumpRevision > 0 {
                // Our store continues from the highest of the last key
                // revision and the compaction marks, so the marks alone
                // carry the bump (etcd also writes an empty entry at the new
                // revision for its own store's sake).
                guard bumpRevision <= UInt64(Int64.max - copied.latestRevision) else {
                    throw Failure("--bump-revision \(bumpRevision) overflows the revision")
                }
                let mark = RevisionKey.encode(Revision(main: copied.latestRevision + Int64(bumpRevision)))
                try backend.put(.meta, key: MetaKey.scheduledCompactRevision, value: mark)
                try backend.put(.meta, key: MetaKey.finishedCompactRevision, value: mark)
            }
            let table = MembershipTable()
            for record in members { try table.save(record, to: backend) }
            // The new cluster's configuration, as the WAL's snapshot marker has it.
            try backend.put(.meta, key: MetaKey.confState,
                            value: RaftLoop.confStateJSON(Raft.ConfState(voters: members.map(\.id).sorted())))
            try backend.setConsistentIndex(1, term: 1)
            // The load committed without flushing: one flush of everything.
            try backend.sync()
            try backend.close()
            return copied.keys
        } catch {
            backend.abandon()
            throw error
        }
    }

    /// A backend to load `reader`'s data into: the map reserved up front
    /// for twice the bbolt file (or the quota, if more), so it need not grow
    /// during the load, and commits that do not flush (`Backend.load`): the
    /// caller `sync()`s once at the end.
    static func loadingConfig(for reader: BboltReader, quotaBytes: Int) -> BackendConfig {
        let limit = Bootstrap.backendLimitBytes(quotaBytes: max(quotaBytes, 2 * reader.databaseBytes))
        return BackendConfig(initialMapSizeBytes: limit, quotaBytes: limit, syncMode: .noSync)
    }

    /// Puts every pair of every bucket of an etcd snapshot (except those in
    /// `skipping`) into `backend` (`Backend.load`: bbolt's buckets come in
    /// key order, so the pairs are appended); an unknown
    /// bucket or a `key` entry that is not a revision is an error. Returns
    /// the pairs copied and the last revision in the `key` bucket. Writer
    /// thread of `backend`.
    public static func copyBuckets(from reader: BboltReader, into backend: Backend,
                                   skipping: Set<Bucket> = []) throws -> (keys: Int, latestRevision: Int64) {
        let known = Dictionary(uniqueKeysWithValues: Bucket.allCases.map { ($0.nameBytes, $0) })
        let buckets = try reader.buckets()
        for bucket in buckets where known[bucket.name] == nil {
            throw Failure("\(reader.path): unknown bucket \"\(bucket.nameString)\" (not one of etcd's)")
        }
        var keys = 0
        var latest: Int64 = 0
        try backend.load { loader in
            for bucket in buckets {
                let target = known[bucket.name]!
                if skipping.contains(target) { continue }
                try reader.forEach(in: bucket) { key, value in
                    if target == .key {
                        guard let decoded = RevisionKey.decode(key) else {
                            throw Failure("\(reader.path): bucket \"key\" holds a \(key.count)-byte key, not a revision")
                        }
                        latest = decoded.revision.main
                    }
                    try loader.put(target, key: key, value: value)
                }
            }
            keys = loader.count
        }
        return (keys, latest)
    }

    /// The WAL of a new cluster's member: its ids, and the initial
    /// configuration as raft's snapshot marker at index 1, term 1.
    private static func writeWAL(_ config: ServerConfig, memberID: UInt64, clusterID: UInt64, voters: [UInt64]) throws {
        try FileManager.default.createDirectory(atPath: URL(fileURLWithPath: config.walDir).deletingLastPathComponent().path,
                                                withIntermediateDirectories: true)
        var metadata = Etcdserverpb_Metadata()
        metadata.nodeID = memberID
        metadata.clusterID = clusterID
        let wal = try WAL.create(dir: config.walDir, metadata: try metadata.serializedData())
        defer { wal.close() }
        try wal.saveSnapshot(WALSnapshot(index: 1, term: 1, confState: Raftpb_ConfState(Raft.ConfState(voters: voters))))
        try wal.save(hardState: Raftpb_HardState(Raft.HardState(term: 1, vote: 0, commit: 1)), entries: [], mustSync: true)
    }
}

/// etcd's snapshot hash check, on a thread of its own: a file whose size is
/// 32 past a multiple of 512 ends with the SHA-256 of what precedes it.
/// `start` decides at once whether there is a hash to check (a file without
/// one is refused unless the check is skipped); `wait` returns the verdict.
final class HashCheck: @unchecked Sendable {
    private let path: String
    private let hashedBytes: Int
    private let done = DispatchSemaphore(value: 0)
    /// Written by the thread before it signals `done`, read after.
    private var failure: SnapshotRestore.Failure?
    private var finished = false
    /// Bytes read per `pread`.
    static let chunkBytes = 4 << 20

    /// The running check, or nil when skipped.
    static func start(path: String, skip: Bool) throws -> HashCheck? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SnapshotRestore.Failure("open \(path): permission denied") }
        var info = stat()
        let size = fstat(fd, &info) == 0 ? Int(info.st_size) : 0
        close(fd)
        if skip { return nil }
        guard size % 512 == SHA256.byteCount else {
            throw SnapshotRestore.Failure("snapshot missing hash but --skip-hash-check=false")
        }
        let check = HashCheck(path: path, hashedBytes: size - SHA256.byteCount)
        let thread = Thread { check.run() }
        thread.name = "snapshot-hash"
        thread.start()
        return check
    }

    private init(path: String, hashedBytes: Int) {
        self.path = path
        self.hashedBytes = hashedBytes
    }

    /// Waits for the check; nil when the hash matched. Any number of calls.
    func wait() -> SnapshotRestore.Failure? {
        if !finished {
            done.wait()
            finished = true
        }
        return failure
    }

    private func run() {
        defer { done.signal() }
        do { try check() } catch { failure = error as? SnapshotRestore.Failure ?? SnapshotRestore.Failure("\(error)") }
    }

    private func check() throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SnapshotRestore.Failure("open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_SEQUENTIAL))
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.chunkBytes, alignment: 16)
        defer { buffer.deallocate() }
        var sha = SHA256()
        var offset = 0
        while offset < hashedBytes {
            let n = try readFully(fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<min(buffer.count, hashedBytes - offset)]), at: offset)
            sha.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            offset += n
        }
        let stored = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<SHA256.byteCount])
        _ = try readFully(fd, into: stored, at: hashedBytes)
        let computed = Array(sha.finalize())
        guard Array(stored) == computed else {
            func goBytes(_ bytes: [UInt8]) -> String { "[" + bytes.map(String.init).joined(separator: " ") + "]" }
            throw SnapshotRestore.Failure("expected sha256 \(goBytes(Array(stored))), got \(goBytes(computed))")
        }
    }

    /// Fills `buffer` from `offset`; a file that ends first is an error.
    private func readFully(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0, errno == EINTR { continue }
            if n < 0 { throw SnapshotRestore.Failure("read \(path): \(String(cString: strerror(errno)))") }
            if n == 0 { throw SnapshotRestore.Failure("\(path): truncated while hashing") }
            done += n
        }
        return done
    }
}
