import EtcdServer
import GRPCCore

extension RPCError {
    /// The gRPC status etcd sends for `error`: same code, same message.
    init(_ error: EtcdError) {
        let code = Status.Code(rawValue: error.code.rawValue).flatMap(RPCError.Code.init) ?? .unknown
        self.init(code: code, message: error.message)
    }
}

/// Runs a handler and reports its errors as etcd does.
func etcdCall<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as EtcdError {
        throw RPCError(error)
    }
}
