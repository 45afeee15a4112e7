import ArgumentParser
import EtcdProto
import Foundation
import Locks
import WAL

/// `etcd-bench wal`: appends batches of entries to a write-ahead log with one
/// fsync per batch (the raft loop's group commit), then replays the log.
struct WALBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal",
        abstract: "Write-ahead log append (one fsync per batch) and replay throughput."
    )

    @Option(help: "Directory to create the log in (a fresh temp dir if omitted; removed afterwards).")
    var dir: String?

    @Option(help: "Number of batches to append.")
    var batches = 2000

    @Option(help: "Entries per batch.")
    var entriesPerBatch = 100

    @Option(help: "Bytes of data per entry.")
    var entryBytes = 256

    @Option(name: .customLong("segment-mib"), help: "Segment size in MiB.")
    var segmentMiB = 64

    @Flag(help: "Skip the fsync per batch (measures encoding and write(2) only).")
    var noSync = false

    func run() throws {
        let root = dir ?? NSTemporaryDirectory() + "wal-bench-\(getpid())"
        let walDirectory = root + "/member/wal"
        defer { if dir == nil { try? FileManager.default.removeItem(atPath: root) } }

        let fs = SyncCountingFileSystem()
        let wal = try WAL.create(
            dir: walDirectory, metadata: Data("bench".utf8),
            segmentSizeBytes: Int64(segmentMiB) << 20, fs: fs
        )
        var entry = Raftpb_Entry()
        entry.term = 1
        entry.type = .entryNormal
        entry.data = Data((0..<entryBytes).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ 7) })
        var batch = [Raftpb_Entry](repeating: entry, count: entriesPerBatch)
        var state = Raftpb_HardState()
        state.term = 1
        state.vote = 1

        fs.reset()
        let clock = ContinuousClock()
        var index: UInt64 = 0
        let appendTime = try clock.measure {
            for _ in 0..<batches {
                for i in batch.indices {
                    index += 1
                    batch[i].index = index
                }
                state.commit = index
                try wal.save(hardState: state, entries: batch, mustSync: !noSync)
            }
        }
        wal.close()
        let syncs = fs.syncs

        var replayed = 0
        let replayTime = try clock.measure {
            let reopened = try WAL.open(dir: walDirectory, at: WALSnapshot(), segmentSizeBytes: Int64(segmentMiB) << 20)
            replayed = try reopened.readAll().entries.count
            reopened.close()
        }

        let seconds = appendTime.seconds
        let entries = Double(batches * entriesPerBatch)
        let megabytes = entries * Double(entryBytes) / 1_000_000
        print("wal append: \(batches) batches x \(entriesPerBatch) entries x \(entryBytes) B, sync=\(!noSync)")
        print(String(format: "  %.0f entries/s  %.1f MB/s (entry data)  %.0f fsyncs/s  %.3f ms/batch  (%d fsyncs, %.2f s)",
                     entries / seconds, megabytes / seconds, Double(syncs) / seconds,
                     seconds * 1000 / Double(batches), syncs, seconds))
        print(String(format: "wal replay: %d entries in %.3f s  %.0f entries/s  %.1f MB/s",
                     replayed, replayTime.seconds, Double(replayed) / replayTime.seconds,
                     Double(replayed * entryBytes) / 1_000_000 / replayTime.seconds))
    }
}

/// The real file system, counting file and directory fsyncs.
private final class SyncCountingFileSystem: WALFileSystem {
    let base = PosixFileSystem()
    let count = Atomic<Int>(0)

    var syncs: Int { count.load(ordering: .relaxed) }
    func reset() { count.store(0, ordering: .relaxed) }

    func fileExists(atPath path: String) -> Bool { base.fileExists(atPath: path) }
    func createDirectory(atPath path: String) throws(WALError) { try base.createDirectory(atPath: path) }
    func contentsOfDirectory(atPath path: String) throws(WALError) -> [String] {
        try base.contentsOfDirectory(atPath: path)
    }
    func removeItem(atPath path: String) throws(WALError) { try base.removeItem(atPath: path) }
    func rename(atPath source: String, toPath destination: String) throws(WALError) {
        try base.rename(atPath: source, toPath: destination)
    }
    func syncDirectory(atPath path: String) throws(WALError) {
        count.add(1, ordering: .relaxed)
        try base.syncDirectory(atPath: path)
    }
    func readFile(atPath path: String) throws(WALError) -> [UInt8] { try base.readFile(atPath: path) }
    func lockDirectory(atPath path: String) throws(WALError) -> any WALDirectoryLock {
        try base.lockDirectory(atPath: path)
    }
    func openFile(atPath path: String, mode: WALFileOpenMode) throws(WALError) -> any WALFileHandle {
        SyncCountingFile(base: try base.openFile(atPath: path, mode: mode), count: self)
    }
}

private final class SyncCountingFile: WALFileHandle {
    let base: any WALFileHandle
    let owner: SyncCountingFileSystem

    init(base: any WALFileHandle, count owner: SyncCountingFileSystem) {
        self.base = base
        self.owner = owner
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(WALError) {
        try base.write(bytes, at: offset)
    }
    func sync() throws(WALError) {
        owner.count.add(1, ordering: .relaxed)
        try base.sync()
    }
    func truncate(toSize size: Int64) throws(WALError) { try base.truncate(toSize: size) }
    func preallocate(toSize size: Int64) throws(WALError) { try base.preallocate(toSize: size) }
    func size() throws(WALError) -> Int64 { try base.size() }
    func close() { base.close() }
}
