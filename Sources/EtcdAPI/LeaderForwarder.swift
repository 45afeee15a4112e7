import EtcdGRPC
import EtcdProto
import EtcdServer
import GRPCCore
import GRPCNIOTransportHTTP2
import HTTP2PingResponder
import Locks
import TransportSecurity

/// Sends the requests only the leader can answer (lease keep-alives and
/// remaining TTLs: expiry lives on the leader) from a follower to the
/// leader's client URL, as etcd forwards them to its leader. One cached
/// gRPC connection per leader URL.
final class LeaderForwarder: Sendable {
    typealias Client = GRPCClient<HTTP2ClientTransport.Posix>
    private struct Connection: Sendable {
        let client: Client
        let runner: Task<Void, Never>
    }

    private let member: Member
    /// This member's client-side certificates: presented to an `https://`
    /// leader (`--client-cert-file`, else `--cert-file`), and the CA it is
    /// checked against. Nil: no client TLS configured (an `https://` leader
    /// is then checked against the system's roots).
    private let credentials: TLSCredentials?
    private let connections = Mutex<[String: Connection]>([:])
    /// Connections kept at most (leaders come and go).
    private static let maxConnections = 8

    init(member: Member, credentials: TLSCredentials?) {
        self.member = member
        self.credentials = credentials
    }

    /// Renews lease `id` on the leader; its TTL (0: no such lease).
    func renew(id: Int64) async throws -> Int64 {
        var request = Etcdserverpb_LeaseKeepAliveRequest()
        request.id = id
        let lease = Etcdserverpb_Lease.Client(wrapping: try leaderClient())
        return try await lease.leaseKeepAlive(options: Self.options) { [request] writer in
            try await writer.write(request)
        } onResponse: { response in
            for try await answer in response.messages { return answer.ttl }
            throw EtcdError.leaderChanged
        }
    }

    func timeToLive(_ request: Etcdserverpb_LeaseTimeToLiveRequest) async throws -> Etcdserverpb_LeaseTimeToLiveResponse {
        let lease = Etcdserverpb_Lease.Client(wrapping: try leaderClient())
        return try await lease.leaseTimeToLive(request, options: Self.options)
    }

    func close() {
        let all = connections.withLock { state in
            defer { state.removeAll() }
            return Array(state.values)
        }
        for connection in all { connection.client.beginGracefulShutdown() }
    }

    private static var options: CallOptions {
        var options = CallOptions.defaults
        options.timeout = .seconds(5)
        return options
    }

    private func leaderClient() throws -> Client {
        let leader = member.raftStatus().leader
        guard leader != 0 else { throw EtcdError.noLeader }
        guard let url = member.member(id: leader)?.clientURLs.first,
              let address = try? ListenAddress(parsing: url) else { throw EtcdError.noLeader }
        if let existing = connections.withLock({ $0[url] }) { return existing.client }
        var config = HTTP2ClientTransport.Posix.Config.defaults
        config.channelDebuggingCallbacks.onCreateTCPConnection = { channel in
            HTTP2PingResponder.install(on: channel, expectsClientPreface: false)
        }
        let host = address.host == "localhost" ? "127.0.0.1" : address.host
        let target: any ResolvableTarget = host.contains(":")
            ? .ipv6(address: host, port: address.port)
            : host.allSatisfy({ $0.isNumber || $0 == "." })
                ? .ipv4(address: host, port: address.port) : .dns(host: host, port: address.port)
        var security = HTTP2ClientTransport.Posix.TransportSecurity.plaintext
        if address.scheme == .https {
            let settings = credentials?.settings
            let selfSigned = credentials?.isSelfSigned ?? false
            security = .tls { tls in
                guard let settings else { return }
                let certFile = settings.clientCertFile.isEmpty ? settings.certFile : settings.clientCertFile
                let keyFile = settings.clientKeyFile.isEmpty ? settings.keyFile : settings.clientKeyFile
                tls.certificateChain = [.file(path: certFile, format: .pem)]
                tls.privateKey = .file(path: keyFile, format: .pem)
                if !settings.trustedCAFile.isEmpty { tls.trustRoots = .certificates([.file(path: settings.trustedCAFile, format: .pem)]) }
                // etcd does not verify its own self-signed (--auto-tls) certificates.
                if selfSigned { tls.serverCertificateVerification = .noVerification }
            }
        }
        let client = Client(transport: try HTTP2ClientTransport.Posix(target: target, transportSecurity: security, config: config))
        let runner = Task { _ = try? await client.runConnections() }
        let (chosen, evicted) = connections.withLock { state -> (Client, [Connection]) in
            if let raced = state[url] { return (raced.client, []) }
            var evicted: [Connection] = []
            if state.count >= Self.maxConnections { evicted = Array(state.values); state.removeAll() }
            state[url] = Connection(client: client, runner: runner)
            return (client, evicted)
        }
        if chosen !== client { client.beginGracefulShutdown() }
        for connection in evicted { connection.client.beginGracefulShutdown() }
        return chosen
    }
}
