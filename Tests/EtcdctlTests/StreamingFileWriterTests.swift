import CLIText
import Foundation
import Testing

@Suite struct StreamingFileWriterTests {
    private func scratch() -> String {
        let dir = NSTemporaryDirectory() + "sfw-\(UUID().uuidString)"
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test func flushesInTheBackgroundAsTheFileGrows() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/snap.part"
        let writer = try StreamingFileWriter(path: path, syncEvery: 100 << 10)
        var expected = Data()
        for i in 0..<8 {
            let chunk = Data((0..<(64 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) })
            try writer.write(chunk)
            expected.append(chunk)
        }
        // 512 KiB written with a flush due every 100 KiB: at least one has
        // begun before the end (one runs at a time; the others coalesce).
        #expect(writer.backgroundSyncs >= 1)
        try writer.finish()
        #expect(FileManager.default.contents(atPath: path) == expected)
    }

    @Test func smallFilesOnlySyncAtTheEnd() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/small"
        let writer = try StreamingFileWriter(path: path, syncEvery: 1 << 20)
        try writer.write(Data("hello".utf8))
        #expect(writer.backgroundSyncs == 0)
        try writer.finish()
        #expect(FileManager.default.contents(atPath: path) == Data("hello".utf8))
    }

    @Test func abandonRemovesTheFile() throws {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/gone.part"
        let writer = try StreamingFileWriter(path: path, syncEvery: 1)
        try writer.write(Data(repeating: 7, count: 4096))
        writer.abandon()
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test func aMissingDirectoryIsGosError() {
        #expect(throws: POSIXError.self) { try StreamingFileWriter(path: "/nonexistent-\(UUID().uuidString)/x") }
        #expect(goErrnoText(.ENOENT) == "no such file or directory")
        #expect(goErrnoText(.ENOSPC) == "no space left on device")
    }
}
