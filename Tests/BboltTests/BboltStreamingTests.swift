import Bbolt
import Foundation
import Testing

/// The measuring and streaming writers: the layout pass predicts the file
/// exactly, and the stream is the file-mode writer's file, byte for byte, in
/// blocks from page 0 on.
struct BboltStreamingTests {
    /// A bucket of thousands of leaves (two branch levels) with nodes larger
    /// than a block (overflow pages), an empty bucket and a small one.
    static let buckets: [(String, [([UInt8], [UInt8])])] = {
        var key: [([UInt8], [UInt8])] = (1...20_000).map { (revisionKey(UInt64($0)), Array("value-\($0)".utf8)) }
        key.insert((revisionKey(10_000, 1), [UInt8](repeating: 0xCD, count: 20_000)), at: 10_000)
        key.append((revisionKey(30_000), [UInt8](repeating: 0xAB, count: 50_000)))
        return [("alarm", []), ("key", key), ("meta", [(Array("consistent_index".utf8), [0, 0, 0, 0, 0, 0, 0, 9])])]
    }()

    static func feed(_ buckets: [(String, [([UInt8], [UInt8])])], to writer: BboltWriter) throws {
        for (name, pairs) in buckets {
            try writer.beginBucket(Array(name.utf8))
            for (key, value) in pairs { try writer.put(key: key, value: value) }
            try writer.endBucket()
        }
    }

    @Test func streamsTheFileModeBytesInBlocksAfterAMeasuringPass() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/db"
        let summary = try write(Self.buckets, to: path)
        let file = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))

        let measuring = try BboltWriter.measuring()
        try Self.feed(Self.buckets, to: measuring)
        let planned = try measuring.finish()
        #expect(planned == summary)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["db"])

        // Blocks of three pages (every large node spans blocks), five, and the default.
        for blockBytes in [3 * 4096, 5 * 4096, BboltWriter.defaultBlockBytes] {
            var blocks: [[UInt8]] = []
            let writer = try BboltWriter(streaming: planned, blockBytes: blockBytes) { blocks.append(Array($0.bytes)) }
            try Self.feed(Self.buckets, to: writer)
            #expect(try writer.finish() == summary)
            #expect(blocks.dropLast().allSatisfy { $0.count == blockBytes })
            #expect((1...blockBytes).contains(blocks.last?.count ?? 0))
            let same = Array(blocks.joined()) == file  // (not in #expect: it would print both files)
            #expect(same, "block size \(blockBytes)")
        }
    }

    @Test func aStreamWhoseInputDiffersFromItsLayoutFails() throws {
        let measuring = try BboltWriter.measuring()
        try Self.feed(Self.buckets, to: measuring)
        let planned = try measuring.finish()
        var more = Self.buckets
        more[1].1.append((revisionKey(40_000), [UInt8](repeating: 1, count: 5000)))
        let writer = try BboltWriter(streaming: planned) { _ in }
        try Self.feed(more, to: writer)
        #expect(throws: BboltError.self) { try writer.finish() }
        #expect(throws: BboltError.usage("block size 8192 is not a multiple of the page size of at least three pages")) {
            try BboltWriter(streaming: planned, blockBytes: 8192) { _ in }
        }
    }
}
