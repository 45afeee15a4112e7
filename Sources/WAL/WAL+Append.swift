import EtcdProto
import Foundation

// Appending: batches with group commit, snapshot markers, segment cuts and
// release of old segments.
extension WAL {
    /// Appends `entries`, then `hardState` (unless empty), in one write, and
    /// fsyncs once at the end if `mustSync` (group commit). When the current
    /// segment fills up, the batch continues in a new segment.
    ///
    /// A no-op for an empty hard state with no entries.
    public func save(hardState: Raftpb_HardState, entries: [Raftpb_Entry], mustSync: Bool) throws(WALError) {
        try checkAppending()
        let stateIsEmpty = hardState.isEmptyState
        if stateIsEmpty && entries.isEmpty { return }
        // Reject oversized entries before anything is written; the log
        // stays usable.
        for entry in entries {
            let entryBytes = RecordEncoder.entryBytes(entry)
            if entryBytes > WAL.maxEntryBytes { throw .recordTooLarge(bytes: entryBytes) }
        }
        do throws(WALError) {
            for entry in entries {
                try makeRoom(forDataBytes: RecordEncoder.entryBytes(entry))
                encoder.appendEntry(entry)
                lastIndex = entry.index
                if encoder.bytes.count >= WAL.maxBufferedBytes { try flush() }
            }
            if !stateIsEmpty {
                let state = hardState.encoded
                try makeRoom(forDataBytes: state.count)
                encoder.append(.state, data: state)
                self.hardState = hardState
            }
            try flush()
            if mustSync { try syncTail() }
        } catch {
            failure = error
            throw error
        }
    }

    /// Appends a snapshot marker and fsyncs it. Markers let `open(dir:at:)`
    /// start reading at a snapshot.
    public func saveSnapshot(_ snapshot: WALSnapshot) throws(WALError) {
        try checkAppending()
        do throws(WALError) {
            let marker = snapshot.encoded
            try makeRoom(forDataBytes: marker.count)
            encoder.append(.snapshot, data: marker)
            lastIndex = max(lastIndex, snapshot.index)
            try flush()
            try syncTail()
        } catch {
            failure = error
            throw error
        }
    }

    /// Writes out buffered records and fsyncs the current segment.
    public func sync() throws(WALError) {
        try checkAppending()
        do throws(WALError) {
            try flush()
            try syncTail()
        } catch {
            failure = error
            throw error
        }
    }

    /// Deletes the segments wholly below raft index `index` (normally the
    /// index of the snapshot just saved): every segment before the one that
    /// `open(dir:at:)` would start reading for a snapshot at `index`. The
    /// segment containing `index` and all later ones are kept.
    public func release(below index: UInt64) throws(WALError) {
        try checkAppending()
        let all = SegmentName.segments(in: try fs.contentsOfDirectory(atPath: directory))
        guard let keep = all.lastIndex(where: { $0.index <= index }), keep > 0 else { return }
        for segment in all[..<keep] where segment.sequence < tailName.sequence {
            try fs.removeItem(atPath: joinPath(directory, segment.fileName))
        }
        try fs.syncDirectory(atPath: directory)
    }

    private func checkAppending() throws(WALError) {
        guard case .appending = phase else {
            preconditionFailure("WAL is not open for appending (call readAll() after open; do not use after close)")
        }
        if let failure { throw failure }
    }

    /// Cuts to a new segment first if a record with `dataBytes` of data
    /// would not fit in the current one. A segment that holds nothing but
    /// its header takes the record anyway (it may be larger than a segment).
    private func makeRoom(forDataBytes dataBytes: Int) throws(WALError) {
        let end = tailOffset + Int64(encoder.bytes.count) + Int64(RecordEncoder.maxFrameBytes(dataBytes: dataBytes))
        let hasRecords = tailOffset + Int64(encoder.bytes.count) > tailHeaderEnd
        if end > segmentSizeBytes && hasRecords { try cut() }
    }

    /// Writes the buffered frames at the tail.
    func flush() throws(WALError) {
        guard !encoder.bytes.isEmpty, let tail else { return }
        try encoder.bytes.withBytes { buffer throws(WALError) in
            try tail.write(buffer, at: tailOffset)
        }
        tailOffset += Int64(encoder.bytes.count)
        writtenBytes += Int64(encoder.bytes.count)
        encoder.removeAll()
    }

    private func syncTail() throws(WALError) {
        guard let tail else { return }
        guard let onSync else { return try tail.sync() }
        let start = ContinuousClock.now
        try tail.sync()
        onSync(ContinuousClock.now - start)
    }

    /// Closes the current segment and starts the next one:
    /// 1. flush, trim the preallocated rest, fsync the old segment — it must
    ///    be complete on disk before a later segment can exist;
    /// 2. build the new segment's header (CRC, metadata, hard state) in a
    ///    temp file in the directory and fsync it;
    /// 3. rename it into place and fsync the directory.
    /// A crash before 3 leaves the temp file, which is ignored and reused.
    private func cut() throws(WALError) {
        guard let old = tail else { return }
        try flush()
        try old.truncate(toSize: tailOffset)
        try old.sync()

        let next = SegmentName(sequence: tailName.sequence + 1, index: lastIndex + 1)
        let tempPath = joinPath(directory, WAL.segmentTempName)
        let file = try fs.openFile(atPath: tempPath, mode: .createTruncate)
        old.close()
        tail = file
        tailName = next
        tailOffset = 0
        try file.preallocate(toSize: segmentSizeBytes)
        encoder.appendCRCRecord()
        encoder.append(.metadata, data: metadata)
        if !hardState.isEmptyState { encoder.append(.state, data: hardState.encoded) }
        try flush()
        tailHeaderEnd = tailOffset
        try file.sync()
        try fs.rename(atPath: tempPath, toPath: joinPath(directory, next.fileName))
        try fs.syncDirectory(atPath: directory)
    }
}

extension Raftpb_HardState {
    /// True for the zero hard state, which raft reports when nothing changed.
    var isEmptyState: Bool { term == 0 && vote == 0 && commit == 0 }

    /// A copy with every field marked present, so all three are encoded
    /// even when zero, matching etcd's encoding.
    var fullyPresent: Raftpb_HardState {
        var copy = self
        copy.term = term
        copy.vote = vote
        copy.commit = commit
        return copy
    }

    /// The protobuf encoding of `fullyPresent`.
    var encoded: [UInt8] {
        // Generated messages without required fields always encode.
        (try? fullyPresent.serializedBytes()) ?? []
    }
}
