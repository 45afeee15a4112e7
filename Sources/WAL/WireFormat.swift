import Checksum
import EtcdProto
import Foundation

// The on-disk framing, shared with etcd so its tools can read our logs:
//
//   +---------------------------+---------------------------+---------+
//   | length word (8 bytes, LE) | walpb.Record (protobuf)   | padding |
//   +---------------------------+---------------------------+---------+
//
// Each frame is padded with zeros to a multiple of 8 bytes, so a length word
// never straddles a sector and is never torn. The low 56 bits of the length
// word are the record's byte count; when padding is present, the top byte is
// 0x80 | padding count.
//
// walpb.Record is { type = 1 (varint), crc = 2 (varint), data = 3 (bytes) }.
// Its crc is the running CRC32C over the data of every record so far (in this
// and all previous segments); a CRC-type record carries that running value
// and starts each segment, so a segment can be verified on its own.
//
// The hot path (entries) is encoded by hand straight into the batch buffer;
// the rare records (hard state, snapshot markers) are encoded by SwiftProtobuf
// by their callers.

/// Bytes in a frame's length word.
let frameLengthBytes = 8

enum WireFormat {
    static func varintSize(_ value: UInt64) -> Int {
        value == 0 ? 1 : (64 - value.leadingZeroBitCount + 6) / 7
    }

    static func appendVarint(_ value: UInt64, to bytes: inout [UInt8]) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    /// Reads a varint at `position`, advancing it; nil if it runs past `end`
    /// or is longer than ten bytes.
    static func readVarint(_ bytes: UnsafeRawBufferPointer, _ position: inout Int, end: Int) -> UInt64? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while position < end && shift < 64 {
            let byte = bytes[position]
            position += 1
            value |= UInt64(byte & 0x7F) << shift
            if byte < 0x80 { return value }
            shift += 7
        }
        return nil
    }

    /// Skips a field of the given wire type; false if malformed.
    static func skipField(wireType: UInt64, _ bytes: UnsafeRawBufferPointer, _ position: inout Int, end: Int) -> Bool {
        switch wireType {
        case 0:
            return readVarint(bytes, &position, end: end) != nil
        case 1, 5:
            let width = wireType == 1 ? 8 : 4
            guard end - position >= width else { return false }
            position += width
            return true
        case 2:
            guard let length = readVarint(bytes, &position, end: end), length <= UInt64(end - position) else {
                return false
            }
            position += Int(length)
            return true
        default:
            return false  // groups (3, 4) and undefined wire types
        }
    }

    /// The length word for a record of `payloadBytes`, and its padding.
    static func lengthWord(payloadBytes: Int) -> (word: UInt64, padding: Int) {
        let padding = (8 - payloadBytes % 8) % 8
        var word = UInt64(payloadBytes)
        if padding != 0 { word |= UInt64(0x80 | padding) << 56 }
        return (word, padding)
    }

    /// Splits a length word into record bytes and padding bytes.
    static func decodeLengthWord(_ word: UInt64) -> (payloadBytes: UInt64, padding: Int) {
        let payloadBytes = word & 0x00FF_FFFF_FFFF_FFFF
        let padding = word & (1 << 63) != 0 ? Int((word >> 56) & 0x7) : 0
        return (payloadBytes, padding)
    }
}

/// A walpb.Record decoded from a segment; `data` indexes the segment bytes.
struct DecodedRecord {
    var type: Int64
    var crc: UInt32
    var data: Range<Int>
}

extension WireFormat {
    /// Decodes a walpb.Record occupying `range` of `bytes`; nil if it is not
    /// valid protobuf. Missing fields read as zero/empty, as in proto2.
    static func decodeRecord(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> DecodedRecord? {
        var record = DecodedRecord(type: 0, crc: 0, data: range.lowerBound..<range.lowerBound)
        var position = range.lowerBound
        let end = range.upperBound
        while position < end {
            guard let key = readVarint(bytes, &position, end: end), key >> 3 != 0 else { return nil }
            switch (key >> 3, key & 7) {
            case (1, 0):
                guard let value = readVarint(bytes, &position, end: end) else { return nil }
                record.type = Int64(bitPattern: value)
            case (2, 0):
                guard let value = readVarint(bytes, &position, end: end) else { return nil }
                record.crc = UInt32(truncatingIfNeeded: value)
            case (3, 2):
                guard let length = readVarint(bytes, &position, end: end), length <= UInt64(end - position) else {
                    return nil
                }
                record.data = position..<(position + Int(length))
                position += Int(length)
            case let (_, wireType):
                guard skipField(wireType: wireType, bytes, &position, end: end) else { return nil }
            }
        }
        return record
    }

    /// Decodes a raftpb.Entry { type = 1, term = 2, index = 3, data = 4 }
    /// occupying `range` of `bytes`; nil if malformed.
    static func decodeEntry(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Raftpb_Entry? {
        var entry = Raftpb_Entry()
        var position = range.lowerBound
        let end = range.upperBound
        while position < end {
            guard let key = readVarint(bytes, &position, end: end), key >> 3 != 0 else { return nil }
            switch (key >> 3, key & 7) {
            case (1, 0):
                guard let value = readVarint(bytes, &position, end: end),
                      let type = Raftpb_EntryType(rawValue: Int(truncatingIfNeeded: value))
                else { return nil }
                entry.type = type
            case (2, 0):
                guard let value = readVarint(bytes, &position, end: end) else { return nil }
                entry.term = value
            case (3, 0):
                guard let value = readVarint(bytes, &position, end: end) else { return nil }
                entry.index = value
            case (4, 2):
                guard let length = readVarint(bytes, &position, end: end), length <= UInt64(end - position) else {
                    return nil
                }
                entry.data = Data(UnsafeRawBufferPointer(rebasing: bytes[position..<(position + Int(length))]))
                position += Int(length)
            case let (_, wireType):
                guard skipField(wireType: wireType, bytes, &position, end: end) else { return nil }
            }
        }
        return entry
    }
}

/// Builds framed records into one buffer, carrying the running CRC. A batch
/// is encoded here and handed to the file in a single write.
struct RecordEncoder {
    /// The running CRC32C over the data of every record encoded so far.
    private(set) var crc: UInt32
    /// Encoded frames not yet written to the file.
    private(set) var bytes: [UInt8] = []
    /// Reused buffer for the protobuf encoding of one entry.
    private var scratch: [UInt8] = []

    init(crc: UInt32) {
        self.crc = crc
    }

    mutating func removeAll() {
        bytes.removeAll(keepingCapacity: true)
    }

    /// An upper bound on the frame size of a record with `dataBytes` of data.
    static func maxFrameBytes(dataBytes: Int) -> Int {
        // type (tag + 1-byte varint) + crc (tag + at most 5) + data (tag +
        // length varint + data), rounded up to 8, plus the length word.
        let payload = 2 + 6 + 1 + WireFormat.varintSize(UInt64(dataBytes)) + dataBytes
        return frameLengthBytes + (payload + 7) / 8 * 8
    }

    /// Appends the CRC record that opens a segment: no data, carrying the
    /// running CRC so far.
    mutating func appendCRCRecord() {
        appendFrame(type: .crc, data: nil)
    }

    /// Appends a record holding raw `data`.
    mutating func append(_ type: WALRecordType, data: [UInt8]) {
        data.withUnsafeBytes { appendFrame(type: type, data: $0) }
    }

    /// Appends an entry record; the entry is encoded by hand (field order and
    /// presence as etcd's gogoproto encoder: type, term, index, then data if
    /// set) so no intermediate `Data` is built.
    mutating func appendEntry(_ entry: Raftpb_Entry) {
        scratch.removeAll(keepingCapacity: true)
        Self.encodeEntry(entry, into: &scratch)
        scratch.withUnsafeBytes { appendFrame(type: .entry, data: $0) }
    }

    /// Size of an entry's protobuf encoding.
    static func entryBytes(_ entry: Raftpb_Entry) -> Int {
        var size = 1 + WireFormat.varintSize(UInt64(entry.type.rawValue))
            + 1 + WireFormat.varintSize(entry.term)
            + 1 + WireFormat.varintSize(entry.index)
        if entry.hasData {
            size += 1 + WireFormat.varintSize(UInt64(entry.data.count)) + entry.data.count
        }
        return size + entry.unknownFields.data.count
    }

    static func encodeEntry(_ entry: Raftpb_Entry, into bytes: inout [UInt8]) {
        bytes.append(0x08)
        WireFormat.appendVarint(UInt64(entry.type.rawValue), to: &bytes)
        bytes.append(0x10)
        WireFormat.appendVarint(entry.term, to: &bytes)
        bytes.append(0x18)
        WireFormat.appendVarint(entry.index, to: &bytes)
        if entry.hasData {
            let data = entry.data
            bytes.append(0x22)
            WireFormat.appendVarint(UInt64(data.count), to: &bytes)
            bytes.append(contentsOf: data)
        }
        let unknown = entry.unknownFields.data
        if !unknown.isEmpty { bytes.append(contentsOf: unknown) }
    }

    /// Frames one record. For every type but `.crc` the running CRC first
    /// absorbs `data`; the record stores the updated value.
    private mutating func appendFrame(type: WALRecordType, data: UnsafeRawBufferPointer?) {
        if let data, type != .crc { crc = CRC32C.update(crc, data) }
        var payloadBytes = 1 + WireFormat.varintSize(UInt64(type.rawValue)) + 1 + WireFormat.varintSize(UInt64(crc))
        if let data { payloadBytes += 1 + WireFormat.varintSize(UInt64(data.count)) + data.count }
        let (word, padding) = WireFormat.lengthWord(payloadBytes: payloadBytes)

        bytes.reserveCapacity(bytes.count + frameLengthBytes + payloadBytes + padding)
        withUnsafeBytes(of: word.littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(0x08)
        WireFormat.appendVarint(UInt64(type.rawValue), to: &bytes)
        bytes.append(0x10)
        WireFormat.appendVarint(UInt64(crc), to: &bytes)
        if let data {
            bytes.append(0x1A)
            WireFormat.appendVarint(UInt64(data.count), to: &bytes)
            bytes.append(contentsOf: data)
        }
        for _ in 0..<padding { bytes.append(0) }
    }
}
