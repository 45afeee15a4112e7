import EtcdServer
import GRPCCore
import GRPCNIOTransportHTTP2
import HTTP2PingResponder

/// The client-facing gRPC listener of a member: health, and with a member KV,
/// Watch, Lease, Maintenance and Cluster. Services that have not been built yet are not
/// registered, so clients get UNIMPLEMENTED for them.
public struct ClientListener: Sendable {
    public let address: ListenAddress
    private let server: GRPCServer<HTTP2ServerTransport.Posix>
    private let forwarder: LeaderForwarder?

    /// - Parameter answerPingsBeforeHTTP2: install `HTTP2PingResponder` on every
    ///   connection (on by default; off only to show what happens without it).
    public init(address: ListenAddress, member: Member? = nil, answerPingsBeforeHTTP2: Bool = true) {
        self.address = address
        var config = HTTP2ServerTransport.Posix.Config.defaults
        if answerPingsBeforeHTTP2 {
            config.channelDebuggingCallbacks.onAcceptTCPConnection = { channel in
                HTTP2PingResponder.install(on: channel, expectsClientPreface: true)
            }
        }
        let transport = HTTP2ServerTransport.Posix(
            address: Self.socketAddress(address),
            transportSecurity: .plaintext,
            config: config
        )
        var services: [any RegistrableRPCService] = [HealthService()]
        forwarder = member.map(LeaderForwarder.init)
        if let member, let forwarder {
            services += [
                KVService(member: member), WatchService(member: member), LeaseService(member: member, forwarder: forwarder),
                MaintenanceService(member: member), ClusterService(member: member),
            ]
        }
        self.server = GRPCServer(transport: transport, services: services)
    }

    static func socketAddress(_ address: ListenAddress) -> GRPCNIOTransportCore.SocketAddress {
        if address.host == "localhost" { return .ipv4(host: "127.0.0.1", port: address.port) }
        if address.host.contains(":") { return .ipv6(host: address.host, port: address.port) }
        return .ipv4(host: address.host, port: address.port)
    }

    /// Serves until the task is cancelled or `stop()` is called.
    public func serve() async throws {
        try await server.serve()
    }

    /// The port actually bound (useful with port 0).
    public func boundPort() async throws -> Int? {
        guard let bound = try await server.listeningAddress else { return nil }
        return bound.ipv4?.port ?? bound.ipv6?.port
    }

    public func stop() {
        server.beginGracefulShutdown()
        forwarder?.close()
    }
}
