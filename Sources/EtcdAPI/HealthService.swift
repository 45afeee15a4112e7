import EtcdGRPC
import EtcdProto
import GRPCCore

/// `grpc.health.v1.Health`: the overall service ("") is SERVING while the
/// listener runs; other service names are unknown.
struct HealthService: Grpc_Health_V1_Health.SimpleServiceProtocol {
    func check(
        request: Grpc_Health_V1_HealthCheckRequest,
        context: ServerContext
    ) async throws -> Grpc_Health_V1_HealthCheckResponse {
        guard request.service.isEmpty else {
            throw RPCError(code: .notFound, message: "unknown service")
        }
        var response = Grpc_Health_V1_HealthCheckResponse()
        response.status = .serving
        return response
    }

    func watch(
        request: Grpc_Health_V1_HealthCheckRequest,
        response: RPCWriter<Grpc_Health_V1_HealthCheckResponse>,
        context: ServerContext
    ) async throws {
        var status = Grpc_Health_V1_HealthCheckResponse()
        status.status = request.service.isEmpty ? .serving : .serviceUnknown
        try await response.write(status)
        // The status never changes while we serve; hold the stream until the
        // client goes away or the server shuts down.
        while !Task.isCancelled {
            try await Task.sleep(for: .seconds(3600))
        }
    }
}
