@testable import EtcdServer
import EtcdProto
import Foundation
import Locks
import Testing

/// Maintenance.Defragment on a member: the file shrinks to its live data
/// while writes keep being served, and nothing is lost.
@Suite struct MemberDefragTests {
    final class StopFlag: Sendable {
        private let flag = Atomic<Bool>(false)
        var isSet: Bool { flag.load(ordering: .relaxed) }
        func set() { flag.store(true, ordering: .relaxed) }
    }

    @Test func defragmentUnderWritesShrinksTheFileAndLosesNothing() async throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = ServerConfig(name: "m1", dataDir: dir)
        var member = try Member(config: config)
        let big = String(repeating: "x", count: 8 << 10)
        for i in 0..<900 { _ = try await member.put(MemberTests.put("k\(i)", big)) }
        for i in 0..<900 where i % 30 != 0 {
            var delete = Etcdserverpb_DeleteRangeRequest()
            delete.key = Data("k\(i)".utf8)
            _ = try await member.deleteRange(delete)
        }
        var compaction = Etcdserverpb_CompactionRequest()
        compaction.revision = member.header().revision
        compaction.physical = true
        _ = try await member.compact(compaction)
        _ = try await member.put(MemberTests.put("after-compaction", "v"))
        let hashRevision = member.header().revision
        let hashBefore = try member.hashKV(revision: hashRevision).hash
        let sizeBefore = member.backendSizeBytes

        // Writers on their own tasks for as long as the defragmentation runs.
        let done = StopFlag()
        let written = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            for writer in 0..<4 {
                let member = member
                group.addTask {
                    var count = 0
                    // Bounded: at most 20,000 puts per writer.
                    while !done.isSet, count < 20_000 {
                        _ = try await member.put(MemberTests.put("w\(writer)-\(count)", "v\(count)"))
                        count += 1
                    }
                    return (writer, count)
                }
            }
            try await member.defragment()
            done.set()
            var counts = [Int](repeating: 0, count: 4)
            for try await (writer, count) in group { counts[writer] = count }
            return counts
        }
        #expect(member.backendSizeBytes < sizeBefore / 2)
        #expect(try member.hashKV(revision: hashRevision).hash == hashBefore)
        for (writer, count) in written.enumerated() where count > 0 {
            let last = try await member.range(MemberTests.get("w\(writer)-\(count - 1)"))
            #expect(last.kvs.first.map { String(decoding: $0.value, as: UTF8.self) } == "v\(count - 1)")
        }
        #expect(try await member.range(MemberTests.get("k30")).kvs.count == 1)
        #expect(try await member.range(MemberTests.get("k31")).kvs.isEmpty)

        // What was swapped in is what is on disk.
        await member.stopAndWait()
        member = try Member(config: config)
        defer { member.stop() }
        #expect(try member.hashKV(revision: hashRevision).hash == hashBefore)
        for (writer, count) in written.enumerated() where count > 0 {
            #expect(try await member.range(MemberTests.get("w\(writer)-\(count - 1)")).kvs.count == 1)
        }
        // Defragmenting again works, and right away when nothing changed.
        try await member.defragment()
    }

    @Test func defragmentOnAStoppedMemberFails() async throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let member = try Member(config: ServerConfig(name: "m1", dataDir: dir))
        await member.stopAndWait()
        await #expect(throws: EtcdError.stopped) { try await member.defragment() }
    }
}
