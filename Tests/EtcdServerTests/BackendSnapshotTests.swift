import Backend
@testable import Bbolt
import Crypto
@testable import EtcdServer
import EtcdProto
import Foundation
import Testing

/// `Member.backendSnapshot`: the copy is written while it is read, through a
/// bounded pipe, from one read transaction. Writes go on while a reader
/// holds it (and are not in it); dropping it or stopping the member ends
/// the thread that writes it.
@Suite struct BackendSnapshotTests {
    /// A member with about 16 MiB of values: more than the pipe holds.
    static func filledMember(_ dir: String) async throws -> Member {
        let member = try Member(config: ServerConfig(name: "m1", dataDir: dir))
        let value = String(repeating: "v", count: 16 << 10)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<8 {
                group.addTask {
                    for i in 0..<128 { _ = try await member.put(MemberTests.put("k\(writer)-\(i)", value)) }
                }
            }
            try await group.waitForAll()
        }
        return member
    }

    /// Waits (at most 30 s) until no snapshot thread is left.
    static func waitForNoStreams(_ member: Member) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while member.snapshotStreams.count > 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(member.snapshotStreams.count == 0)
    }

    static func keyRevisions(_ file: [UInt8], in dir: String) throws -> Int {
        let path = dir + "/copy-\(UUID().uuidString).db"
        try Data(file).write(to: URL(fileURLWithPath: path))
        let reader = try BboltReader(path: path)
        var count = 0
        try reader.forEach(in: try #require(try reader.bucket(named: "key"))) { _, _ in count += 1 }
        return count
    }

    @Test func writesGoOnWhileAReaderHoldsTheCopyAndAreNotInIt() async throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let member = try await Self.filledMember(dir)
        let snapshot = try member.backendSnapshot()
        let first = try #require(try snapshot.next(limit: 32 * 1024))
        // The writer thread now waits on a full pipe, inside its read transaction.
        for i in 0..<200 { _ = try await member.put(MemberTests.put("late-\(i)", "x")) }
        var file = first
        while let chunk = try snapshot.next(limit: 32 * 1024) { file += chunk }
        #expect(file.count == snapshot.size)
        #expect(snapshot.digest() == Array(SHA256.hash(data: file)))
        #expect(try Self.keyRevisions(file, in: dir) == 8 * 128)
        try await Self.waitForNoStreams(member)
        await member.stopAndWait()
    }

    @Test func droppingAnUnreadCopyEndsItsThread() async throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let member = try await Self.filledMember(dir)
        do {
            let snapshot = try member.backendSnapshot()
            _ = try #require(try snapshot.next(limit: 32 * 1024))
            #expect(member.snapshotStreams.count == 1)
        }
        try await Self.waitForNoStreams(member)
        await member.stopAndWait()
    }

    /// A copy nobody reads holds a read transaction that closing the backend
    /// would wait for: stopping the member ends the copy first.
    @Test func stoppingTheMemberEndsAnUnreadCopy() async throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let member = try await Self.filledMember(dir)
        let snapshot = try member.backendSnapshot()
        _ = try #require(try snapshot.next(limit: 32 * 1024))
        let stopped = Task.detached { await member.stopAndWait() }
        let deadline = ContinuousClock.now + .seconds(30)
        while member.snapshotStreams.count > 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        let ended = member.snapshotStreams.count == 0
        #expect(ended)
        #expect(throws: (any Error).self) { while try snapshot.next(limit: 32 * 1024) != nil {} }
        if !ended { snapshot.cancel() }  // so that a failure here does not hang the run
        await stopped.value
    }

    /// The snapshot's SHA-256 is computed on a thread of its own.
    @Test func theBlockHasherDigestsBlocksInOrder() throws {
        let hasher = BlockHasher()
        var all: [UInt8] = []
        for n in 0..<40 {
            let block = BboltBlock(capacity: 4096 + n * 97)
            for i in 0..<block.capacity { block.storage[i] = UInt8(truncatingIfNeeded: i * 31 + n) }
            block.count = block.capacity - n
            all += block.bytes
            try hasher.submit(block)
        }
        #expect(try hasher.finish() == Array(SHA256.hash(data: all)))
        hasher.cancel()
    }

    @Test func aCancelledBlockHasherRefusesBlocks() throws {
        let hasher = BlockHasher()
        try hasher.submit(BboltBlock(capacity: 16))
        hasher.cancel()
        #expect(throws: CancellationError.self) { try hasher.submit(BboltBlock(capacity: 16)) }
        #expect(throws: CancellationError.self) { _ = try hasher.finish() }
    }
}
