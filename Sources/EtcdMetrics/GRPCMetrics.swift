import Prometheus

/// go-grpc-prometheus's server metrics for one method, as etcd registers
/// them: every series (each of the 17 codes for `grpc_server_handled_total`)
/// exists from the start at 0, so recording is an atomic add and nothing
/// else. Also feeds etcd_network_client_grpc_{sent,received}_bytes_total
/// (message bytes, as etcd's codec counts them).
public final class GRPCMethodMetrics: Sendable {
    private let started: Counter
    private let handled: [Counter]
    private let messagesReceived: Counter
    private let messagesSent: Counter
    private let bytesReceived: Counter
    private let bytesSent: Counter
    /// grpc_server_handling_seconds, with `--metrics extensive` only (as etcd).
    private let handling: ValueHistogram?

    /// grpc-go's names of the status codes, by their number.
    public static let codeNames = [
        "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
        "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange",
        "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
    ]

    init(metrics: EtcdMetrics, type: String, service: String, method: String) {
        let r = metrics.registry
        let labels = [("grpc_type", type), ("grpc_service", service), ("grpc_method", method)]
        started = r.counter(name: "grpc_server_started_total", labels: labels, help: "Total number of RPCs started on the server.")
        handled = Self.codeNames.map { code in
            r.counter(name: "grpc_server_handled_total", labels: labels + [("grpc_code", code)],
                      help: "Total number of RPCs completed on the server, regardless of success or failure.")
        }
        messagesReceived = r.counter(name: "grpc_server_msg_received_total", labels: labels,
                                     help: "Total number of RPC stream messages received on the server.")
        messagesSent = r.counter(name: "grpc_server_msg_sent_total", labels: labels,
                                 help: "Total number of gRPC stream messages sent by the server.")
        bytesReceived = metrics.clientGRPCReceivedBytes
        bytesSent = metrics.clientGRPCSentBytes
        handling = metrics.extensive
            ? r.histogram(name: "grpc_server_handling_seconds", labels: labels, buckets: Self.handlingBuckets,
                          help: "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.")
            : nil
    }

    /// Prometheus' default buckets, which go-grpc-prometheus uses for handling times.
    static let handlingBuckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    public func recordStarted() { started.increment() }

    /// Whether calls are timed (`--metrics extensive`).
    public var timesCalls: Bool { handling != nil }

    /// The call ended with gRPC status `code` (its number), `seconds` after
    /// it started (recorded with `--metrics extensive`).
    public func recordHandled(code: Int, seconds: Double? = nil) {
        handled[handled.indices.contains(code) ? code : 2].increment()
        if let handling, let seconds { handling.record(seconds) }
    }

    public func recordReceived(messageBytes: Int) {
        messagesReceived.increment()
        bytesReceived.increment(by: Int64(messageBytes))
    }

    public func recordSent(messageBytes: Int) {
        messagesSent.increment()
        bytesSent.increment(by: Int64(messageBytes))
    }
}

extension EtcdMetrics {
    /// The series of the method at gRPC path `/package.Service/Method`.
    /// `streaming`: served as a stream (its kind comes from etcd's protos).
    public func grpcMethod(path: String, streaming: Bool) -> GRPCMethodMetrics {
        let trimmed = path.hasPrefix("/") ? path.dropFirst() : Substring(path)
        let parts = trimmed.split(separator: "/", maxSplits: 1)
        let service = parts.first.map(String.init) ?? ""
        let method = parts.count > 1 ? String(parts[1]) : ""
        return GRPCMethodMetrics(metrics: self, type: Self.grpcType(service: service, method: method, streaming: streaming),
                                 service: service, method: method)
    }

    /// go-grpc-prometheus's grpc_type for etcd's methods.
    static func grpcType(service: String, method: String, streaming: Bool) -> String {
        guard streaming else { return "unary" }
        switch (service, method) {
        case ("etcdserverpb.Maintenance", "Snapshot"), ("grpc.health.v1.Health", "Watch"), ("v3electionpb.Election", "Observe"):
            return "server_stream"
        default:
            return "bidi_stream"
        }
    }
}
