import EtcdGRPC
import EtcdProto
import EtcdServer
import GRPCWire
import NIOCore

extension WireRouter {
    /// etcd serves almost nothing on a learner: every call but Status and a
    /// serializable Range gets `etcdserver: rpc not supported for learner`
    /// (UNAVAILABLE, so clients try another endpoint), and every stream is
    /// refused. Wraps each method of the router; checked per call, since a
    /// learner is promoted while it serves.
    mutating func refuseOnLearner(_ member: Member) {
        let status = "/" + Etcdserverpb_Maintenance.Method.Status.descriptor.fullyQualifiedMethod
        let range = "/" + Etcdserverpb_KV.Method.Range.descriptor.fullyQualifiedMethod
        for (path, method) in methods where path != status {
            switch method {
            case .unary(let serve):
                let isRange = path == range
                methods[path] = .unary { call, bytes in
                    if member.isLearner && !(isRange && Self.isSerializableRange(bytes)) {
                        return call.finish(wireStatus(EtcdError.notSupportedForLearner))
                    }
                    serve(call, bytes)
                }
            case .streaming(let open):
                methods[path] = .streaming { call in
                    guard member.isLearner else { return open(call) }
                    call.finish(wireStatus(EtcdError.notSupportedForLearner))
                    return RefusedStream()
                }
            }
        }
    }
}

extension WireRouter {
    static func isSerializableRange(_ bytes: ByteBuffer) -> Bool {
        guard let request = try? Etcdserverpb_RangeRequest(grpcMessage: bytes) else { return false }
        return request.serializable
    }
}

/// A stream finished before it began: ignores whatever still arrives.
final class RefusedStream: WireStreamHandler {
    func received(_ message: ByteBuffer) {}
    func inboundClosed() {}
    func cancelled() {}
}

extension EtcdError {
    public static let notSupportedForLearner = EtcdError(.unavailable, "etcdserver: rpc not supported for learner")
}
