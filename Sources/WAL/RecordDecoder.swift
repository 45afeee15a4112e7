import Checksum
/// Reads the records of consecutive segments, checking framing and the
/// running CRC, and tells a torn tail apart from corruption.
///
/// What counts as a torn tail (only ever in the last segment, whose tail may
/// hold a write that a crash interrupted): a failing record whose bytes run
/// past the end of the file (the file was cut short), or whose payload ends
/// inside the zero-filled remainder of the file (the preallocated space the
/// write never reached). Everything else that fails — bad bytes followed by
/// more data, any failure in an earlier segment, a record that checks out
/// but cannot be parsed — is corruption and is reported with file and
/// offset, never skipped.
///
/// A zero length word marks the end of a segment's records (the rest of a
/// preallocated file); non-zero bytes after it are corruption.
struct RecordDecoder {
    /// The running CRC after the last valid record. Zero until the first
    /// CRC record is read, which then seeds it (a reader may start in the
    /// middle of the log).
    private(set) var crc: UInt32 = 0

    /// How a segment's scan ended.
    struct SegmentEnd {
        /// Offset just past the last valid record (including its padding).
        var validBytes: Int
        /// True if a torn write was found after `validBytes`.
        var torn: Bool
    }

    /// Scans one segment, calling `body` with each valid record and its
    /// offset. `isLast` allows a torn tail.
    mutating func scan(
        _ segment: [UInt8],
        file: String,
        isLast: Bool,
        _ body: (DecodedRecord, UnsafeRawBufferPointer, Int) throws(WALError) -> Void
    ) throws(WALError) -> SegmentEnd {
        try segment.withBytes { bytes throws(WALError) in
            try scan(bytes, file: file, isLast: isLast, body)
        }
    }

    private mutating func scan(
        _ bytes: UnsafeRawBufferPointer,
        file: String,
        isLast: Bool,
        _ body: (DecodedRecord, UnsafeRawBufferPointer, Int) throws(WALError) -> Void
    ) throws(WALError) -> SegmentEnd {
        let count = bytes.count
        var offset = 0
        func corrupt(_ reason: String) -> WALError {
            .corruptRecord(file: file, offset: Int64(offset), reason: reason)
        }
        while offset < count {
            guard count - offset >= frameLengthBytes else {
                // A partial length word: the file was cut mid-write.
                if allZero(bytes, from: offset) { return SegmentEnd(validBytes: offset, torn: false) }
                if isLast { return SegmentEnd(validBytes: offset, torn: true) }
                throw corrupt("truncated length word")
            }
            let word = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
            if word == 0 {
                guard allZero(bytes, from: offset) else {
                    throw corrupt("zero length word followed by non-zero bytes")
                }
                return SegmentEnd(validBytes: offset, torn: false)
            }
            let (payloadBytes, padding) = WireFormat.decodeLengthWord(word)
            guard payloadBytes <= UInt64(WAL.maxRecordBytes) else {
                throw corrupt("record length \(payloadBytes) exceeds the limit")
            }
            let payloadStart = offset + frameLengthBytes
            let payloadEnd = payloadStart + Int(payloadBytes)
            if payloadEnd > count {
                if isLast { return SegmentEnd(validBytes: offset, torn: true) }
                throw corrupt("record runs past the end of the file")
            }
            // A torn tail: the record's payload ends inside the zero-filled
            // rest of the last segment.
            let tornHere = isLast && allZero(bytes, from: payloadEnd - 1)

            guard let record = WireFormat.decodeRecord(bytes, payloadStart..<payloadEnd) else {
                if tornHere { return SegmentEnd(validBytes: offset, torn: true) }
                throw corrupt("record is not a valid walpb.Record")
            }
            if record.type == WALRecordType.crc.rawValue {
                // A fresh decoder has nothing to compare with; it adopts the
                // value and verifies from here on.
                if crc != 0 && record.crc != crc {
                    if tornHere { return SegmentEnd(validBytes: offset, torn: true) }
                    throw WALError.crcMismatch(file: file, offset: Int64(offset))
                }
                crc = record.crc
            } else {
                let updated = CRC32C.update(crc, UnsafeRawBufferPointer(rebasing: bytes[record.data]))
                guard updated == record.crc else {
                    if tornHere { return SegmentEnd(validBytes: offset, torn: true) }
                    throw WALError.crcMismatch(file: file, offset: Int64(offset))
                }
                crc = updated
            }
            try body(record, bytes, offset)
            // Missing padding at the very end of a file is harmless: padding
            // is zeros by definition.
            offset = payloadEnd + padding
        }
        return SegmentEnd(validBytes: offset, torn: false)
    }
}

/// True if `bytes[from...]` is all zeros.
func allZero(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Bool {
    var i = max(start, 0)
    let count = bytes.count
    while i < count && i % 8 != 0 {
        if bytes[i] != 0 { return false }
        i += 1
    }
    while count - i >= 8 {
        if bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self) != 0 { return false }
        i += 8
    }
    while i < count {
        if bytes[i] != 0 { return false }
        i += 1
    }
    return true
}
