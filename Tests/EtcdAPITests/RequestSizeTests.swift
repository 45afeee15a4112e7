@testable import EtcdServer
import EtcdAPI
import EtcdGRPC
import EtcdProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Testing

/// Request sizes as etcd answers them: up to --max-request-bytes the member
/// serves; past it the member says `request is too large`; past
/// --max-request-bytes + 512 KiB gRPC refuses to receive the message.
@Suite struct RequestSizeTests {
    @Test func sizesPastTheLimitsGetEtcdsCodes() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("size-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let member = try Member(config: ServerConfig(name: "m1", dataDir: dir))
        defer { member.stop() }
        let limit = member.config.maxRequestBytes
        try await withListener(on: member) { client in
            let kv = Etcdserverpb_KV.Client(wrapping: client)
            func put(_ bytes: Int) async throws -> Etcdserverpb_PutResponse {
                var request = Etcdserverpb_PutRequest()
                request.key = Data("k".utf8)
                request.value = Data(count: bytes)
                return try await kv.put(request)
            }
            _ = try await put(limit - 1024)
            do {
                _ = try await put(limit + 256 << 10)
                Issue.record("a request over --max-request-bytes was served")
            } catch let error as RPCError {
                #expect(error.code == .invalidArgument && error.message == "etcdserver: request is too large")
            }
            // Between the receive limit and 4 MiB (the old floor).
            do {
                _ = try await put(limit + 1024 << 10)
                Issue.record("a message over the receive limit was served")
            } catch let error as RPCError {
                #expect(error.code == .resourceExhausted, "\(error)")
                #expect(error.message.hasPrefix("grpc: received message larger than max"), "\(error)")
            }
        }
    }
}
