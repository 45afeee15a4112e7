import NIOConcurrencyHelpers
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix

/// A lean gRPC client connection, on swift-nio-http2 in frame mode: no child
/// channel, task or async sequence per call. Unary calls are made and
/// completed on the connection's event loop, which is what a load generator
/// wants (etcd-bench drives its clients from completions); streaming calls
/// (`stream`) hand their messages to a `WireStream` that async code reads.
public final class WireClient: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// The largest response message accepted, in bytes.
        public var maxReceiveMessageBytes = 64 * 1024 * 1024
        /// The window granted to each stream and to the connection.
        public var windowBytes = 1024 * 1024
        /// Runs on the new channel before the HTTP/2 handler is added (for
        /// example to put a PING responder in front of it).
        public var onConnect: (@Sendable (any Channel) throws -> Void)?
        /// Headers sent with every call, after gRPC's own (custom metadata).
        public var metadata: [(name: String, value: String)] = []
        /// How long the TCP connect may take.
        public var connectTimeout = TimeAmount.seconds(10)
        /// HTTP/2 keep-alive: while calls are open and nothing was read for
        /// `interval`, send a PING; close the connection when its ACK does
        /// not come within `timeout` (open calls fail with UNAVAILABLE).
        public var keepalive: (interval: TimeAmount, timeout: TimeAmount)?
        /// `:scheme` of every call (`https` when `onConnect` adds TLS).
        public var scheme = "http"

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }

    public let eventLoop: any EventLoop
    private let channel: any Channel
    private let handler: WireClientHandler

    private init(channel: any Channel, handler: WireClientHandler) {
        self.channel = channel
        self.eventLoop = channel.eventLoop
        self.handler = handler
    }

    /// Connects and completes once the TCP connection is up (HTTP/2 settings
    /// are exchanged as calls start).
    public static func connect(_ configuration: Configuration, group: any EventLoopGroup) -> EventLoopFuture<WireClient> {
        let authority = "\(configuration.host):\(configuration.port)"
        let limits = WireLimits(maxReceiveMessageBytes: configuration.maxReceiveMessageBytes, windowBytes: configuration.windowBytes)
        var settings = HTTP2Settings()
        settings.append(HTTP2Setting(parameter: .enablePush, value: 0))
        settings.append(HTTP2Setting(parameter: .initialWindowSize, value: configuration.windowBytes))
        settings.append(HTTP2Setting(parameter: .maxHeaderListSize, value: 16 * 1024))
        var connection = WireServer.defaultConnectionConfiguration
        connection.initialSettings = settings
        let onConnect = configuration.onConnect
        let metadata = configuration.metadata
        let keepalive = configuration.keepalive
        let scheme = configuration.scheme
        return ClientBootstrap(group: group)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try onConnect?(channel)
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(NIOHTTP2Handler(mode: .client, connectionConfiguration: connection))
                    try sync.addHandler(WireClientHandler(authority: authority, scheme: scheme, limits: limits,
                                                                metadata: metadata, keepalive: keepalive))
                }
            }
            .connect(host: configuration.host, port: configuration.port)
            .flatMapThrowing { channel in
                let handler = try channel.pipeline.syncOperations.handler(type: WireClientHandler.self)
                return WireClient(channel: channel, handler: handler)
            }
    }

    /// Starts a unary call. `request` is the framed message (see
    /// `ByteBuffer.grpcMessage`); `completion` gets the response message
    /// without its frame prefix, or the call's status. Call on the event
    /// loop only; completion runs there too. Writes are flushed once the
    /// current read burst ends, or outside one by a task queued behind the
    /// loop's current work (so calls started by a run of tasks share a flush).
    ///
    /// With a `deadline`, a call still open then is reset and completes with
    /// DEADLINE_EXCEEDED. The returned id names the call for `cancel(_:)`.
    /// `metadata` goes after the connection's own (a per-call auth token, say).
    @discardableResult
    public func unary(_ path: String, _ request: ByteBuffer, metadata: [(name: String, value: String)] = [],
                      deadline: NIODeadline? = nil,
                      completion: @escaping (Result<ByteBuffer, WireStatus>) -> Void) -> CallID {
        eventLoop.preconditionInEventLoop()
        return CallID(stream: handler.start(path, request, metadata: metadata, deadline: deadline, completion))
    }

    /// The UNAVAILABLE message of a call that never left: the connection
    /// was closed (or going away) when it was started.
    public static let notSentMessage = "the connection is closed; the call was not sent"
    /// The UNAVAILABLE message of a call above a GOAWAY's last stream id:
    /// the server never handled it.
    public static let notHandledMessage = "the server is going away; the call was not handled"

    /// Names a call started by `unary`.
    public struct CallID: Sendable, Hashable {
        let stream: HTTP2StreamID?
    }

    /// Resets a call still open; it completes with CANCELLED. Event loop only.
    public func cancel(_ call: CallID) {
        eventLoop.preconditionInEventLoop()
        if let stream = call.stream { handler.cancel(stream) }
    }

    /// Opens a streaming call. With `request`, it is the call's only
    /// message and the request side is closed at once (server streaming);
    /// without, send messages with `WireStream.send` and close the side
    /// with `finishSending` (bidirectional). Callable from any thread.
    ///
    /// Flow control holds both ways: a consumer that reads slowly makes
    /// the server wait (window is given back as messages are taken), and
    /// `send` waits while `outboundLimitBytes` or more are queued for a
    /// server that does not take them. With a `deadline`, a stream still
    /// open then is reset and ends with DEADLINE_EXCEEDED.
    ///
    /// `windowBytes` is the stream's receive window, the bytes the server
    /// may send ahead of the consumer (and so what the stream may hold):
    /// the connection's `windowBytes` unless given; a larger one is opened
    /// with a WINDOW_UPDATE at the start (a bulk download whose messages
    /// are as large as the default window would otherwise move one message
    /// per round trip through the consumer).
    public func stream(_ path: String, request: ByteBuffer? = nil, metadata: [(name: String, value: String)] = [],
                       deadline: NIODeadline? = nil, outboundLimitBytes: Int? = nil, windowBytes: Int? = nil) -> WireStream {
        let window = max(windowBytes ?? handler.windowBytes, handler.windowBytes)
        let stream = WireStream(client: self, windowBytes: window, outboundLimit: outboundLimitBytes ?? handler.windowBytes)
        if eventLoop.inEventLoop {
            handler.startStream(stream, path, request: request, metadata: metadata, deadline: deadline, windowBytes: window)
        } else {
            eventLoop.execute {
                self.handler.startStream(stream, path, request: request, metadata: metadata, deadline: deadline, windowBytes: window)
            }
        }
        return stream
    }

    /// Event-loop operations of `WireStream`.
    func send(_ message: ByteBuffer, on id: HTTP2StreamID, outboundLimit: Int, _ done: @escaping (WireStatus?) -> Void) {
        handler.send(message, on: id, outboundLimit: outboundLimit, done)
    }
    func finishSending(_ id: HTTP2StreamID) { handler.finishSending(id) }
    func consumed(_ bytes: Int, on id: HTTP2StreamID) { handler.consumed(bytes, on: id) }
    func cancel(_ id: HTTP2StreamID) { handler.cancel(id) }

    /// A unary call from async code: one hop onto the event loop to start
    /// it and one continuation resumed by its completion. Cancelling the
    /// task resets the call (CANCELLED).
    public func unary(_ path: String, _ request: ByteBuffer, metadata: [(name: String, value: String)] = [],
                      deadline: NIODeadline? = nil) async -> Result<ByteBuffer, WireStatus> {
        let pending = PendingCall()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<ByteBuffer, WireStatus>, Never>) in
                eventLoop.execute {
                    guard !pending.cancelled else { return continuation.resume(returning: .failure(.cancelled())) }
                    pending.id = self.unary(path, request, metadata: metadata, deadline: deadline) { continuation.resume(returning: $0) }
                }
            }
        } onCancel: {
            eventLoop.execute {
                pending.cancelled = true
                if let id = pending.id { self.cancel(id) }
            }
        }
    }

    /// Whether the connection is still usable for new calls (it is open and
    /// the server has not sent GOAWAY).
    public var isOpen: Bool { channel.isActive && !handler.goingAway.withLockedValue { $0 } }

    /// The error that closed the connection (a TLS alert, say), once it
    /// closed because of one. Read it on the event loop, from a completion.
    public var closeError: (any Error)? {
        eventLoop.preconditionInEventLoop()
        return handler.closeError
    }

    /// Closes the connection; calls still open fail with UNAVAILABLE.
    public func close() -> EventLoopFuture<Void> {
        channel.close().recover { _ in }
    }
}

/// A call started from async code: touched on the event loop only.
private final class PendingCall: @unchecked Sendable {
    var id: WireClient.CallID?
    var cancelled = false
}

/// The client side of the wire: a table of open calls keyed by stream id.
final class WireClientHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private final class Call {
        /// A unary call's completion (nil for a stream).
        let completion: ((Result<ByteBuffer, WireStatus>) -> Void)?
        /// A stream's receiving end (nil for a unary call).
        let stream: WireStream?
        /// A unary call's response so far, or a stream's partial message.
        var response: ByteBuffer?
        var status: WireStatus?
        var window: InboundWindow
        var timer: Scheduled<Void>?
        /// A stream whose request side is still open (not half-closed).
        var sending = false
        /// A stream's bytes written but not yet out of the HTTP/2 handler
        /// (which holds DATA frames while the server's window is closed).
        var outboundBytes = 0
        init(windowBytes: Int, completion: ((Result<ByteBuffer, WireStatus>) -> Void)?, stream: WireStream?) {
            self.completion = completion
            self.stream = stream
            window = InboundWindow(size: windowBytes)
        }
    }

    private let authority: String
    private let scheme: String
    private let limits: WireLimits
    var windowBytes: Int { limits.windowBytes }
    private let metadata: [(name: String, value: String)]
    private let keepalive: (interval: TimeAmount, timeout: TimeAmount)?
    private var keepaliveTimer: RepeatedTask?
    private var pingTimeout: Scheduled<Void>?
    private var readSinceTick = false
    /// Set once GOAWAY arrived (read from any thread by `WireClient.isOpen`).
    let goingAway = NIOLockedValueBox(false)
    private(set) var closeError: (any Error)?
    private var calls: [HTTP2StreamID: Call] = [:]
    private var headersByPath: [String: (extra: [(name: String, value: String)], headers: HPACKHeaders)] = [:]
    private var nextStreamID = HTTP2StreamID(1)
    private var context: ChannelHandlerContext?
    private var closed = false
    private var reading = false
    private var needsFlush = false
    private var flushQueued = false
    private var connectionWindow: InboundWindow

    init(authority: String, scheme: String = "http", limits: WireLimits, metadata: [(name: String, value: String)],
         keepalive: (interval: TimeAmount, timeout: TimeAmount)? = nil) {
        self.authority = authority
        self.scheme = scheme
        self.limits = limits
        self.metadata = metadata
        self.keepalive = keepalive
        connectionWindow = InboundWindow(size: limits.windowBytes)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { grantConnectionWindow(context) }
        startKeepalive(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stopKeepalive()
    }

    func channelActive(context: ChannelHandlerContext) {
        grantConnectionWindow(context)
        context.fireChannelActive()
    }

    /// Keep-alive PING payload (any 8 bytes; ours are recognisable).
    private static let keepalivePing = HTTP2PingData(withInteger: 0x6574_6364_6b61_6c76)

    private func startKeepalive(_ context: ChannelHandlerContext) {
        guard let keepalive, keepaliveTimer == nil else { return }
        keepaliveTimer = context.eventLoop.scheduleRepeatedTask(initialDelay: keepalive.interval, delay: keepalive.interval) { [weak self] _ in
            self?.keepaliveTick()
        }
    }

    private func stopKeepalive() {
        keepaliveTimer?.cancel()
        keepaliveTimer = nil
        pingTimeout?.cancel()
        pingTimeout = nil
    }

    /// Pings when calls are open, nothing was read since the last tick and
    /// no ping is outstanding (as grpc-go's client without PermitWithoutStream).
    private func keepaliveTick() {
        defer { readSinceTick = false }
        guard let keepalive, let context, !closed, pingTimeout == nil, !calls.isEmpty, !readSinceTick else { return }
        context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .ping(Self.keepalivePing, ack: false))), promise: nil)
        pingTimeout = context.eventLoop.scheduleTask(in: keepalive.timeout) { [weak self] in
            guard let self, let context = self.context else { return }
            self.closeError = WireStatus(code: .unavailable, message: "keepalive ping not answered within \(keepalive.timeout)")
            context.close(promise: nil)
        }
    }

    private var windowGranted = false
    private func grantConnectionWindow(_ context: ChannelHandlerContext) {
        guard !windowGranted else { return }
        windowGranted = true
        if let grant = InboundWindow.connectionGrant(limits.windowBytes) {
            context.writeAndFlush(wrapOutboundOut(grant), promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        stopKeepalive()
        failAll(WireStatus(code: .unavailable, message: "connection closed"))
        self.context = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if closeError == nil { closeError = error }
        context.close(promise: nil)
    }

    /// Starts a call; returns its stream id (nil when it failed at once).
    func start(_ path: String, _ request: ByteBuffer, metadata extra: [(name: String, value: String)] = [], deadline: NIODeadline? = nil,
               _ completion: @escaping (Result<ByteBuffer, WireStatus>) -> Void) -> HTTP2StreamID? {
        open(path, request, metadata: extra, deadline: deadline, call: { Call(windowBytes: $0, completion: completion, stream: nil) },
             failed: { completion(.failure($0)) })
    }

    /// Opens `stream`: with a `request`, its only message (server
    /// streaming); without, the request side stays open for `send`.
    func startStream(_ stream: WireStream, _ path: String, request: ByteBuffer?, metadata extra: [(name: String, value: String)],
                     deadline: NIODeadline?, windowBytes: Int) {
        let id = open(path, request, metadata: extra, deadline: deadline, call: { _ in
            let call = Call(windowBytes: windowBytes, completion: nil, stream: stream)
            call.sending = request == nil
            return call
        }, failed: { stream.finish($0) })
        stream.id = id
        // The peer starts the stream at the settings' window; open the rest.
        if let id, let context, windowBytes > limits.windowBytes {
            context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .windowUpdate(windowSizeIncrement: windowBytes - limits.windowBytes))),
                          promise: nil)
            flushSoon(context)
        }
    }

    private func open(_ path: String, _ request: ByteBuffer?, metadata extra: [(name: String, value: String)], deadline: NIODeadline?,
                      call makeCall: (Int) -> Call, failed: (WireStatus) -> Void) -> HTTP2StreamID? {
        guard let context, !closed else {
            failed(WireStatus(code: .unavailable, message: WireClient.notSentMessage))
            return nil
        }
        // Stream ids are odd and rise; once they run out, the connection is spent.
        guard Int(Int32(nextStreamID)) < Int(Int32.max) - 2 else {
            failed(WireStatus(code: .unavailable, message: "stream ids exhausted on this connection"))
            return nil
        }
        let id = nextStreamID
        nextStreamID = HTTP2StreamID(Int32(id) + 2)
        let call = makeCall(limits.windowBytes)
        calls[id] = call
        if let deadline {
            call.timer = context.eventLoop.scheduleTask(deadline: deadline) { [weak self] in
                self?.reset(id, WireStatus(code: .deadlineExceeded, message: "context deadline exceeded"))
            }
        }
        let headers = headers(path, extra)
        context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .headers(.init(headers: headers)))), promise: nil)
        if let request {
            context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(request), endStream: true)))), promise: nil)
        }
        flushSoon(context)
        return id
    }

    /// Flushes once the current read burst ends, or outside one by a task
    /// queued behind the loop's current work: calls started (or messages
    /// sent) by a run of tasks share one write.
    private func flushSoon(_ context: ChannelHandlerContext) {
        if reading {
            needsFlush = true
        } else if !flushQueued {
            flushQueued = true
            context.eventLoop.execute { [self] in
                flushQueued = false
                self.context?.flush()
            }
        }
    }

    /// Sends one framed message on an open stream. `done` runs once the
    /// message is queued, or, when `outboundLimit` bytes or more are
    /// already waiting for the server's window, once it has gone out; or
    /// with the stream's status when the stream has ended.
    func send(_ message: ByteBuffer, on id: HTTP2StreamID, outboundLimit: Int, _ done: @escaping (WireStatus?) -> Void) {
        guard let context, let call = calls[id], call.sending else {
            return done(calls[id]?.status ?? WireStatus.cancelled("the stream has ended"))
        }
        let bytes = message.readableBytes
        let blocks = call.outboundBytes >= outboundLimit
        call.outboundBytes += bytes
        let promise = context.eventLoop.makePromise(of: Void.self)
        if blocks { call.stream?.sendersWaiting(+1) }
        let bound = NIOLoopBound((call, done), eventLoop: context.eventLoop)
        promise.futureResult.whenComplete { result in
            let (call, done) = bound.value
            call.outboundBytes -= bytes
            guard blocks else { return }
            call.stream?.sendersWaiting(-1)
            if case .failure = result {
                // It never went out: the call ended first (with OK too, when the server ended it).
                done(call.status.flatMap { $0 == .ok ? nil : $0 } ?? WireStatus.cancelled("the stream has ended"))
            } else {
                done(nil)
            }
        }
        context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(message))))), promise: promise)
        flushSoon(context)
        if !blocks { done(nil) }
    }

    /// Closes a stream's request side (END_STREAM on an empty DATA frame).
    func finishSending(_ id: HTTP2StreamID) {
        guard let context, let call = calls[id], call.sending else { return }
        call.sending = false
        let empty = context.channel.allocator.buffer(capacity: 0)
        context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(empty), endStream: true)))), promise: nil)
        flushSoon(context)
    }

    /// The consumer of stream `id` took `bytes` of messages: give the
    /// server window back when due.
    func consumed(_ bytes: Int, on id: HTTP2StreamID) {
        guard let context, let call = calls[id], let increment = call.window.consumed(bytes) else { return }
        context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .windowUpdate(windowSizeIncrement: increment))), promise: nil)
        flushSoon(context)
    }

    /// Ends an open call with `status`, resetting its stream.
    private func reset(_ id: HTTP2StreamID, _ status: WireStatus) {
        guard let call = calls[id], let context else { return }
        call.status = status
        call.response = nil
        call.sending = false
        context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .rstStream(.cancel))), promise: nil)
        if reading { needsFlush = true } else { context.flush() }
        end(id)
    }

    func cancel(_ id: HTTP2StreamID) {
        reset(id, .cancelled("context canceled"))
    }

    /// The request headers of `path` with the call's own metadata, cached
    /// per path while that metadata stays the same (a token, say).
    private func headers(_ path: String, _ extra: [(name: String, value: String)]) -> HPACKHeaders {
        if let cached = headersByPath[path], cached.extra.elementsEqual(extra, by: { $0.name == $1.name && $0.value == $1.value }) {
            return cached.headers
        }
        var headers: HPACKHeaders = [
            ":method": "POST", ":scheme": scheme, ":path": path, ":authority": authority,
            "content-type": "application/grpc", "te": "trailers",
        ]
        for (name, value) in metadata { headers.add(name: name, value: value) }
        for (name, value) in extra { headers.add(name: name, value: value) }
        if headersByPath.count >= 256 { headersByPath.removeAll() }
        headersByPath[path] = (extra, headers)
        return headers
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        reading = true
        readSinceTick = true
        switch frame.payload {
        case .headers(let headers):
            guard let call = calls[frame.streamID] else { return }
            if let code = headers.headers.first(name: "grpc-status") {
                // Trailers, or Trailers-Only.
                let message = headers.headers.first(name: "grpc-message").map(Self.percentDecoded) ?? ""
                call.status = WireStatus(code: WireStatus.Code(grpcStatus: code), message: message)
            } else if let status = headers.headers.first(name: ":status"), status != "200" {
                call.status = WireStatus(code: Self.grpcCode(httpStatus: status), message: "HTTP status \(status)")
            }
            if headers.endStream { end(frame.streamID) }
        case .data(let payload):
            guard case .byteBuffer(var bytes) = payload.data else { return }
            let padding = payload.paddingBytes.map { $0 + 1 } ?? 0
            if let update = connectionWindow.update(after: bytes.readableBytes + padding, on: .rootStream) {
                context.write(wrapOutboundOut(update), promise: nil)
                needsFlush = true
            }
            guard let call = calls[frame.streamID] else { return }
            if let stream = call.stream {
                call.window.received(bytes.readableBytes + padding)
                if padding > 0 { consumed(padding, on: frame.streamID) }
                received(bytes, on: frame.streamID, call, stream, endStream: payload.endStream)
                if payload.endStream { end(frame.streamID) }
                return
            }
            if !payload.endStream, let update = call.window.update(after: bytes.readableBytes + padding, on: frame.streamID) {
                context.write(wrapOutboundOut(update), promise: nil)
                needsFlush = true
            }
            if call.response == nil {
                call.response = bytes
            } else {
                call.response!.writeBuffer(&bytes)
            }
            if call.response!.readableBytes > limits.maxReceiveMessageBytes + 5 {
                call.status = WireStatus.resourceExhausted("grpc: received message larger than max")
                context.write(wrapOutboundOut(HTTP2Frame(streamID: frame.streamID, payload: .rstStream(.cancel))), promise: nil)
                needsFlush = true
                end(frame.streamID)
                return
            }
            if payload.endStream { end(frame.streamID) }
        case .rstStream(let code):
            if let call = calls[frame.streamID], call.status == nil {
                call.status = WireStatus(code: code == .refusedStream ? .unavailable : .cancelled, message: "stream reset by the server: \(code)")
            }
            end(frame.streamID)
        case .goAway(let lastStreamID, _, _):
            // Calls above the last stream the server will handle never ran.
            for id in calls.keys where id > lastStreamID {
                calls[id]?.status = WireStatus(code: .unavailable, message: WireClient.notHandledMessage)
                end(id)
            }
            closed = true
            goingAway.withLockedValue { $0 = true }
        case .ping(let data, ack: true) where data == Self.keepalivePing:
            pingTimeout?.cancel()
            pingTimeout = nil
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        reading = false
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let closedStream = event as? StreamClosedEvent, calls[closedStream.streamID] != nil {
            end(closedStream.streamID)
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Completes a call: OK with exactly one whole message, or its status.
    private func end(_ id: HTTP2StreamID) {
        guard let call = calls.removeValue(forKey: id) else { return }
        call.timer?.cancel()
        var status = call.status ?? WireStatus(code: .internalError, message: "the server ended the call without a status")
        if let stream = call.stream {
            if call.sending, let context {
                // The server ended the call while our side was open: close
                // it too, or the stream would stay half open.
                call.sending = false
                context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .rstStream(.noError))), promise: nil)
                flushSoon(context)
            }
            if status == .ok, let partial = call.response, partial.readableBytes > 0 {
                status = WireStatus.internalError("the server ended the stream in the middle of a message")
            }
            call.response = nil
            stream.finish(status)
            return
        }
        guard let completion = call.completion else { return }
        guard status == .ok else {
            completion(.failure(status))
            return
        }
        guard var response = call.response, response.readableBytes >= 5,
              let compressed = response.readInteger(as: UInt8.self), compressed == 0,
              let length = response.readInteger(as: UInt32.self), response.readableBytes == Int(length) else {
            completion(.failure(WireStatus(code: .internalError, message: "the response is not one uncompressed gRPC message")))
            return
        }
        completion(.success(response))
    }

    /// Parses whole messages out of a stream's bytes (after any partial
    /// one) and hands them to its consumer; their window is given back as
    /// the consumer takes them (`consumed(_:on:)`), so what a stream holds
    /// is bounded by its window (and one message larger than it).
    private func received(_ bytes: ByteBuffer, on id: HTTP2StreamID, _ call: Call, _ stream: WireStream, endStream: Bool) {
        var bytes = bytes
        if var partial = call.response {
            partial.writeBuffer(&bytes)
            bytes = partial
            call.response = nil
        }
        var messages: [ByteBuffer] = []
        while bytes.readableBytes >= 5,
              let compressed = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self),
              let length = bytes.getInteger(at: bytes.readerIndex + 1, as: UInt32.self) {
            if compressed != 0 {
                return fail(id, WireStatus.internalError("grpc: compressed flag set with identity or empty encoding"), delivering: messages, to: stream)
            }
            if Int(length) > limits.maxReceiveMessageBytes {
                return fail(id, WireStatus.resourceExhausted("grpc: received message larger than max (\(length) vs. \(limits.maxReceiveMessageBytes))"),
                            delivering: messages, to: stream)
            }
            guard bytes.readableBytes >= 5 + Int(length) else { break }
            bytes.moveReaderIndex(forwardBy: 5)
            messages.append(bytes.readSlice(length: Int(length))!)
        }
        if !messages.isEmpty { stream.deliver(messages) }
        guard bytes.readableBytes > 0 else { return }
        var expected = bytes.readableBytes
        if bytes.readableBytes >= 5, let length = bytes.getInteger(at: bytes.readerIndex + 1, as: UInt32.self) {
            expected = 5 + Int(length)
        }
        // Keep only the unread part (a copy, so the read buffer is freed).
        var rest = ByteBufferAllocator().buffer(capacity: expected)
        rest.writeBuffer(&bytes)
        call.response = rest
        // A message larger than the window must still be able to arrive.
        if !endStream, let increment = call.window.expect(expected - rest.readableBytes), let context {
            context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .windowUpdate(windowSizeIncrement: increment))), promise: nil)
            needsFlush = true
        }
    }

    /// Ends stream `id` for an error found here, after the messages parsed before it.
    private func fail(_ id: HTTP2StreamID, _ status: WireStatus, delivering messages: [ByteBuffer], to stream: WireStream) {
        if !messages.isEmpty { stream.deliver(messages) }
        reset(id, status)
    }

    private func failAll(_ status: WireStatus) {
        let open = calls
        calls.removeAll()
        for call in open.values {
            call.timer?.cancel()
            if let stream = call.stream { stream.finish(status) } else { call.completion?(.failure(status)) }
        }
    }

    private static func grpcCode(httpStatus: String) -> WireStatus.Code {
        switch httpStatus {
        case "400": return .internalError
        case "401": return .unauthenticated
        case "403": return .permissionDenied
        case "404": return .unimplemented
        case "429", "502", "503", "504": return .unavailable
        default: return .unknown
        }
    }

    static func percentDecoded(_ value: String) -> String {
        guard value.utf8.contains(0x25) else { return value }
        var bytes: [UInt8] = []
        var utf8 = Array(value.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == 0x25, utf8.count >= 2,
               let decoded = UInt8(String(decoding: utf8.prefix(2), as: UTF8.self), radix: 16) {
                bytes.append(decoded)
                utf8 = utf8.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A streaming call of a `WireClient` (see `WireClient.stream`): an
/// `AsyncSequence` of the messages the server sends (without their 5-byte
/// prefix), ending when the call ends with OK and throwing its `WireStatus`
/// otherwise (after the messages that came before it). One consumer only.
///
/// What it holds unread is bounded by the stream's window (and one message
/// larger than it): the server gets window back only as messages are
/// taken, so a slow consumer makes it wait.
public final class WireStream: AsyncSequence, @unchecked Sendable {
    public typealias Element = ByteBuffer

    private let client: WireClient
    /// Taken bytes whose window is given back in one go: a quarter window.
    private let reportThreshold: Int
    private let outboundLimit: Int
    /// The call's stream id: set on the event loop when it opens (nil when it failed at once).
    var id: HTTP2StreamID?

    private struct Inbox {
        var messages = CircularBuffer<ByteBuffer>()
        /// Bytes of `messages`, prefixes included.
        var bufferedBytes = 0
        /// Bytes taken whose window is not given back yet (given back in
        /// batches of a quarter window, to hop onto the loop rarely).
        var unreported = 0
        var status: WireStatus?
        var sendersWaiting = 0
        /// The end was reported to the consumer.
        var ended = false
        var waiter: CheckedContinuation<ByteBuffer?, any Error>?
    }
    private let inbox = NIOLockedValueBox(Inbox())

    init(client: WireClient, windowBytes: Int, outboundLimit: Int) {
        self.client = client
        reportThreshold = Swift.max(1, windowBytes / 4)
        self.outboundLimit = outboundLimit
    }

    /// Bytes received and not yet taken by the consumer.
    public var bufferedBytes: Int { inbox.withLockedValue { $0.bufferedBytes } }

    /// Senders waiting in `send` for queued messages to go out.
    public var sendersWaiting: Int { inbox.withLockedValue { $0.sendersWaiting } }

    func sendersWaiting(_ change: Int) { inbox.withLockedValue { $0.sendersWaiting += change } }

    /// The call's status once it has ended.
    public var status: WireStatus? { inbox.withLockedValue { $0.status } }

    /// Sends one framed message (see `ByteBuffer.grpcMessage`). Returns once
    /// it is queued, or, while the server is not taking what was queued
    /// before (`outboundLimitBytes`), once it has gone out. Throws the
    /// call's status when it has ended. Cancelling the waiting task cancels the stream.
    public func send(_ message: ByteBuffer) async throws {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                client.eventLoop.execute {
                    guard let id = self.id else {
                        return continuation.resume(throwing: self.status ?? WireStatus(code: .unavailable, message: WireClient.notSentMessage))
                    }
                    self.client.send(message, on: id, outboundLimit: self.outboundLimit) { status in
                        if let status { continuation.resume(throwing: status) } else { continuation.resume() }
                    }
                }
            }
        } onCancel: {
            cancel()
        }
    }

    /// Closes the request side: the server sees the end of its messages.
    public func finishSending() {
        client.eventLoop.execute {
            if let id = self.id { self.client.finishSending(id) }
        }
    }

    /// Resets the call (RST_STREAM CANCEL); it ends with CANCELLED.
    public func cancel() {
        client.eventLoop.execute {
            if let id = self.id { self.client.cancel(id) }
        }
    }

    /// The next message, nil at an OK end; throws the call's status.
    func next() async throws -> ByteBuffer? {
        enum Next { case message(ByteBuffer, report: Int?), end(WireStatus?), wait }
        func take(_ inbox: inout Inbox) -> Next {
            if let message = inbox.messages.popFirst() {
                let bytes = 5 + message.readableBytes
                inbox.bufferedBytes -= bytes
                inbox.unreported += bytes
                guard inbox.unreported >= reportThreshold else { return .message(message, report: nil) }
                defer { inbox.unreported = 0 }
                return .message(message, report: inbox.unreported)
            }
            guard let status = inbox.status else { return .wait }
            if inbox.ended { return .end(nil) }
            inbox.ended = true
            return .end(status == .ok ? nil : status)
        }
        func result(_ next: Next) throws -> ByteBuffer?? {
            switch next {
            case .message(let message, let report):
                if let report { reportConsumed(report) }
                return .some(message)
            case .end(let status):
                if let status { throw status }
                return .some(nil)
            case .wait:
                return nil
            }
        }
        if let ready = try result(inbox.withLockedValue { take(&$0) }) { return ready }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ByteBuffer?, any Error>) in
                let next = inbox.withLockedValue { inbox -> Next in
                    let next = take(&inbox)
                    if case .wait = next { inbox.waiter = continuation }
                    return next
                }
                do {
                    if let ready = try result(next) { continuation.resume(returning: ready) }
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        } onCancel: {
            cancel()
        }
    }

    private func reportConsumed(_ bytes: Int) {
        if client.eventLoop.inEventLoop {
            if let id { client.consumed(bytes, on: id) }
        } else {
            client.eventLoop.execute {
                if let id = self.id { self.client.consumed(bytes, on: id) }
            }
        }
    }

    /// Messages parsed on the event loop, in order.
    func deliver(_ messages: [ByteBuffer]) {
        let handed = inbox.withLockedValue { inbox -> (CheckedContinuation<ByteBuffer?, any Error>, ByteBuffer, Int?)? in
            var rest = messages[...]
            var handed: (CheckedContinuation<ByteBuffer?, any Error>, ByteBuffer, Int?)?
            if let waiter = inbox.waiter, let first = rest.popFirst() {
                // The consumer waits on an empty buffer: the first goes straight to it.
                inbox.waiter = nil
                inbox.unreported += 5 + first.readableBytes
                var report: Int?
                if inbox.unreported >= reportThreshold {
                    report = inbox.unreported
                    inbox.unreported = 0
                }
                handed = (waiter, first, report)
            }
            for message in rest {
                inbox.messages.append(message)
                inbox.bufferedBytes += 5 + message.readableBytes
            }
            return handed
        }
        if let (waiter, message, report) = handed {
            if let report { reportConsumed(report) }
            waiter.resume(returning: message)
        }
    }

    /// The call ended (on the event loop): the consumer gets what is
    /// buffered, then this.
    func finish(_ status: WireStatus) {
        let waiter = inbox.withLockedValue { inbox -> CheckedContinuation<ByteBuffer?, any Error>? in
            guard inbox.status == nil else { return nil }
            inbox.status = status
            guard let waiter = inbox.waiter else { return nil }
            inbox.waiter = nil
            inbox.ended = true
            return waiter
        }
        guard let waiter else { return }
        if status == .ok { waiter.resume(returning: nil) } else { waiter.resume(throwing: status) }
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let stream: WireStream
        public mutating func next() async throws -> ByteBuffer? { try await stream.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(stream: self) }
}
