import GRPCWire
import NIOCore
import NIOHTTP1
import TransportSecurity

/// The first handler after TLS (or plaintext) on a client connection: the
/// HTTP/2 preface (`PRI * HTTP/2.0`) gets the gRPC handlers, anything else
/// swift-nio's HTTP/1 codec and `HTTP1Handler`. The verified client
/// certificate's CN (the TLS layer's `PeerIdentity`, which arrives before
/// any byte) is passed on to whichever protocol is chosen.
final class ProtocolSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private static let preface = Array("PRI ".utf8)
    private let addGRPC: (any Channel) throws -> Void
    private let service: HTTPService
    private let idleTimeout: TimeAmount
    private var buffered: ByteBuffer?
    private var identity: PeerIdentity?
    /// A connection that has not shown its protocol within `idleTimeout` is closed.
    private var timer: Scheduled<Void>?

    init(service: HTTPService, idleTimeout: TimeAmount, addGRPC: @escaping (any Channel) throws -> Void) {
        self.service = service
        self.idleTimeout = idleTimeout
        self.addGRPC = addGRPC
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: idleTimeout) { channel.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let identity = event as? PeerIdentity { self.identity = identity }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if var held = buffered {
            held.writeBuffer(&bytes)
            bytes = held
        }
        let seen = bytes.getBytes(at: bytes.readerIndex, length: min(bytes.readableBytes, Self.preface.count)) ?? []
        let isHTTP2 = seen == Self.preface
        if seen.count < Self.preface.count && Array(Self.preface.prefix(seen.count)) == seen {
            buffered = bytes  // too few bytes to tell yet (at most 3)
            return
        }
        buffered = nil
        do {
            if isHTTP2 {
                try addGRPC(context.channel)
                context.fireUserInboundEventTriggered(WireTLSIdentity(commonName: identity?.commonName))
            } else {
                try HTTP1Handler.configure(context.channel, service: service, idleTimeout: idleTimeout, commonName: identity?.commonName)
            }
        } catch {
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(wrapInboundOut(bytes))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// Serves HTTP/1.1 requests on one connection (after swift-nio's codec and
/// its pipelining helper, so one request at a time): the body is held up to
/// the service's limit (beyond it, 413 and close), then the request goes to
/// `HTTPService`. A connection with no request in progress for
/// `idleTimeout` — idle, or a request that does not finish arriving — is
/// closed.
final class HTTP1Handler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let service: HTTPService
    private let idleTimeout: TimeAmount
    private let commonName: String?
    private var head: HTTPRequestHead?
    private var body = ByteBuffer()
    private var tooLarge = false
    private var idleTimer: Scheduled<Void>?
    private var context: ChannelHandlerContext?
    private var cancelHandlers: [@Sendable () -> Void] = []

    static func configure(_ channel: any Channel, service: HTTPService, idleTimeout: TimeAmount, commonName: String?) throws {
        let sync = channel.pipeline.syncOperations
        try sync.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true)
        try sync.addHandler(HTTP1Handler(service: service, idleTimeout: idleTimeout, commonName: commonName))
    }

    init(service: HTTPService, idleTimeout: TimeAmount, commonName: String?) {
        self.service = service
        self.idleTimeout = idleTimeout
        self.commonName = commonName
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        armIdleTimer(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        let cancels = cancelHandlers
        cancelHandlers.removeAll()
        for cancel in cancels { cancel() }
        context.fireChannelInactive()
    }

    /// A malformed request: swift-nio's error handler before us has
    /// answered 400 (`Connection: close`); the connection then closes.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func armIdleTimer(_ context: ChannelHandlerContext) {
        idleTimer?.cancel()
        let channel = context.channel
        idleTimer = context.eventLoop.scheduleTask(in: idleTimeout) { channel.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body.clear()
            tooLarge = false
        case .body(var part):
            guard !tooLarge else { return }
            if body.readableBytes + part.readableBytes > service.maxBodyBytes {
                tooLarge = true
                body = ByteBuffer()
                return
            }
            body.writeBuffer(&part)
        case .end:
            guard let head else { return }
            self.head = nil
            idleTimer?.cancel()
            idleTimer = nil
            let responder = HTTP1Responder(handler: NIOLoopBound(self, eventLoop: context.eventLoop), eventLoop: context.eventLoop,
                                           keepAlive: head.isKeepAlive && !tooLarge)
            if tooLarge {
                responder.error(413, "request body too large")
                return
            }
            let request = HTTPRequest(method: head.method.rawValue, target: head.uri, authorization: head.headers.first(name: "authorization"),
                                      body: body, remotePeer: Self.describe(context.channel.remoteAddress),
                                      localPeer: Self.describe(context.channel.localAddress), peerCommonName: commonName)
            body = ByteBuffer()
            service.handle(request, responder)
        }
    }

    static func describe(_ address: SocketAddress?) -> String {
        guard let address, let ip = address.ipAddress else { return "unknown" }
        return ip.contains(":") ? "ipv6:[\(ip)]:\(address.port ?? 0)" : "ipv4:\(ip):\(address.port ?? 0)"
    }

    // MARK: - Writing (event loop)

    fileprivate func write(_ part: HTTPServerResponsePart, flush: Bool, promise: EventLoopPromise<Void>?) {
        guard let context else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        if flush {
            context.writeAndFlush(wrapOutboundOut(part), promise: promise)
        } else {
            context.write(wrapOutboundOut(part), promise: promise)
        }
    }

    fileprivate func ended(keepAlive: Bool) {
        guard let context else { return }
        cancelHandlers.removeAll()
        if keepAlive {
            armIdleTimer(context)
        } else {
            context.close(promise: nil)
        }
    }

    fileprivate func onCancel(_ body: @escaping @Sendable () -> Void) {
        if context == nil { return body() }
        cancelHandlers.append(body)
    }
}

/// Writes one response through its `HTTP1Handler`, always queued on the
/// event loop so that parts keep the order they were produced in.
struct HTTP1Responder: HTTPResponder {
    let handler: NIOLoopBound<HTTP1Handler>
    let eventLoop: any EventLoop
    let keepAlive: Bool

    func head(status: Int, headers: [(String, String)]) {
        var fields = HTTPHeaders(headers)
        if !keepAlive { fields.replaceOrAdd(name: "connection", value: "close") }
        let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status), headers: fields)
        let handler = self.handler
        eventLoop.execute { handler.value.write(.head(head), flush: false, promise: nil) }
    }

    @discardableResult
    func body(_ bytes: ByteBuffer) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        let handler = self.handler
        eventLoop.execute { handler.value.write(.body(.byteBuffer(bytes)), flush: true, promise: promise) }
        return promise.futureResult
    }

    func end() {
        let handler = self.handler
        let keepAlive = self.keepAlive
        eventLoop.execute {
            handler.value.write(.end(nil), flush: true, promise: nil)
            handler.value.ended(keepAlive: keepAlive)
        }
    }

    func onCancel(_ body: @escaping @Sendable () -> Void) {
        let handler = self.handler
        eventLoop.execute { handler.value.onCancel(body) }
    }
}
