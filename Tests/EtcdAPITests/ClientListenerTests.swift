import EtcdAPI
import EtcdGRPC
import EtcdProto
import EtcdServer
import GRPCCore
import GRPCNIOTransportHTTP2
import Testing

/// The client listener serves gRPC on loopback: health answers, and services
/// that are not built yet answer UNIMPLEMENTED rather than hanging or crashing.
@Suite struct ClientListenerTests {
    @Test func healthCheckAndUnimplementedServices() async throws {
        let listener = ClientListener(address: try ListenAddress(parsing: "http://127.0.0.1:0"))
        try await withThrowingTaskGroup { group in
            group.addTask { try await listener.serve() }
            defer { listener.stop() }
            let port = try #require(try await listener.boundPort())
            #expect(port > 0)

            let transport = try HTTP2ClientTransport.Posix(
                target: .ipv4(address: "127.0.0.1", port: port),
                transportSecurity: .plaintext
            )
            try await withGRPCClient(transport: transport) { client in
                let health = Grpc_Health_V1_Health.Client(wrapping: client)
                let status = try await health.check(Grpc_Health_V1_HealthCheckRequest())
                #expect(status.status == .serving)

                var other = Grpc_Health_V1_HealthCheckRequest()
                other.service = "no.such.Service"
                await #expect(throws: RPCError.self) { try await health.check(other) }

                let kv = Etcdserverpb_KV.Client(wrapping: client)
                do {
                    _ = try await kv.range(Etcdserverpb_RangeRequest())
                    Issue.record("Range should not succeed before the KV service exists")
                } catch let error as RPCError {
                    #expect(error.code == .unimplemented)
                }
            }
            listener.stop()
            try await group.waitForAll()
        }
    }
}
