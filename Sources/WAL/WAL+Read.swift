import EtcdProto
import Foundation

// Reading a log after `open`: decoding, repair of a torn tail, and the
// read-only scan for snapshot markers.
extension WAL {
    /// Reads the log from the snapshot given to `open`: the metadata, the
    /// last hard state and the entries after the snapshot index. An entry
    /// rewritten later (a new leader's log replacing a conflicting suffix)
    /// replaces the old entry and everything after it.
    ///
    /// A torn write at the end of the last segment is cut off (and the cut
    /// made durable). Afterwards the log appends after the last valid record.
    /// On error the WAL is closed.
    public func readAll() throws(WALError) -> (metadata: Data, hardState: Raftpb_HardState, entries: [Raftpb_Entry]) {
        guard case let .opened(start, segments) = phase else {
            preconditionFailure("WAL.readAll() must be called exactly once, right after open")
        }
        phase = .closed  // until fully read and repaired
        let read: (contents: LogContents, end: RecordDecoder.SegmentEnd, crc: UInt32)
        do throws(WALError) {
            read = try Self.decode(directory: directory, segments: segments, start: start, fs: fs)
            try prepareTail(segments.last!, validBytes: Int64(read.end.validBytes), torn: read.end.torn)
        } catch {
            close()  // drop the files and the lock; this WAL is done
            throw error
        }
        metadata = read.contents.metadata ?? []
        hardState = read.contents.hardState
        lastIndex = max(read.contents.lastIndex, start.index)
        encoder = RecordEncoder(crc: read.crc)
        phase = .appending
        return (Data(metadata), hardState, read.contents.entries)
    }

    /// Reads a log like `open` + `readAll` but changes nothing on disk (a
    /// torn tail is ignored, not cut off) and leaves no log open: for
    /// offline tools.
    public static func readOnly(
        dir directory: String,
        at snapshot: WALSnapshot,
        fs: any WALFileSystem = PosixFileSystem()
    ) throws(WALError) -> (metadata: Data, hardState: Raftpb_HardState, entries: [Raftpb_Entry]) {
        let segments = try selectSegments(in: directory, from: snapshot.index, fs: fs)
        let read = try decode(directory: directory, segments: segments, start: snapshot, fs: fs)
        return (Data(read.contents.metadata ?? []), read.contents.hardState, read.contents.entries)
    }

    /// Decodes `segments` in order, checking that the snapshot marker
    /// `start` is among them.
    private static func decode(
        directory: String,
        segments: [SegmentName],
        start: WALSnapshot,
        fs: any WALFileSystem
    ) throws(WALError) -> (contents: LogContents, end: RecordDecoder.SegmentEnd, crc: UInt32) {
        var contents = LogContents(start: start)
        var decoder = RecordDecoder()
        var end = RecordDecoder.SegmentEnd(validBytes: 0, torn: false)
        for segment in segments {
            let path = joinPath(directory, segment.fileName)
            let bytes = try fs.readFile(atPath: path)
            end = try decoder.scan(bytes, file: path, isLast: segment == segments.last) { record, buffer, offset throws(WALError) in
                try contents.apply(record, buffer, file: path, offset: Int64(offset))
            }
        }
        guard contents.matchedSnapshot else {
            throw .snapshotNotFound(index: start.index, term: start.term)
        }
        return (contents, end, decoder.crc)
    }

    /// Opens the last segment for appending at `validBytes`; if a torn
    /// write was found, cuts it off, re-extends the file with zeros and
    /// makes the repair durable before anything new is written after it.
    private func prepareTail(_ segment: SegmentName, validBytes: Int64, torn: Bool) throws(WALError) {
        let file = try fs.openFile(atPath: joinPath(directory, segment.fileName), mode: .readWrite)
        tail = file
        tailName = segment
        tailOffset = validBytes
        tailHeaderEnd = 0
        let size = try file.size()
        if torn || size < validBytes {
            try file.truncate(toSize: validBytes)
            try file.preallocate(toSize: max(segmentSizeBytes, validBytes))
            try file.sync()
        } else if size < segmentSizeBytes {
            try file.preallocate(toSize: segmentSizeBytes)
        }
    }
}


/// What `readAll` accumulates while decoding records.
private struct LogContents {
    let start: WALSnapshot
    var metadata: [UInt8]?
    var hardState = Raftpb_HardState()
    var entries: [Raftpb_Entry] = []
    var lastIndex: UInt64 = 0
    var matchedSnapshot = false

    init(start: WALSnapshot) {
        self.start = start
    }

    mutating func apply(_ record: DecodedRecord, _ bytes: UnsafeRawBufferPointer, file: String, offset: Int64) throws(WALError) {
        func corrupt(_ reason: String) -> WALError {
            .corruptRecord(file: file, offset: offset, reason: reason)
        }
        let data = UnsafeRawBufferPointer(rebasing: bytes[record.data])
        switch WALRecordType(rawValue: record.type) {
        case .entry:
            guard let entry = WireFormat.decodeEntry(bytes, record.data) else {
                throw corrupt("entry record does not hold a raftpb.Entry")
            }
            if entry.index > start.index {
                // Entries are stored after the snapshot index: entry i goes
                // to slot i - start - 1, dropping anything after it.
                let slot = entry.index - start.index - 1
                guard slot <= UInt64(entries.count) else {
                    throw .entryGap(file: file, offset: offset, expectedAtMost: start.index + UInt64(entries.count) + 1, found: entry.index)
                }
                entries.removeSubrange(Int(slot)...)
                entries.append(entry)
            }
            lastIndex = entry.index
        case .state:
            guard let state = try? Raftpb_HardState(serializedBytes: Array(data)) else {
                throw corrupt("state record does not hold a raftpb.HardState")
            }
            hardState = state
        case .metadata:
            let value = Array(data)
            if let metadata, metadata != value { throw .metadataConflict(file: file, offset: offset) }
            metadata = value
        case .crc:
            break  // verified by the decoder
        case .snapshot:
            guard let marker = try? Walpb_Snapshot(serializedBytes: Array(data)) else {
                throw corrupt("snapshot record does not hold a walpb.Snapshot")
            }
            if marker.index == start.index {
                guard marker.term == start.term else {
                    throw .snapshotMismatch(index: start.index, expectedTerm: start.term, foundTerm: marker.term)
                }
                matchedSnapshot = true
            }
        case nil:
            throw corrupt("unknown record type \(record.type)")
        }
    }
}

extension WAL {
    /// The snapshot markers in the whole log whose index is at or below the
    /// last hard state's commit index — the snapshots the log can be opened
    /// at. Read-only: a torn tail is tolerated, not repaired.
    public static func validSnapshots(dir directory: String, fs: any WALFileSystem = PosixFileSystem()) throws(WALError) -> [WALSnapshot] {
        let segments = SegmentName.segments(in: try fs.contentsOfDirectory(atPath: directory))
        guard !segments.isEmpty else { throw .fileNotFound(path: directory) }
        var markers: [WALSnapshot] = []
        var state = Raftpb_HardState()
        var decoder = RecordDecoder()
        for segment in segments {
            let path = joinPath(directory, segment.fileName)
            let bytes = try fs.readFile(atPath: path)
            _ = try decoder.scan(bytes, file: path, isLast: segment == segments.last) { record, buffer, offset throws(WALError) in
                let data = Array(UnsafeRawBufferPointer(rebasing: buffer[record.data]))
                switch WALRecordType(rawValue: record.type) {
                case .snapshot:
                    guard let marker = try? Walpb_Snapshot(serializedBytes: data) else {
                        throw .corruptRecord(file: path, offset: Int64(offset), reason: "snapshot record does not hold a walpb.Snapshot")
                    }
                    markers.append(WALSnapshot(proto: marker))
                case .state:
                    guard let decoded = try? Raftpb_HardState(serializedBytes: data) else {
                        throw .corruptRecord(file: path, offset: Int64(offset), reason: "state record does not hold a raftpb.HardState")
                    }
                    state = decoded
                default:
                    break
                }
            }
        }
        return markers.filter { $0.index <= state.commit }
    }
}
