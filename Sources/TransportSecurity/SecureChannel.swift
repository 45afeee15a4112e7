import Dispatch
import Logging
import NIOCore
import NIOSSL
import NIOTLS

/// What a listener speaks: plaintext, TLS, or both on one port (etcd serves
/// `http://` and `https://` URLs for the same address on one socket).
public enum ListenerSecurity: Sendable {
    case plaintext
    case tls(TLSCredentials)
    case both(TLSCredentials)

    public var credentials: TLSCredentials? {
        switch self {
        case .plaintext: nil
        case .tls(let credentials), .both(let credentials): credentials
        }
    }
}

/// The TLS identity of the other end of a connection, sent down the pipeline
/// as a user inbound event once the handshake and etcd's checks passed.
public struct PeerIdentity: Sendable, Equatable {
    /// The verified certificate's subject CN (nil: no certificate).
    public var commonName: String?
}

/// Sets up accepted and dialed connections.
public enum SecureChannel {
    /// "IP:port" for logs.
    static func describe(_ address: SocketAddress?) -> String {
        guard let address, let ip = address.ipAddress else { return "unknown" }
        let port = address.port.map(String.init) ?? "?"
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }

    /// Time a new connection has to send its first bytes and finish the handshake.
    public static let handshakeTimeout: TimeAmount = .seconds(10)

    /// Installs the handler that reads a new connection's first byte: a TLS
    /// handshake (0x16) gets the TLS handlers and etcd's checks, anything
    /// else plaintext; what the listener does not serve is closed with a
    /// log line. `application` then adds the protocol's handlers, once.
    public static func configureAccepted(_ channel: any Channel, security: ListenerSecurity, listener: String, logger: Logger,
                                         application: @escaping @Sendable (any Channel) throws -> Void) throws {
        try channel.pipeline.syncOperations.addHandler(
            FirstByteSniffer(security: security, listener: listener, logger: logger, application: application))
    }

    /// Whether an accepted connection's pipeline is TLS (for the handlers
    /// that `configureAccepted`'s application adds).
    public static func isTLS(_ channel: any Channel) -> Bool {
        (try? channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self)) != nil
    }

    /// Adds TLS to a connection we dial, and etcd's checks of the server's
    /// certificate. `hostname` is the name the certificate must carry (nil
    /// for an IP address, which is then checked against the certificate's
    /// IP addresses).
    public static func configureDialed(_ channel: any Channel, credentials: TLSCredentials, host: String, logger: Logger) throws {
        let name = IPAddressBytes.parse(host) == nil ? host : nil
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(NIOSSLClientHandler(context: credentials.clientContext(), serverHostname: name))
        try sync.addHandler(CertificateCheck(credentials: credentials, side: .dialer, logger: logger, description: host))
    }
}

/// The first handler of an accepted connection until its first bytes arrive.
final class FirstByteSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let security: ListenerSecurity
    private let listener: String
    private let logger: Logger
    private let application: @Sendable (any Channel) throws -> Void
    private var timer: Scheduled<Void>?
    private var decided = false

    init(security: ListenerSecurity, listener: String, logger: Logger, application: @escaping @Sendable (any Channel) throws -> Void) {
        self.security = security
        self.listener = listener
        self.logger = logger
        self.application = application
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: SecureChannel.handshakeTimeout) { channel.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if !decided { timer?.cancel() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !decided else { return context.fireChannelRead(data) }
        let bytes = unwrapInboundIn(data)
        guard let first = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self) else { return }
        decided = true
        let remote = SecureChannel.describe(context.channel.remoteAddress)
        let isTLS = first == 0x16
        do {
            switch (security, isTLS) {
            case (.plaintext, true):
                refuse(context, "rejected a TLS client on the plaintext listener \(listener) from \(remote)")
                return
            case (.tls, false):
                refuse(context, "rejected a plaintext client on the TLS listener \(listener) from \(remote)")
                return
            case (.tls(let credentials), true), (.both(let credentials), true):
                let sync = context.pipeline.syncOperations
                let check = CertificateCheck(credentials: credentials, side: .acceptor, logger: logger, description: remote, timer: timer)
                try sync.addHandler(check, position: .after(self))
                try sync.addHandler(NIOSSLServerHandler(context: credentials.serverContext()), position: .after(self))
                try application(context.channel)
            case (.plaintext, false), (.both, false):
                timer?.cancel()
                try application(context.channel)
            }
        } catch {
            refuse(context, "cannot set up the connection from \(remote) on \(listener): \(error)")
            return
        }
        context.fireChannelRead(data)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    private func refuse(_ context: ChannelHandlerContext, _ message: String) {
        timer?.cancel()
        logger.warning("\(message)")
        context.close(promise: nil)
    }
}

/// Watches a TLS connection until its handshake completes, then applies
/// etcd's checks (allowed CN or hostname, CRL) to the other side's
/// certificate: a refusal is logged with the address and reason and closes
/// the connection before any request is read. A failed handshake is logged
/// and closed the same way.
final class CertificateCheck: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    enum Side { case acceptor, dialer }

    private let credentials: TLSCredentials
    private let side: Side
    private let logger: Logger
    private let description: String
    private var timer: Scheduled<Void>?
    private var done = false
    /// A check runs off the loop; reads wait in `held` (a handshake's worth).
    private var checking = false
    private var held: [NIOAny] = []

    init(credentials: TLSCredentials, side: Side, logger: Logger, description: String, timer: Scheduled<Void>? = nil) {
        self.credentials = credentials
        self.side = side
        self.logger = logger
        self.description = description
        self.timer = timer
    }

    func handlerAdded(context: ChannelHandlerContext) {
        guard timer == nil else { return }
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: SecureChannel.handshakeTimeout) { channel.close(promise: nil) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard !done, let tls = event as? TLSUserEvent, case .handshakeCompleted = tls else {
            return context.fireUserInboundEventTriggered(event)
        }
        done = true
        let certificate = peerCertificate(context)
        let remoteHost = side == .acceptor ? context.channel.remoteAddress?.ipAddress : nil
        guard credentials.checksMayBlock && side == .acceptor else {
            finish(context: context, event: tls, certificate: certificate,
                   refusal: credentials.refusal(of: certificate, remoteHost: remoteHost))
            return
        }
        // The address check may ask DNS: off the event loop, with reads held.
        checking = true
        let credentials = self.credentials
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        let box = UncheckedBox(certificate)
        DispatchQueue.global().async {
            let refusal = credentials.refusal(of: box.value, remoteHost: remoteHost)
            loop.execute {
                let (handler, context) = bound.value
                handler.checking = false
                handler.finish(context: context, event: tls, certificate: box.value, refusal: refusal)
            }
        }
    }

    private func finish(context: ChannelHandlerContext, event: TLSUserEvent, certificate: NIOSSLCertificate?, refusal: String?) {
        timer?.cancel()
        if let refusal {
            logger.warning("rejected connection", metadata: ["remote-addr": "\(description)", "side": "\(side)", "error": "\(refusal)"])
            held.removeAll()
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
        context.fireUserInboundEventTriggered(PeerIdentity(commonName: certificate.flatMap(TLSCredentials.commonName(of:))))
        let reads = held
        held.removeAll()
        for read in reads { context.fireChannelRead(read) }
        if !reads.isEmpty { context.fireChannelReadComplete() }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if checking { held.append(data) } else { context.fireChannelRead(data) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if !checking { context.fireChannelReadComplete() }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard !done else { return context.fireErrorCaught(error) }
        done = true
        timer?.cancel()
        logger.warning("TLS handshake failed", metadata: ["remote-addr": "\(description)", "error": "\(error)"])
        context.close(promise: nil)
    }

    private func peerCertificate(_ context: ChannelHandlerContext) -> NIOSSLCertificate? {
        let sync = context.pipeline.syncOperations
        if let server = try? sync.handler(type: NIOSSLServerHandler.self) { return server.peerCertificate }
        if let client = try? sync.handler(type: NIOSSLClientHandler.self) { return client.peerCertificate }
        return nil
    }
}

/// Carries a value the compiler cannot prove Sendable to the thread that
/// runs the check and back; only one thread touches it at a time.
private struct UncheckedBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
