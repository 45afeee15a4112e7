@testable import EtcdServer
import EtcdAPI
import EtcdGRPC
import EtcdProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Testing

/// A learner answers only Status and serializable Range, as etcd's
/// interceptors decide; everything else gets etcd's learner error.
@Suite struct LearnerGateTests {
    @Test func aLearnerRefusesAllButStatusAndSerializableRange() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("learner-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = ServerConfig(name: "learner", dataDir: dir)
        config.initialAdvertisePeerURLs = ["http://127.0.0.1:1"]
        // Joined as a learner of a cluster whose voter never answers: the
        // gate decides before any request reaches raft.
        let voter = MemberRecord(id: 0x1111, peerURLs: ["http://127.0.0.1:2"], name: "voter")
        let learner = MemberRecord(id: 0x2222, peerURLs: ["http://127.0.0.1:1"], isLearner: true)
        let member = try Member(config: config, joiningAs: learner.id, clusterID: 0x99, members: [voter, learner],
                                environment: MemberEnvironment())
        defer { member.stop() }
        #expect(member.isLearner)

        try await withListener(on: member) { client in
            let kv = Etcdserverpb_KV.Client(wrapping: client)
            let maintenance = Etcdserverpb_Maintenance.Client(wrapping: client)
            let lease = Etcdserverpb_Lease.Client(wrapping: client)

            var serializable = Etcdserverpb_RangeRequest()
            serializable.key = Data("a".utf8)
            serializable.serializable = true
            #expect(try await kv.range(serializable).header.memberID == learner.id)
            _ = try await maintenance.status(Etcdserverpb_StatusRequest())

            var linearizable = serializable
            linearizable.serializable = false
            try await Self.expectRefused { _ = try await kv.range(linearizable) }
            var put = Etcdserverpb_PutRequest()
            put.key = Data("a".utf8)
            try await Self.expectRefused { _ = try await kv.put(put) }
            try await Self.expectRefused { _ = try await lease.leaseGrant(Etcdserverpb_LeaseGrantRequest()) }
            try await Self.expectRefused { _ = try await maintenance.hashKV(Etcdserverpb_HashKVRequest()) }
            // Streams too.
            try await Self.expectRefused {
                try await lease.leaseKeepAlive(requestProducer: { _ in }) { response in
                    for try await _ in response.messages {}
                }
            }
        }
    }

    static func expectRefused(_ body: () async throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        do {
            try await body()
            Issue.record("a learner served the call", sourceLocation: sourceLocation)
        } catch let error as RPCError {
            #expect(error.code == .unavailable, sourceLocation: sourceLocation)
            #expect(error.message == "etcdserver: rpc not supported for learner", sourceLocation: sourceLocation)
        }
    }
}
