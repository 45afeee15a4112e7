/// Everything the WAL and the snapshot files can fail with.
///
/// Offsets are byte offsets into the named file, pointing at the start of
/// the record's 8-byte length word, so `hexdump -s <offset>` lands on it.
public enum WALError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A record's checksum does not match the running CRC32C.
    case crcMismatch(file: String, offset: Int64)
    /// A record cannot be decoded (bad framing, unparsable protobuf, unknown
    /// type, data after the end-of-records mark, ...) and it is not a torn
    /// write at the tail of the last segment.
    case corruptRecord(file: String, offset: Int64, reason: String)
    /// No snapshot marker matching the requested snapshot was found.
    case snapshotNotFound(index: UInt64, term: UInt64)
    /// A snapshot marker has the requested index but a different term.
    case snapshotMismatch(index: UInt64, expectedTerm: UInt64, foundTerm: UInt64)
    /// The directory holds no segment at or below the requested snapshot
    /// index, or the segment sequence has a hole.
    case fileNotFound(path: String)
    /// `create` was asked to create a WAL where one already exists.
    case alreadyExists(path: String)
    /// Another process (or another WAL in this one) holds the log's lock.
    case locked(path: String)
    /// Two segments carry different metadata.
    case metadataConflict(file: String, offset: Int64)
    /// An entry's index leaves a hole after the entries read so far.
    case entryGap(file: String, offset: Int64, expectedAtMost: UInt64, found: UInt64)
    /// An entry is larger than a record may be (`WAL.maxRecordBytes`).
    case recordTooLarge(bytes: Int)
    /// A snapshot file is empty, corrupt or fails its checksum.
    case brokenSnapshotFile(path: String, reason: String)
    /// A system call failed; `errno` is the C error number.
    case ioError(operation: String, path: String, errno: Int32)

    public var description: String {
        switch self {
        case let .crcMismatch(file, offset):
            return "wal: crc mismatch in \(file) at offset \(offset)"
        case let .corruptRecord(file, offset, reason):
            return "wal: corrupt record in \(file) at offset \(offset): \(reason)"
        case let .snapshotNotFound(index, term):
            return "wal: snapshot marker (index \(index), term \(term)) not found"
        case let .snapshotMismatch(index, expectedTerm, foundTerm):
            return "wal: snapshot marker at index \(index) has term \(foundTerm), expected \(expectedTerm)"
        case let .fileNotFound(path):
            return "wal: no usable segment file in \(path)"
        case let .alreadyExists(path):
            return "wal: a WAL already exists in \(path)"
        case let .locked(path):
            return "wal: \(path) is locked by another WAL (is another member running on this data dir?)"
        case let .metadataConflict(file, offset):
            return "wal: conflicting metadata in \(file) at offset \(offset)"
        case let .entryGap(file, offset, expectedAtMost, found):
            return "wal: entry \(found) in \(file) at offset \(offset) leaves a gap (expected index <= \(expectedAtMost))"
        case let .recordTooLarge(bytes):
            return "wal: record of \(bytes) bytes exceeds the limit of \(WAL.maxRecordBytes)"
        case let .brokenSnapshotFile(path, reason):
            return "snap: broken snapshot file \(path): \(reason)"
        case let .ioError(operation, path, errno):
            return "wal: \(operation) \(path) failed: \(errnoDescription(errno)) (errno \(errno))"
        }
    }
}
