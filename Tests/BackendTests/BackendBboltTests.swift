import Bbolt
import Foundation
import Testing

@testable import Backend

/// `Backend.streamBbolt`: the stream is the file `writeBbolt` writes, and it
/// is the state at one point even when the open batch moves between its
/// layout pass and its write pass.
@Suite struct BackendBboltTests {
    static func key(_ i: Int) -> [UInt8] { Array(String(format: "key-%06d", i).utf8) }

    @Test func streamIsThePointInTimeFileWhileTheBatchMoves() throws {
        let dir = TemporaryDirectory()
        let backend = try Backend(path: dir.db)
        let value = [UInt8](repeating: 0x5A, count: 300)
        for i in 0..<2000 { try backend.put(.key, key: Self.key(i), value: value) }
        try backend.forceCommit()
        // An open batch: new keys, an overwrite and a delete over committed data.
        for i in 2000..<2500 { try backend.put(.key, key: Self.key(i), value: value) }
        try backend.put(.key, key: Self.key(7), value: bytes("new"))
        try backend.delete(.key, key: Self.key(8))
        let path = dir.path + "/copy.db"
        let written = try backend.writeBbolt(to: path, sync: false)
        let file = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))

        var streamed: [UInt8] = []
        var sizeBeforeFirstByte: Int?
        let summary = try backend.streamBbolt(blockBytes: 8 * 4096, layout: { layout in
            sizeBeforeFirstByte = streamed.isEmpty ? layout.byteCount : nil
            // Writes to the open batch between the two passes (this thread is
            // the backend's writer): in neither pass.
            try backend.put(.key, key: Self.key(9999), value: value)
            try backend.delete(.key, key: Self.key(2100))
            try backend.put(.key, key: Self.key(7), value: bytes("newer"))
        }, emit: { streamed.append(contentsOf: $0.bytes) })
        #expect(summary == written)
        #expect(sizeBeforeFirstByte == file.count)
        let same = streamed == file  // (not in #expect: it would print both files)
        #expect(same)
        let reader = try BboltReader(path: path)
        let bucket = try #require(try reader.bucket(named: "key"))
        var keys = 0
        try reader.forEach(in: bucket) { key, value in
            keys += 1
            if Array(key) == Self.key(7) { #expect(Array(value) == bytes("new")) }
        }
        #expect(keys == 2499)
        // The late writes are the backend's now.
        #expect(try backend.read { try $0.get(.key, Self.key(7)) } == bytes("newer"))
        try backend.close()
    }

    /// An error from `emit` ends the copy with that error and releases the
    /// read transaction (the backend closes without waiting).
    @Test func anEmitErrorEndsTheCopy() throws {
        struct Stop: Error {}
        let dir = TemporaryDirectory()
        let backend = try Backend(path: dir.db)
        for i in 0..<3000 { try backend.put(.key, key: Self.key(i), value: [UInt8](repeating: 1, count: 500)) }
        var blocks = 0
        #expect(throws: Stop.self) {
            try backend.streamBbolt(blockBytes: 4 * 4096, layout: { _ in }, emit: { _ in
                blocks += 1
                if blocks == 2 { throw Stop() }
            })
        }
        #expect(blocks == 2)
        try backend.close()
    }
}
