import Backend
import Bbolt
@testable import EtcdServer
import Foundation
import Raft
import Testing

/// The `meta` bucket keeps what etcd 3.5 and 3.6 keep there: the raft
/// configuration (`confState`, Go's JSON) and the storage version, so a
/// snapshot of ours reads as a 3.6 one.
@Suite struct MetaBucketTests {
    @Test func confStateIsGoJSON() {
        #expect(String(decoding: RaftLoop.confStateJSON(Raft.ConfState(voters: [1, 2])), as: UTF8.self)
            == #"{"voters":[1,2],"auto_leave":false}"#)
        var joint = Raft.ConfState(voters: [1, 2])
        joint.learners = [3]
        joint.votersOutgoing = [1]
        joint.learnersNext = [4]
        joint.autoLeave = true
        #expect(String(decoding: RaftLoop.confStateJSON(joint), as: UTF8.self)
            == #"{"voters":[1,2],"learners":[3],"voters_outgoing":[1],"learners_next":[4],"auto_leave":true}"#)
    }

    @Test func aMemberAndItsSnapshotCarryConfStateAndStorageVersion() async throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let member = try Member(config: ServerConfig(name: "m1", dataDir: dir))
        // The leader sets the cluster version (and with it the storage version) once elected.
        func meta() throws -> (conf: String?, storage: String?) {
            try member.backend.read { tx in
                (try tx.get(.meta, MetaKey.confState).map { String(decoding: $0, as: UTF8.self) },
                 try tx.get(.meta, MetaKey.storageVersion).map { String(decoding: $0, as: UTF8.self) })
            }
        }
        let deadline = ContinuousClock.now + .seconds(20)
        while try meta().storage == nil, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(try meta().conf == #"{"voters":[\#(member.memberID)],"auto_leave":false}"#)
        #expect(try meta().storage == "3.6.0")

        let stream = try member.backendSnapshot()
        let file = dir + "/snapshot.db"
        FileManager.default.createFile(atPath: file, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: file))
        while let chunk = try stream.next(limit: 32 * 1024) { try handle.write(contentsOf: chunk) }
        try handle.write(contentsOf: stream.digest())
        try handle.close()
        let reader = try BboltReader(path: file)
        #expect(try reader.etcdStatus().storageVersion == "3.6.0")
        var confState: String?
        for bucket in try reader.buckets() where bucket.name == Array("meta".utf8) {
            try reader.forEach(in: bucket) { key, value in
                if key.elementsEqual("confState".utf8) { confState = String(decoding: value, as: UTF8.self) }
            }
        }
        #expect(confState == #"{"voters":[\#(member.memberID)],"auto_leave":false}"#)
        await member.stopAndWait()
    }
}
