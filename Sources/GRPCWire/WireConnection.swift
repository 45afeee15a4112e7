import NIOConcurrencyHelpers
import NIOCore
import NIOHPACK
import NIOHTTP2

/// One client connection: sits after `NIOHTTP2Handler` (frame mode, no
/// per-stream child channels) and turns HTTP/2 streams into gRPC calls.
///
/// Threads: owned by the channel's event loop. Every stored `var` is read
/// and written only there (asserted, in debug builds, where work from other
/// threads lands: `drainInbox`, `write`, `finish`). `submit` is the one
/// entry point from other threads and touches only `let`s: `eventLoop`,
/// fixed at init, and the locked `inbox`.
final class WireConnection: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private final class Stream {
        let call: WireCall
        let method: WireMethod
        /// Told of the call's messages and end (metrics); nil when unobserved.
        let observer: (any WireMethodObserver)?
        var handler: (any WireStreamHandler)?
        /// Bytes of a request message not yet complete.
        private(set) var pending: ByteBuffer?
        /// What `pending` holds against the connection's buffer budget.
        private(set) var pendingBytes = 0
        var headersSent = false
        var unaryStarted = false
        var window: InboundWindow
        /// The client's `grpc-timeout`, as a point in time.
        var deadline: NIODeadline?
        /// When the call was routed, if its observer times calls.
        let started: NIODeadline?
        init(call: WireCall, method: WireMethod, observer: (any WireMethodObserver)?, windowBytes: Int) {
            self.call = call
            self.method = method
            self.observer = observer
            started = observer?.timesCalls == true ? .now() : nil
            window = InboundWindow(size: windowBytes)
        }

        /// Tells the observer the call ended with `code`.
        func recordHandled(_ code: WireStatus.Code) {
            guard let observer else { return }
            observer.recordHandled(code: code.rawValue, duration: started.map { .now() - $0 })
        }

        /// Takes the partial message out to append to it without a copy (it
        /// stays accounted until `setPending`).
        func takePending() -> ByteBuffer? {
            defer { pending = nil }
            return pending
        }

        /// Replaces the partial message; the change in bytes held.
        func setPending(_ buffer: ByteBuffer?) -> Int {
            let held = buffer?.capacity ?? 0
            defer { pendingBytes = held }
            pending = buffer
            return held - pendingBytes
        }
    }

    /// Sent down a connection's pipeline to stop it gracefully: GOAWAY, then
    /// close once its open calls have ended.
    struct Drain: Sendable {}

    private var draining = false
    static let drainSettle: TimeAmount = .milliseconds(200)
    private let router: WireRouter
    /// Each routed method's observer, by path (empty: nothing observed).
    private let observers: [String: any WireMethodObserver]
    private let limits: WireLimits
    private var streams: [HTTP2StreamID: Stream] = [:]
    private var context: ChannelHandlerContext?
    private var remotePeer = ""
    private var localPeer = ""
    private var connectionWindow: InboundWindow
    /// Bytes held for incomplete messages across streams (see
    /// `WireLimits.connectionBufferBytes`).
    private var bufferedBytes = 0
    private var needsFlush = false
    /// Whether the connection-level start (window grant, keepalive) ran.
    private var activated = false
    /// The client certificate's Common Name (TLS connections; `WireTLSIdentity`).
    private var peerCommonName: String?
    /// Inside channelRead…channelReadComplete, or inside `drainInbox`: both
    /// flush once at their end, so writes in between only mark the need.
    private var reading = false
    private var drainingInbox = false
    /// The deadline timer (see `scheduleDeadlineSweep`) and when it fires.
    private var deadlineSweep: Scheduled<Void>?
    private var deadlineSweepAt: NIODeadline?

    /// Work submitted from other threads, run in order on the event loop.
    private let inbox = NIOLockedValueBox<[(WireConnection) -> Void]>([])
    /// The channel's loop, fixed before the handler is shared with any call.
    private let eventLoop: any EventLoop

    /// Ping enforcement and liveness (see `ServerKeepalive`), and its timer.
    private var keepalive: ServerKeepalive
    private var keepaliveTimer: Scheduled<Void>?
    /// The highest stream the client opened (for a GOAWAY's last stream id).
    private var lastStreamID = HTTP2StreamID.rootStream
    /// Sent away: GOAWAY written, closing.
    private var closing = false

    /// Requests that are not gRPC (see `WirePlainRequest`), with a body of
    /// at most `plainBodyBytes`; nil: refused as grpc-go refuses them (415).
    private let plainHandler: WirePlainHandler?
    private let plainBodyBytes: Int
    private var plainStreams: [HTTP2StreamID: PlainStream] = [:]

    init(router: WireRouter, limits: WireLimits, keepalive: ServerKeepalive.Policy, eventLoop: any EventLoop,
         plainHandler: WirePlainHandler? = nil, plainBodyBytes: Int = 0, observers: [String: any WireMethodObserver] = [:]) {
        self.router = router
        self.plainHandler = plainHandler
        self.plainBodyBytes = plainBodyBytes
        self.observers = observers
        self.limits = limits
        self.eventLoop = eventLoop
        self.keepalive = ServerKeepalive(policy: keepalive, now: .now())
        connectionWindow = InboundWindow(size: limits.windowBytes)
    }

    // MARK: - Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        precondition(context.eventLoop === eventLoop, "a WireConnection belongs to its channel's event loop")
        self.context = context
        remotePeer = Self.describe(context.channel.remoteAddress)
        localPeer = Self.describe(context.channel.localAddress)
        // Added to a connection that is already up (after a TLS handler or
        // a protocol sniffer): channelActive has passed, so start here.
        if context.channel.isActive { activate(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        activate(context: context)
        context.fireChannelActive()
    }

    private func activate(context: ChannelHandlerContext) {
        guard !activated else { return }
        activated = true
        if let grant = InboundWindow.connectionGrant(limits.windowBytes) {
            context.write(wrapOutboundOut(grant), promise: nil)
            needsFlush = true
        }
        keepalive.read(at: .now())
        scheduleKeepalive(keepalive.firstCheck)
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadlineSweep?.cancel()
        deadlineSweep = nil
        keepaliveTimer?.cancel()
        keepaliveTimer = nil
        let open = streams
        streams.removeAll()
        bufferedBytes = 0
        let plain = plainStreams
        plainStreams.removeAll()
        for stream in plain.values { for cancel in stream.cancelHandlers { cancel() } }
        for stream in open.values {
            stream.recordHandled(.cancelled)
            stream.handler?.cancelled()
        }
        self.context = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        reading = true
        switch frame.payload {
        case .headers(let headers):
            if let stream = streams[frame.streamID] {
                // Trailers from the client end its side.
                if headers.endStream { inboundClosed(stream) }
            } else if let plain = plainStreams[frame.streamID] {
                if headers.endStream { dispatchPlain(frame.streamID, plain) }
            } else {
                open(frame.streamID, headers.headers, endStream: headers.endStream)
            }
        case .data(let payload):
            guard case .byteBuffer(let bytes) = payload.data else { return }
            // The connection's window is given back on arrival (as grpc-go
            // does): what it holds is bounded per stream, and streams by
            // SETTINGS_MAX_CONCURRENT_STREAMS.
            let padding = payload.paddingBytes.map { $0 + 1 } ?? 0
            if let update = connectionWindow.update(after: bytes.readableBytes + padding, on: .rootStream) {
                context.write(wrapOutboundOut(update), promise: nil)
                needsFlush = true
            }
            guard let stream = streams[frame.streamID] else {
                if let plain = plainStreams[frame.streamID] { receivedPlain(bytes, padding: padding, on: frame.streamID, plain, endStream: payload.endStream) }
                return
            }
            stream.window.received(bytes.readableBytes + padding)
            if padding > 0 { consumed(padding, on: stream, endStream: payload.endStream) }
            received(bytes, on: stream, endStream: payload.endStream)
            if payload.endStream, streams[frame.streamID] === stream { inboundClosed(stream) }
        case .ping(_, ack: false):
            // swift-nio-http2 has answered it already (as grpc-go answers before judging).
            if keepalive.pingReceived(at: .now(), openStreams: streams.count) == .tooManyPings {
                sendAway(context, .enhanceYourCalm, debugData: "too_many_pings")
            }
        case .rstStream:
            if let plain = plainStreams.removeValue(forKey: frame.streamID) {
                for cancel in plain.cancelHandlers { cancel() }
            }
            if let stream = removeStream(frame.streamID) {
                stream.recordHandled(.cancelled)
                stream.handler?.cancelled()
                closeIfDrained()
            }
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        reading = false
        keepalive.read(at: .now())
        flushIfNeeded()
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let closed = event as? StreamClosedEvent {
            // Nothing after this handler wants these (one per call).
            if let stream = removeStream(closed.streamID) {
                stream.recordHandled(.cancelled)
                stream.handler?.cancelled()
                closeIfDrained()
            }
            return
        } else if let identity = event as? WireTLSIdentity {
            peerCommonName = identity.commonName
            return
        } else if event is Drain {
            // Already sent away (a GOAWAY may not raise its last stream id).
            if closing { return }
            // GOAWAY first; calls the client opened before it saw it still
            // arrive for a moment, so only then close once none is open.
            let goAway = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: .maxID, errorCode: .noError, opaqueData: nil))
            context.writeAndFlush(wrapOutboundOut(goAway), promise: nil)
            context.eventLoop.scheduleTask(in: Self.drainSettle) {
                self.draining = true
                self.closeIfDrained()
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func closeIfDrained() {
        if draining && streams.isEmpty, let context {
            flushIfNeeded()
            // Half-close: the client reads everything, sees our FIN and
            // closes its side (a full close with unread input would reset
            // the connection and could lose the last responses).
            let halfClosed = context.eventLoop.makePromise(of: Void.self)
            halfClosed.futureResult.whenFailure { _ in context.close(promise: nil) }
            context.close(mode: .output, promise: halfClosed)
        }
    }

    /// GOAWAY with `code`, then close (grpc-go's answer to a ping flood).
    private func sendAway(_ context: ChannelHandlerContext, _ code: HTTP2ErrorCode, debugData: String) {
        guard !closing else { return }
        closing = true
        let goAway = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: lastStreamID, errorCode: code,
                                                                         opaqueData: ByteBuffer(string: debugData)))
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(goAway)).whenComplete { _ in channel.close(promise: nil) }
    }

    // MARK: - Keepalive

    private func scheduleKeepalive(_ action: ServerKeepalive.TimerAction) {
        keepaliveTimer?.cancel()
        keepaliveTimer = nil
        switch action {
        case .none:
            break
        case .close:
            context?.close(promise: nil)
        case .wait(let deadline):
            keepaliveTimer = eventLoop.scheduleTask(deadline: deadline) { [weak self] in self?.keepaliveTimerFired() }
        case .ping(let deadline):
            if let context {
                let ping = HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2PingData(withInteger: 0x6B65_6570_616C_6976), ack: false))
                context.writeAndFlush(wrapOutboundOut(ping), promise: nil)
            }
            keepaliveTimer = eventLoop.scheduleTask(deadline: deadline) { [weak self] in self?.keepaliveTimerFired() }
        }
    }

    private func keepaliveTimerFired() {
        keepaliveTimer = nil
        guard context != nil else { return }
        scheduleKeepalive(keepalive.timerFired(at: .now()))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A protocol error: NIOHTTP2 has sent GOAWAY where it should; drop the connection.
        context.close(promise: nil)
    }

    // MARK: - Calls

    private func open(_ id: HTTP2StreamID, _ headers: HPACKHeaders, endStream: Bool) {
        guard let context else { return }
        lastStreamID = max(lastStreamID, id)
        // What gRPC requires of a request, checked as grpc-go's server does
        // and answered with its statuses (a few header lookups; the full
        // header-block validation stays off, see WireServer.Configuration).
        // `te: trailers` is not required: grpc-go serves requests without it.
        let contentType = headers.first(name: "content-type") ?? ""
        guard contentType == "application/grpc" || contentType == "application/grpc+proto" else {
            if plainHandler != nil {
                openPlain(id, headers, endStream: endStream)
                return
            }
            writeTrailersOnly(id, WireStatus(code: .invalidArgument, message: "invalid gRPC request content-type \"\(contentType)\""),
                              httpStatus: "415", resetIfOpen: !endStream)
            return
        }
        let method = headers.first(name: ":method") ?? ""
        guard method == "POST" else {
            writeTrailersOnly(id, WireStatus.internalError("Received a HEADERS frame with :method \"\(method)\" which should be POST"),
                              httpStatus: "405", resetIfOpen: !endStream)
            return
        }
        let path = headers.first(name: ":path") ?? ""
        guard let handler = router[path] else {
            writeTrailersOnly(id, WireStatus.unimplemented("Unimplemented method '\(path.dropFirst())'"))
            return
        }
        // No decompressor is installed (as in etcd): a request that names
        // any encoding but identity is refused before its first message.
        if let encoding = headers.first(name: "grpc-encoding"), !encoding.isEmpty, encoding != "identity" {
            writeTrailersOnly(id, WireStatus.unimplemented("grpc: Decompressor is not installed for grpc-encoding \"\(encoding)\""))
            return
        }
        var timeout: TimeAmount?
        if let text = headers.first(name: "grpc-timeout") {
            guard let parsed = Self.parseTimeout(text) else {
                writeTrailersOnly(id, WireStatus.internalError("transport: malformed grpc-timeout: \(text)"),
                                  httpStatus: "400", resetIfOpen: !endStream)
                return
            }
            timeout = parsed
        }
        let call = WireCall(path: path, headers: headers, streamID: id, connection: self,
                            eventLoop: context.eventLoop, remotePeer: remotePeer, localPeer: localPeer, peerCommonName: peerCommonName)
        let observer = observers.isEmpty ? nil : observers[path]
        let stream = Stream(call: call, method: handler, observer: observer, windowBytes: limits.windowBytes)
        streams[id] = stream
        observer?.recordStarted()
        // Past about 146 years it is no deadline (and cannot overflow one).
        if let timeout, timeout.nanoseconds < Int64.max / 2 {
            let deadline = NIODeadline.now() + timeout
            stream.deadline = deadline
            if deadlineSweepAt.map({ deadline < $0 }) ?? true { scheduleDeadlineSweep(at: deadline, context) }
        }
        if case .streaming(let makeHandler) = handler {
            stream.handler = makeHandler(call)
        }
        if endStream { inboundClosed(stream) }
    }

    /// Parses whole messages out of `bytes` (after any partial one) and
    /// hands each to the call; the stream's window is given back as they are
    /// handed over, not as they arrive.
    private func received(_ bytes: ByteBuffer, on stream: Stream, endStream: Bool) {
        var bytes = bytes
        if var pending = stream.takePending() {
            // Append to the partial message; parse only once it is whole.
            pending.writeBuffer(&bytes)
            guard hold(pending, on: stream) else { return }
            if pending.readableBytes >= 5, let length = pending.getInteger(at: pending.readerIndex + 1, as: UInt32.self),
               pending.readableBytes < 5 + Int(length), Int(length) <= limits.maxReceiveMessageBytes {
                if !endStream, let increment = stream.window.expect(5 + Int(length) - pending.readableBytes) {
                    sendWindowUpdate(increment, on: stream.call.streamID)
                }
                return
            }
            bytes = pending
            bufferedBytes += stream.setPending(nil)
        }
        while streams[stream.call.streamID] === stream {
            guard bytes.readableBytes >= 5,
                  let compressed = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self),
                  let length = bytes.getInteger(at: bytes.readerIndex + 1, as: UInt32.self) else { break }
            if compressed != 0 {
                // The encoding is identity (anything else was refused at open).
                fail(stream, WireStatus.internalError(compressed == 1
                    ? "grpc: compressed flag set with identity or empty encoding"
                    : "grpc: received unexpected payload format \(compressed)"))
                return
            }
            if Int(length) > limits.maxReceiveMessageBytes {
                fail(stream, WireStatus.resourceExhausted("grpc: received message larger than max (\(length) vs. \(limits.maxReceiveMessageBytes))"))
                return
            }
            guard bytes.readableBytes >= 5 + Int(length) else { break }
            bytes.moveReaderIndex(forwardBy: 5)
            let message = bytes.readSlice(length: Int(length))!
            deliver(message, to: stream)
            consumed(5 + Int(length), on: stream, endStream: endStream)
        }
        if bytes.readableBytes > 0 && streams[stream.call.streamID] === stream {
            // Keep only the unread part (a copy, so the big read buffer is
            // freed), with room for the whole message when its length is known.
            var capacity = bytes.readableBytes
            if bytes.readableBytes >= 5, let length = bytes.getInteger(at: bytes.readerIndex + 1, as: UInt32.self) {
                capacity = max(capacity, 5 + Int(length))
            }
            var rest = ByteBufferAllocator().buffer(capacity: capacity)
            rest.writeBuffer(&bytes)
            guard hold(rest, on: stream) else { return }
            // A message larger than the window must still be able to arrive.
            if !endStream, let increment = stream.window.expect(capacity - rest.readableBytes) {
                sendWindowUpdate(increment, on: stream.call.streamID)
            }
        }
    }

    /// Keeps `pending` as `stream`'s partial message if the connection's
    /// buffer budget allows; otherwise fails the stream and returns false.
    private func hold(_ pending: ByteBuffer, on stream: Stream) -> Bool {
        bufferedBytes += stream.setPending(pending)
        guard bufferedBytes > limits.connectionBufferBytes else { return true }
        bufferedBytes += stream.setPending(nil)
        fail(stream, WireStatus.resourceExhausted(
            "grpc: this connection holds more than \(limits.connectionBufferBytes) bytes of incomplete messages"))
        return false
    }

    /// Forgets a stream, releasing what it held against the buffer budget.
    private func removeStream(_ id: HTTP2StreamID) -> Stream? {
        guard let stream = streams.removeValue(forKey: id) else { return nil }
        bufferedBytes += stream.setPending(nil)
        return stream
    }

    /// `bytes` of `stream` consumed (handed over, or padding): give them back when due.
    private func consumed(_ bytes: Int, on stream: Stream, endStream: Bool) {
        // Once the client has closed its side, or the call has ended, its
        // window no longer matters.
        guard !endStream, streams[stream.call.streamID] === stream else { return }
        if let increment = stream.window.consumed(bytes) {
            sendWindowUpdate(increment, on: stream.call.streamID)
        }
    }

    private func sendWindowUpdate(_ increment: Int, on id: HTTP2StreamID) {
        guard let context else { return }
        context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .windowUpdate(windowSizeIncrement: increment))), promise: nil)
        needsFlush = true
    }

    private func deliver(_ message: ByteBuffer, to stream: Stream) {
        stream.observer?.recordReceived(messageBytes: message.readableBytes)
        switch stream.method {
        case .unary(let handle):
            if stream.unaryStarted {
                fail(stream, WireStatus.internalError("grpc: unary call sent more than one message"))
                return
            }
            stream.unaryStarted = true
            handle(stream.call, message)
        case .streaming:
            stream.handler?.received(message)
        }
    }

    private func inboundClosed(_ stream: Stream) {
        switch stream.method {
        case .unary:
            if !stream.unaryStarted { fail(stream, WireStatus.internalError("grpc: unary call ended without a message")) }
        case .streaming:
            stream.handler?.inboundClosed()
        }
    }

    /// Ends a call for an error found here (not by its handler).
    private func fail(_ stream: Stream, _ status: WireStatus) {
        finish(stream.call.streamID, status: status)
        stream.handler?.cancelled()
    }

    // MARK: - Plain (non-gRPC) requests

    private func openPlain(_ id: HTTP2StreamID, _ headers: HPACKHeaders, endStream: Bool) {
        let request = WirePlainRequest(method: headers.first(name: ":method") ?? "", path: headers.first(name: ":path") ?? "",
                                       headers: headers, body: ByteBuffer(), remotePeer: remotePeer, localPeer: localPeer,
                                       peerCommonName: peerCommonName)
        let plain = PlainStream(request: request)
        plainStreams[id] = plain
        if endStream { dispatchPlain(id, plain) }
    }

    private func receivedPlain(_ bytes: ByteBuffer, padding: Int, on id: HTTP2StreamID, _ plain: PlainStream, endStream: Bool) {
        guard !plain.dispatched else { return }
        var bytes = bytes
        if plain.request.body.readableBytes + bytes.readableBytes > plainBodyBytes {
            // Too large to hold: answered here, and the client told to stop.
            plain.dispatched = true
            writePlainHead(id, status: 413, headers: [("content-type", "text/plain; charset=utf-8")])
            writePlainBody(id, ByteBuffer(string: "request body too large\n"), promise: nil)
            endPlain(id)
            context?.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .rstStream(.noError))), promise: nil)
            return
        }
        let size = bytes.readableBytes + padding
        plain.request.body.writeBuffer(&bytes)
        if endStream {
            dispatchPlain(id, plain)
        } else if size > 0 {
            // Held and counted against the body limit: the stream's window back.
            sendWindowUpdate(size, on: id)
        }
    }

    private func dispatchPlain(_ id: HTTP2StreamID, _ plain: PlainStream) {
        guard !plain.dispatched, let plainHandler, let context else { return }
        plain.dispatched = true
        plainHandler(plain.request, WirePlainResponse(streamID: id, connection: self, eventLoop: context.eventLoop))
    }

    func writePlainHead(_ id: HTTP2StreamID, status: Int, headers: [(String, String)]) {
        eventLoop.assertInEventLoop()
        guard let context, let plain = plainStreams[id], !plain.headSent else { return }
        plain.headSent = true
        var block = HPACKHeaders([(":status", String(status))])
        for (name, value) in headers { block.add(name: name, value: value) }
        context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .headers(.init(headers: block)))), promise: nil)
        needsFlush = true
    }

    func writePlainBody(_ id: HTTP2StreamID, _ bytes: ByteBuffer, promise: EventLoopPromise<Void>?) {
        eventLoop.assertInEventLoop()
        guard let context, plainStreams[id] != nil else {
            promise?.fail(WireStatus.cancelled("the request has ended"))
            return
        }
        if plainStreams[id]?.headSent == false { writePlainHead(id, status: 200, headers: []) }
        context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(bytes))))), promise: promise)
        needsFlush = true
    }

    func endPlain(_ id: HTTP2StreamID) {
        eventLoop.assertInEventLoop()
        guard let context, let plain = plainStreams.removeValue(forKey: id) else { return }
        if !plain.headSent {
            var block = HPACKHeaders([(":status", "200")])
            block.add(name: "content-length", value: "0")
            context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .headers(.init(headers: block, endStream: true)))), promise: nil)
        } else {
            context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)))),
                          promise: nil)
        }
        needsFlush = true
    }

    func onPlainCancel(_ id: HTTP2StreamID, _ body: @escaping @Sendable () -> Void) {
        eventLoop.assertInEventLoop()
        guard let plain = plainStreams[id] else { return body() }
        plain.cancelHandlers.append(body)
    }

    // MARK: - Deadlines

    /// Calls past their client's deadline end with DEADLINE_EXCEEDED,
    /// whatever their handler does later. One timer per connection, set for
    /// the earliest deadline it knows of and never cancelled: calls that end
    /// in time cost nothing (a timer per call cost 15 % of serializable-range
    /// throughput), and when it fires it sweeps and sets itself again.
    private func scheduleDeadlineSweep(at deadline: NIODeadline, _ context: ChannelHandlerContext) {
        deadlineSweep?.cancel()
        deadlineSweepAt = deadline
        deadlineSweep = context.eventLoop.scheduleTask(deadline: deadline) { [weak self] in self?.sweepDeadlines() }
    }

    private func sweepDeadlines() {
        deadlineSweep = nil
        deadlineSweepAt = nil
        guard let context else { return }
        let now = NIODeadline.now()
        var next: NIODeadline?
        for stream in Array(streams.values) {
            // (A handler told of one call's end may have ended another.)
            guard let deadline = stream.deadline, streams[stream.call.streamID] === stream else { continue }
            if deadline <= now {
                fail(stream, WireStatus(code: .deadlineExceeded, message: "context deadline exceeded"))
            } else if next.map({ deadline < $0 }) ?? true {
                next = deadline
            }
        }
        if let next { scheduleDeadlineSweep(at: next, context) }
        flushIfNeeded()
    }

    // MARK: - Writing (event loop)

    /// Queues `work` to run on the event loop; one hop for a burst of work,
    /// one flush after it.
    func submit(_ work: @escaping (WireConnection) -> Void) {
        if eventLoop.inEventLoop && inbox.withLockedValue({ $0.isEmpty }) {
            // Already on the loop with nothing queued before it: no hop.
            work(self)
            if !reading && !drainingInbox { flushIfNeeded() }
            return
        }
        submitLater(work)
    }

    /// Queues `work` for a later turn of the event loop even when called on
    /// it; the writes of that turn are flushed at its end, whatever the
    /// connection is doing when `work` is queued.
    func submitLater(_ work: @escaping (WireConnection) -> Void) {
        let first = inbox.withLockedValue { inbox -> Bool in
            inbox.append(work)
            return inbox.count == 1
        }
        if first {
            eventLoop.execute { self.drainInbox() }
        }
    }

    private func drainInbox() {
        eventLoop.assertInEventLoop()
        drainingInbox = true
        defer { drainingInbox = false }
        while true {
            let batch = inbox.withLockedValue { inbox -> [(WireConnection) -> Void] in
                defer { inbox.removeAll(keepingCapacity: true) }
                return inbox
            }
            if batch.isEmpty { break }
            for work in batch { work(self) }
        }
        flushIfNeeded()
    }

    private static let responseHeaders: HPACKHeaders = [":status": "200", "content-type": "application/grpc"]
    private static let okTrailers: HPACKHeaders = ["grpc-status": "0"]

    func write(_ id: HTTP2StreamID, message: ByteBuffer, status: WireStatus?, promise: EventLoopPromise<Void>?) {
        eventLoop.assertInEventLoop()
        guard let context, let stream = streams[id] else {
            promise?.fail(WireStatus.cancelled("the call has ended"))
            return
        }
        if !stream.headersSent {
            stream.headersSent = true
            context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .headers(.init(headers: Self.responseHeaders)))), promise: nil)
        }
        keepalive.sentHeadersOrData()
        stream.observer?.recordSent(messageBytes: max(0, message.readableBytes - 5))
        // grpc-go forgives a client's PING after every DATA frame it writes
        // out, which can be long after the frame was queued: a burst of
        // messages waits for the client's window, and a Go client sends its
        // bandwidth-estimation PINGs while it arrives. So a stream's message
        // marks again when it has gone out. (A unary response goes out with
        // its trailers at the next flush: no promise on that hot path.)
        var written = promise
        if status == nil {
            let promise = promise ?? context.eventLoop.makePromise(of: Void.self)
            promise.futureResult.whenSuccess { [weak self] in self?.keepalive.sentHeadersOrData() }
            written = promise
        }
        context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(message))))), promise: written)
        needsFlush = true
        if let status { finish(id, status: status) }
    }

    func finish(_ id: HTTP2StreamID, status: WireStatus) {
        eventLoop.assertInEventLoop()
        guard let context, let stream = removeStream(id) else { return }
        defer { closeIfDrained() }
        stream.recordHandled(status.code)
        if !stream.headersSent {
            writeTrailersOnly(id, status)
            return
        }
        keepalive.sentHeadersOrData()
        let trailers = status == .ok ? Self.okTrailers : Self.trailers(status)
        context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .headers(.init(headers: trailers, endStream: true)))), promise: nil)
        needsFlush = true
    }

    /// Ends a call with headers only. A call refused before it started
    /// (`httpStatus` other than 200, as grpc-go answers malformed requests)
    /// whose client side is still open is also reset (NO_ERROR), so its
    /// client stops sending.
    private func writeTrailersOnly(_ id: HTTP2StreamID, _ status: WireStatus, httpStatus: String = "200", resetIfOpen: Bool = false) {
        guard let context else { return }
        keepalive.sentHeadersOrData()
        var headers = Self.responseHeaders
        if httpStatus != "200" { headers.replaceOrAdd(name: ":status", value: httpStatus) }
        headers.add(contentsOf: Self.trailers(status))
        context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .headers(.init(headers: headers, endStream: true)))), promise: nil)
        if resetIfOpen {
            context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .rstStream(.noError))), promise: nil)
        }
        needsFlush = true
    }

    private static func trailers(_ status: WireStatus) -> HPACKHeaders {
        var trailers: HPACKHeaders = ["grpc-status": status.code.trailerValue]
        if !status.message.isEmpty { trailers.add(name: "grpc-message", value: percentEncoded(status.message)) }
        return trailers
    }

    private func flushIfNeeded() {
        guard needsFlush, let context else { return }
        needsFlush = false
        context.flush()
    }

    /// gRPC's `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u,
    /// n). nil when malformed; `.nanoseconds(.max)` when longer than a
    /// TimeAmount holds (99,999,999 hours).
    static func parseTimeout(_ text: String) -> TimeAmount? {
        let utf8 = Array(text.utf8)
        guard (2...9).contains(utf8.count), let unit = utf8.last else { return nil }
        var value: Int64 = 0
        for digit in utf8.dropLast() {
            guard (0x30...0x39).contains(digit) else { return nil }
            value = value * 10 + Int64(digit - 0x30)
        }
        let nanosecondsPerUnit: Int64
        switch unit {
        case UInt8(ascii: "H"): nanosecondsPerUnit = 3_600_000_000_000
        case UInt8(ascii: "M"): nanosecondsPerUnit = 60_000_000_000
        case UInt8(ascii: "S"): nanosecondsPerUnit = 1_000_000_000
        case UInt8(ascii: "m"): nanosecondsPerUnit = 1_000_000
        case UInt8(ascii: "u"): nanosecondsPerUnit = 1_000
        case UInt8(ascii: "n"): nanosecondsPerUnit = 1
        default: return nil
        }
        let (nanoseconds, overflow) = value.multipliedReportingOverflow(by: nanosecondsPerUnit)
        return .nanoseconds(overflow ? .max : nanoseconds)
    }

    /// gRPC's percent-encoding of `grpc-message`: printable ASCII but `%` as is.
    static func percentEncoded(_ message: String) -> String {
        var out = ""
        out.reserveCapacity(message.utf8.count)
        for byte in message.utf8 {
            if byte >= 0x20 && byte <= 0x7E && byte != 0x25 {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out += "%" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true)
            }
        }
        return out
    }

    private static func describe(_ address: SocketAddress?) -> String {
        switch address {
        case .v4(let v4)?: return "ipv4:\(v4.host):\(address?.port ?? 0)"
        case .v6(let v6)?: return "ipv6:[\(v6.host)]:\(address?.port ?? 0)"
        case .unixDomainSocket?: return "unix:\(address?.pathname ?? "")"
        case nil: return "unknown"
        }
    }
}
