import EtcdProto
import EtcdServer
import Foundation
import Testing

/// The single member end to end in one process: requests go through raft,
/// the WAL and apply, and survive a restart.
@Suite struct MemberTests {
    static func tempDir() -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("member-\(UUID().uuidString)").path
        return dir
    }

    static func put(_ key: String, _ value: String, prevKv: Bool = false) -> Etcdserverpb_PutRequest {
        var request = Etcdserverpb_PutRequest()
        request.key = Data(key.utf8)
        request.value = Data(value.utf8)
        request.prevKv = prevKv
        return request
    }

    static func get(_ key: String, serializable: Bool = false, revision: Int64 = 0) -> Etcdserverpb_RangeRequest {
        var request = Etcdserverpb_RangeRequest()
        request.key = Data(key.utf8)
        request.serializable = serializable
        request.revision = revision
        return request
    }

    @Test func writesAreAppliedInOrderAndReadBack() async throws {
        let dir = Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let member = try Member(config: ServerConfig(name: "m1", dataDir: dir))
        defer { member.stop() }

        var revisions: [Int64] = []
        for i in 0..<20 {
            revisions.append(try await member.put(Self.put("k\(i)", "v\(i)")).header.revision)
        }
        #expect(revisions == Array(2...21))
        let replaced = try await member.put(Self.put("k0", "new", prevKv: true))
        #expect(replaced.prevKv.value == Data("v0".utf8))

        let linearizable = try await member.range(Self.get("k0"))
        #expect(linearizable.kvs.map(\.value) == [Data("new".utf8)])
        #expect(linearizable.kvs.first?.version == 2)
        let serializable = try await member.range(Self.get("k19", serializable: true))
        #expect(serializable.kvs.first?.modRevision == 21)

        let status = member.raftStatus()
        #expect(status.leader == member.memberID)
        #expect(status.appliedIndex == status.committedIndex)
    }

    @Test func concurrentWritesAllCommitWithDistinctRevisions() async throws {
        let dir = Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let member = try Member(config: ServerConfig(name: "m1", dataDir: dir))
        defer { member.stop() }
        let revisions = try await withThrowingTaskGroup(of: Int64.self) { group in
            for i in 0..<200 {
                group.addTask { try await member.put(Self.put("c\(i)", "v")).header.revision }
            }
            return try await group.reduce(into: [Int64]()) { $0.append($1) }
        }
        #expect(Set(revisions).count == 200)
        #expect(revisions.max() == 201)
    }

    @Test func errorsCarryEtcdCodesAndMessages() async throws {
        let dir = Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let member = try Member(config: ServerConfig(name: "m1", dataDir: dir))
        defer { member.stop() }
        _ = try await member.put(Self.put("a", "1"))
        _ = try await member.put(Self.put("a", "2"))

        await #expect(throws: EtcdError.emptyKey) { try await member.put(Self.put("", "x")) }
        await #expect(throws: EtcdError.futureRevision) { try await member.range(Self.get("a", revision: 99)) }
        var compaction = Etcdserverpb_CompactionRequest()
        compaction.revision = 3
        _ = try await member.compact(compaction)
        await #expect(throws: EtcdError.compacted) { try await member.range(Self.get("a", revision: 2)) }

        var ignoreValue = Self.put("missing", "")
        ignoreValue.ignoreValue = true
        await #expect(throws: EtcdError.keyNotFound) { try await member.put(ignoreValue) }

        let huge = Self.put("big", String(repeating: "x", count: 2 * 1024 * 1024))
        await #expect(throws: EtcdError.requestTooLarge) { try await member.put(huge) }
        #expect(EtcdError.compacted.code == .outOfRange)
    }

    @Test func restartKeepsEveryAcknowledgedWriteAndTheRevision() async throws {
        let dir = Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let id: UInt64
        do {
            let member = try Member(config: ServerConfig(name: "m1", dataDir: dir))
            id = member.memberID
            for i in 0..<30 { _ = try await member.put(Self.put("r\(i)", "v\(i)")) }
            var delete = Etcdserverpb_DeleteRangeRequest()
            delete.key = Data("r0".utf8)
            #expect(try await member.deleteRange(delete).deleted == 1)
            member.stop()
        }
        let member = try Member(config: ServerConfig(name: "m1", dataDir: dir))
        defer { member.stop() }
        #expect(member.memberID == id)
        #expect(try await member.range(Self.get("r29")).kvs.first?.value == Data("v29".utf8))
        #expect(try await member.range(Self.get("r0")).kvs.isEmpty)
        let next = try await member.put(Self.put("after", "restart"))
        #expect(next.header.revision == 33)
    }
}

@Suite struct MemberSnapshotTests {
    @Test func snapshotsEverySnapshotCountAndRestartsFromTheNewest() async throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = ServerConfig(name: "m1", dataDir: dir)
        config.snapshotCount = 25
        do {
            let member = try Member(config: config)
            for i in 0..<160 { _ = try await member.put(MemberTests.put("s\(i)", "v\(i)")) }
            member.stop()
        }
        let snapFiles = try FileManager.default.contentsOfDirectory(atPath: config.snapDir).filter { $0.hasSuffix(".snap") }.sorted()
        // 160 puts + the leader's empty entry + bootstrap: snapshots at 26, 51, ...; the newest 5 kept.
        #expect(snapFiles.count == 5)
        #expect(snapFiles.last?.hasSuffix(String(format: "%016x.snap", 151)) == true)

        let member = try Member(config: config)
        defer { member.stop() }
        let all = try await member.range({
            var r = Etcdserverpb_RangeRequest()
            r.key = Data("s".utf8)
            r.rangeEnd = Data("t".utf8)
            r.countOnly = true
            return r
        }())
        #expect(all.count == 160)
        #expect(try await member.put(MemberTests.put("after", "x")).header.revision == 162)
        #expect(member.raftStatus().appliedIndex >= 162)
    }
}
