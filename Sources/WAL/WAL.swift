import EtcdProto
import Foundation

/// A segmented write-ahead log in one directory (the server's `member/wal`).
///
/// The directory holds segment files `%016x-%016x.wal` (sequence, index of
/// the first entry expected in the segment), each preallocated to
/// `segmentSizeBytes`. A segment starts with a CRC record carrying the
/// running checksum, then the metadata record, then either the initial
/// snapshot marker (first segment) or the last hard state (later segments),
/// followed by entry, hard-state and snapshot-marker records in write order.
///
/// Life cycle: `create` a new log, or `open` an existing one at a snapshot
/// and call `readAll()` once; after that the log is positioned for appends
/// (`save`, `saveSnapshot`), old segments can be dropped with `release`, and
/// `close` ends it.
///
/// Not thread-safe: one owner (the raft loop) drives it.
public final class WAL {
    /// Default segment size: 64 MiB.
    public static let defaultSegmentSizeBytes: Int64 = 64 * 1024 * 1024
    /// The largest record a segment may hold (etcd's decoder limit too).
    public static let maxRecordBytes = 10 * 1024 * 1024
    /// The largest encoded entry `save` accepts: what fits in a record
    /// after the record's own fields (type, crc, data tag and length).
    public static let maxEntryBytes = maxRecordBytes - 16
    /// Encoded bytes buffered within one `save` before they are written out.
    static let maxBufferedBytes = 1024 * 1024

    /// Name of the file a new segment is prepared in before it is renamed
    /// into place. Not a segment name, so readers ignore it.
    static let segmentTempName = "segment.wal.tmp"

    public let directory: String
    public let segmentSizeBytes: Int64
    let fs: any WALFileSystem

    enum Phase {
        /// Opened at `start`, waiting for `readAll` to read `segments`.
        case opened(start: WALSnapshot, segments: [SegmentName])
        case appending
        case closed
    }

    var phase: Phase
    /// Metadata written at the head of every segment.
    var metadata: [UInt8] = []
    /// The last hard state saved, repeated at the head of each new segment.
    var hardState = Raftpb_HardState()
    /// Index of the last entry written (or the last snapshot marker's index
    /// if larger); names the next segment.
    var lastIndex: UInt64 = 0

    // Appending state (valid in `.appending`).
    var encoder = RecordEncoder(crc: 0)
    var tail: (any WALFileHandle)?
    var tailName = SegmentName(sequence: 0, index: 0)
    /// File offset at which `encoder.bytes` will be written.
    var tailOffset: Int64 = 0
    /// Offset just past the current segment's header records.
    var tailHeaderEnd: Int64 = 0
    /// The directory lock, held while the log is open for appending.
    var lock: (any WALDirectoryLock)?
    /// Set by the first failed write or sync: after that the state of the
    /// file is unknown and every further write fails with the same error.
    var failure: WALError?
    /// Told how long each fsync of a segment took (the member's metrics);
    /// called on the appending thread.
    public var onSync: ((Duration) -> Void)?
    /// Bytes written to segments since this log was opened for appending.
    public internal(set) var writtenBytes: Int64 = 0

    private init(directory: String, segmentSizeBytes: Int64, fs: any WALFileSystem, phase: Phase) {
        precondition(segmentSizeBytes > 0, "segment size must be positive")
        self.directory = directory
        self.segmentSizeBytes = segmentSizeBytes
        self.fs = fs
        self.phase = phase
    }

    deinit {
        tail?.close()
        lock?.release()
    }

    // MARK: create and open

    /// True if `directory` holds at least one segment file.
    public static func exists(in directory: String, fs: any WALFileSystem = PosixFileSystem()) -> Bool {
        guard let names = try? fs.contentsOfDirectory(atPath: directory) else { return false }
        return !SegmentName.segments(in: names).isEmpty
    }

    /// Creates a new log in `directory` with `metadata` at the head of every
    /// segment, ready for appends.
    ///
    /// The first segment is built in `<directory>.tmp` and the directory is
    /// renamed into place, so a crash leaves either no log or a complete one.
    /// Anything else in `directory` is replaced (as etcd does).
    public static func create(
        dir directory: String,
        metadata: Data,
        segmentSizeBytes: Int64 = WAL.defaultSegmentSizeBytes,
        fs: any WALFileSystem = PosixFileSystem()
    ) throws(WALError) -> WAL {
        if exists(in: directory, fs: fs) { throw .alreadyExists(path: directory) }
        let cleanDirectory = directory.count > 1 && directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        let tempDirectory = cleanDirectory + ".tmp"
        if fs.fileExists(atPath: tempDirectory) { try fs.removeItem(atPath: tempDirectory) }
        try fs.createDirectory(atPath: tempDirectory)

        let first = SegmentName(sequence: 0, index: 0)
        let file = try fs.openFile(atPath: joinPath(tempDirectory, first.fileName), mode: .createTruncate)
        let wal = WAL(directory: cleanDirectory, segmentSizeBytes: segmentSizeBytes, fs: fs, phase: .appending)
        wal.metadata = Array(metadata)
        wal.tail = file
        wal.tailName = first
        do throws(WALError) {
            try file.preallocate(toSize: segmentSizeBytes)
            wal.encoder.appendCRCRecord()
            wal.encoder.append(.metadata, data: wal.metadata)
            wal.encoder.append(.snapshot, data: WALSnapshot().encoded)
            try wal.flush()
            wal.tailHeaderEnd = wal.tailOffset
            try file.sync()
            try fs.syncDirectory(atPath: tempDirectory)

            if fs.fileExists(atPath: cleanDirectory) { try fs.removeItem(atPath: cleanDirectory) }
            try fs.rename(atPath: tempDirectory, toPath: cleanDirectory)
            try fs.syncDirectory(atPath: parentDirectory(of: cleanDirectory))
            wal.lock = try fs.lockDirectory(atPath: cleanDirectory)
        } catch {
            wal.failure = error
            wal.close()
            throw error
        }
        return wal
    }

    /// Opens the log in `directory` for reading from the snapshot marker
    /// `snapshot` (use `WALSnapshot()` for a log without snapshots) and
    /// locks it until `close`. Call `readAll()` next; it also positions the
    /// log for appends.
    public static func open(
        dir directory: String,
        at snapshot: WALSnapshot,
        segmentSizeBytes: Int64 = WAL.defaultSegmentSizeBytes,
        fs: any WALFileSystem = PosixFileSystem()
    ) throws(WALError) -> WAL {
        let segments = try selectSegments(in: directory, from: snapshot.index, fs: fs)
        let wal = WAL(
            directory: directory,
            segmentSizeBytes: segmentSizeBytes,
            fs: fs,
            phase: .opened(start: snapshot, segments: segments)
        )
        wal.lock = try fs.lockDirectory(atPath: directory)
        return wal
    }

    /// The segments to read for a snapshot at `index`: the last one whose
    /// first index is at or below it, and all after it, in an unbroken
    /// sequence.
    static func selectSegments(in directory: String, from index: UInt64, fs: any WALFileSystem) throws(WALError) -> [SegmentName] {
        guard fs.fileExists(atPath: directory) else { throw .fileNotFound(path: directory) }
        let all = SegmentName.segments(in: try fs.contentsOfDirectory(atPath: directory))
        guard let first = all.lastIndex(where: { $0.index <= index }) else {
            throw .fileNotFound(path: directory)
        }
        let selected = Array(all[first...])
        for (previous, next) in zip(selected, selected.dropFirst()) where next.sequence != previous.sequence + 1 {
            throw .fileNotFound(path: joinPath(directory, hex16(previous.sequence + 1) + "-*.wal"))
        }
        return selected
    }

    /// Writes out and fsyncs anything pending (best effort: call `sync()`
    /// first to see errors), then closes the files. Safe to call more than
    /// once.
    public func close() {
        if case .appending = phase, failure == nil {
            try? flush()
            try? tail?.sync()
        }
        tail?.close()
        tail = nil
        lock?.release()
        lock = nil
        phase = .closed
    }
}

@available(*, unavailable, message: "a WAL has a single owner (the raft loop)")
extension WAL: Sendable {}
