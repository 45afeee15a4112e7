import EtcdProto
import Foundation
import Testing
@testable import WAL

/// Our reader and writer against a segment written by real etcd.
@Suite struct EtcdCompatibilityTests {
    private let segment = [UInt8](Data(base64Encoded: etcd34SegmentBase64, options: .ignoreUnknownCharacters)!)

    @Test func readsALogWrittenByEtcd() throws {
        try withTemporaryDirectory { temp in
            let dir = temp.walDirectory
            try PosixFileSystem().createDirectory(atPath: dir)
            try writeBytes(segment, to: dir + "/0000000000000000-0000000000000000.wal")

            let wal = try WAL.open(dir: dir, at: WALSnapshot(), segmentSizeBytes: 64 * 1024, fs: noSyncFS)
            let contents = try wal.readAll()
            wal.close()
            let metadata = try Etcdserverpb_Metadata(serializedBytes: contents.metadata)
            #expect(metadata.nodeID != 0 && metadata.clusterID != 0)
            #expect(contents.entries.map(\.index) == Array(1...UInt64(contents.entries.count)))
            #expect(contents.entries.first?.type == .entryConfChange)
            #expect(contents.hardState.commit == contents.entries.last?.index)
            // The five puts are in there.
            let payloads = contents.entries.map(\.data)
            for i in 1...5 {
                #expect(payloads.contains { $0.range(of: Data("value\(i)".utf8)) != nil })
            }
        }
    }

    @Test func reencodesEtcdRecordsByteForByte() throws {
        let frames = try parseFrames(segment)
        #expect(frames.count > 8)
        var encoder = RecordEncoder(crc: 0)
        for frame in frames {
            let record = frame.record
            switch WALRecordType(rawValue: record.type) {
            case .crc:
                encoder.appendCRCRecord()
            case .metadata:
                encoder.append(.metadata, data: [UInt8](record.data))
            case .entry:
                let entry = try #require(record.data.withUnsafeBytes { WireFormat.decodeEntry($0, 0..<record.data.count) })
                encoder.appendEntry(entry)
            case .state:
                encoder.append(.state, data: try Raftpb_HardState(serializedBytes: record.data).encoded)
            case .snapshot:
                encoder.append(.snapshot, data: WALSnapshot(proto: try Walpb_Snapshot(serializedBytes: record.data)).encoded)
            case nil:
                Issue.record("unknown record type \(record.type)")
            }
        }
        #expect(encoder.bytes == Array(segment[..<frames.last!.frameEnd]))
    }
}
