import Checksum
import EtcdProto
import Foundation
import Testing
@testable import WAL

@Suite struct WireFormatTests {
    @Test func lengthWordCarriesPaddingInTopByte() {
        #expect(WireFormat.lengthWord(payloadBytes: 8) == (8, 0))
        let (word, padding) = WireFormat.lengthWord(payloadBytes: 5)
        #expect(padding == 3)
        #expect(word == 0x8300_0000_0000_0005)
        #expect(WireFormat.decodeLengthWord(word) == (5, 3))
        #expect(WireFormat.decodeLengthWord(16) == (16, 0))
    }

    @Test func framesMatchSwiftProtobufEncodingOfWalpbRecord() throws {
        var encoder = RecordEncoder(crc: 0x1234_5678)
        encoder.appendCRCRecord()
        encoder.append(.metadata, data: Array("meta".utf8))
        encoder.appendEntry(makeEntry(index: 9, term: 3, dataBytes: 100))
        encoder.append(.state, data: makeHardState(term: 3, commit: 9).encoded)

        let frames = try parseFrames(encoder.bytes)
        #expect(frames.count == 4)
        #expect(frames.last?.frameEnd == encoder.bytes.count)
        var running: UInt32 = 0x1234_5678
        for frame in frames {
            #expect(frame.frameEnd % 8 == 0)
            var expected = Walpb_Record()
            expected.type = frame.record.type
            if frame.record.type != WALRecordType.crc.rawValue {
                running = CRC32C.update(running, frame.record.data)
                expected.data = frame.record.data
            }
            expected.crc = running
            #expect(frame.record.crc == running)
            let expectedBytes: [UInt8] = try expected.serializedBytes()
            #expect(Array(encoder.bytes[(frame.start + 8)..<frame.payloadEnd]) == expectedBytes)
        }
        #expect(encoder.crc == running)
    }

    @Test func handEncodedEntriesMatchSwiftProtobuf() throws {
        var withData = makeEntry(index: 300, term: 1 << 40, dataBytes: 200)
        withData.type = .entryConfChange
        var withoutData = Raftpb_Entry()
        withoutData.index = 1
        withoutData.term = 0
        withoutData.type = .entryNormal
        for entry in [withData, withoutData] {
            var bytes: [UInt8] = []
            RecordEncoder.encodeEntry(entry, into: &bytes)
            #expect(bytes == (try entry.serializedBytes() as [UInt8]))
            #expect(bytes.count == RecordEncoder.entryBytes(entry))
            let decoded = bytes.withUnsafeBytes { WireFormat.decodeEntry($0, 0..<bytes.count) }
            #expect(decoded.map { sameEntries([$0], [entry]) } == true)
        }
    }

    @Test func decodersNeverCrashOnRandomBytes() {
        var generator = SplitMix64(seed: 99)
        for length in 0..<2000 {
            let bytes = (0..<(length % 64)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            bytes.withUnsafeBytes { buffer in
                _ = WireFormat.decodeRecord(buffer, 0..<buffer.count)
                _ = WireFormat.decodeEntry(buffer, 0..<buffer.count)
            }
        }
    }

    @Test func segmentNamesRoundTrip() {
        let name = SegmentName(sequence: 0x1a, index: 0xdeadbeef)
        #expect(name.fileName == "000000000000001a-00000000deadbeef.wal")
        #expect(SegmentName(fileName: name.fileName) == name)
        #expect(SegmentName(fileName: "0000000000000001-0000000000000002.wal.broken") == nil)
        #expect(SegmentName(fileName: "segment.wal.tmp") == nil)
        #expect(SegmentName(fileName: "000000000000000g-0000000000000002.wal") == nil)
        #expect(parentDirectory(of: "/a/b/wal/") == "/a/b")
        #expect(parentDirectory(of: "wal") == ".")
    }
}
