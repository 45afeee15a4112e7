import Backend
import Bbolt
@testable import EtcdServer
import Foundation
import Logging
import Testing

/// Starting on a real etcd's data dir: its bbolt backend becomes ours once.
struct BboltConversionTests {
    static let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }

    func scratch() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("conv-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// etcd-like buckets in a bbolt file at `path`.
    func writeBbolt(_ path: String, keys: Int = 500) throws {
        let writer = try BboltWriter(path: path)
        try writer.beginBucket(Array("key".utf8))
        for i in 1...keys {
            try writer.put(key: withUnsafeBytes(of: UInt64(i).bigEndian) { Array($0) } + [0x5F] + [UInt8](repeating: 0, count: 8),
                           value: Array("value-\(i)".utf8))
        }
        try writer.endBucket()
        try writer.beginBucket(Array("meta".utf8))
        try writer.put(key: Array("consistent_index".utf8), value: [0, 0, 0, 0, 0, 0, 0, 42])
        try writer.endBucket()
        try writer.finish(sync: false)
    }

    func contents(_ path: String) throws -> (keys: Int, last: [UInt8]?, index: UInt64) {
        let backend = try Backend(path: path)
        defer { try? backend.close() }
        var count = 0
        var last: [UInt8]?
        try backend.read { tx in
            try tx.forEach(.key) { _, value in
                count += 1
                last = Array(value)
                return true
            }
        }
        return (count, last, try backend.consistentIndex().index)
    }

    @Test func convertsOnceAndKeepsTheOriginal() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = dir + "/db"
        try writeBbolt(db)
        let original = try Data(contentsOf: URL(fileURLWithPath: db))
        try BboltConversion.convertIfNeeded(backendPath: db, logger: Self.logger)
        #expect(try Data(contentsOf: URL(fileURLWithPath: db + ".bbolt")) == original)
        #expect(!BboltConversion.isBbolt(db))
        let converted = try contents(db)
        #expect(converted.keys == 500 && converted.last == Array("value-500".utf8) && converted.index == 42)
        // A second start leaves our backend alone.
        try BboltConversion.convertIfNeeded(backendPath: db, logger: Self.logger)
        #expect(try contents(db).keys == 500)
        #expect(!FileManager.default.fileExists(atPath: db + ".converting"))
    }

    /// A crash after the original was moved aside but before ours moved in:
    /// the next start converts again from the kept original.
    @Test func aCutShortConversionIsRedone() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = dir + "/db"
        try writeBbolt(db + ".bbolt", keys: 20)
        try Data("half-written".utf8).write(to: URL(fileURLWithPath: db + ".converting"))
        try BboltConversion.convertIfNeeded(backendPath: db, logger: Self.logger)
        #expect(try contents(db).keys == 20)
        #expect(!FileManager.default.fileExists(atPath: db + ".converting"))
    }

    /// A damaged bbolt file stops the start with the problem named; the
    /// original stays where it was and no half-built file is left.
    @Test func aBrokenBboltFileIsAnErrorAndNothingMoves() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = dir + "/db"
        try writeBbolt(db)
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: db))
        try handle.truncate(atOffset: 4 * 4096)
        try handle.close()
        #expect(throws: BboltError.self) { try BboltConversion.convertIfNeeded(backendPath: db, logger: Self.logger) }
        #expect(BboltConversion.isBbolt(db))
        #expect(!FileManager.default.fileExists(atPath: db + ".bbolt"))
        #expect(!FileManager.default.fileExists(atPath: db + ".converting"))
    }
}
