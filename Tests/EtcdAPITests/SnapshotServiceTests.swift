import Bbolt
import Crypto
@testable import EtcdServer
import EtcdAPI
import EtcdGRPC
import EtcdProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Testing

/// Maintenance.Snapshot as etcd streams it: 32 KiB chunks with the bytes
/// still to come, then the SHA-256 of the file; the file is bbolt with the
/// member's data, and nothing is left beside the backend.
@Suite struct SnapshotServiceTests {
    @Test func streamsTheBackendInEtcdsChunksWithItsSHA256() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("snapshot-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let member = try Member(config: ServerConfig(name: "m1", dataDir: dir))
        defer { member.stop() }
        try await withListener(on: member) { client in
            let kv = Etcdserverpb_KV.Client(wrapping: client)
            // About 1.5 MB: more than one of the copy's 1 MiB blocks.
            for i in 0..<1500 {
                var put = Etcdserverpb_PutRequest()
                put.key = Data("key-\(i)".utf8)
                put.value = Data(repeating: UInt8(i % 251), count: 1000)
                _ = try await kv.put(put)
            }
            let maintenance = Etcdserverpb_Maintenance.Client(wrapping: client)
            let messages = try await maintenance.snapshot(Etcdserverpb_SnapshotRequest()) { response in
                var all: [Etcdserverpb_SnapshotResponse] = []
                for try await message in response.messages { all.append(message) }
                return all
            }
            try #require(messages.count > 2)
            let chunks = messages.dropLast()
            let file = chunks.reduce(into: Data()) { $0.append($1.blob) }
            var sent = 0
            for chunk in chunks {
                sent += chunk.blob.count
                #expect(chunk.blob.count <= 32 * 1024)
                #expect(chunk.remainingBytes == UInt64(file.count - sent))
                #expect(chunk.version == "3.6.0")
            }
            #expect(chunks.dropLast().allSatisfy { $0.blob.count == 32 * 1024 })
            #expect(messages.last!.remainingBytes == 0)
            #expect(messages.last!.blob == Data(SHA256.hash(data: file)))
            #expect(file.count % 4096 == 0)

            let path = dir + "/copy.db"
            try file.write(to: URL(fileURLWithPath: path))
            let reader = try BboltReader(path: path)
            let key = try #require(try reader.bucket(named: "key"))
            var revisions = 0
            try reader.forEach(in: key) { _, _ in revisions += 1 }
            #expect(revisions == 1500)
            #expect(try reader.buckets().map(\.nameString) == ["alarm", "auth", "authRoles", "authUsers", "cluster", "key", "lease", "members", "members_removed", "meta"])
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: member.config.snapDir).filter { $0.contains("snapshot") }
            #expect(leftovers.isEmpty)
        }
    }
}
