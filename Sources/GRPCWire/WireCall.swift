import NIOCore
import NIOHPACK
import NIOHTTP2

/// A gRPC status: the code and message sent in the trailers of a call.
public struct WireStatus: Error, Sendable, Equatable {
    /// gRPC's 17 status codes, numbered as on the wire (`grpc-status`).
    public enum Code: Int, Sendable, CaseIterable {
        case ok = 0
        case cancelled = 1
        case unknown = 2
        case invalidArgument = 3
        case deadlineExceeded = 4
        case notFound = 5
        case alreadyExists = 6
        case permissionDenied = 7
        case resourceExhausted = 8
        case failedPrecondition = 9
        case aborted = 10
        case outOfRange = 11
        case unimplemented = 12
        case internalError = 13
        case unavailable = 14
        case dataLoss = 15
        case unauthenticated = 16

        /// The code a `grpc-status` value names; UNKNOWN for anything else
        /// (as grpc-go reads an unknown code).
        public init(grpcStatus text: String) {
            self = Int(text).flatMap(Code.init(rawValue:)) ?? .unknown
        }

        /// The `grpc-status` value, without formatting an integer per call.
        var trailerValue: String { Self.trailerValues[rawValue] }
        private static let trailerValues = Code.allCases.map { String($0.rawValue) }
    }

    public var code: Code
    public var message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    public static let ok = WireStatus(code: .ok, message: "")
    public static func cancelled(_ message: String = "call cancelled") -> WireStatus { WireStatus(code: .cancelled, message: message) }
    public static func internalError(_ message: String) -> WireStatus { WireStatus(code: .internalError, message: message) }
    public static func unimplemented(_ message: String) -> WireStatus { WireStatus(code: .unimplemented, message: message) }
    public static func resourceExhausted(_ message: String) -> WireStatus { WireStatus(code: .resourceExhausted, message: message) }
}

/// One call (one HTTP/2 stream). Everything here may be called from any
/// thread: the work hops to the connection's event loop, in call order.
public final class WireCall: @unchecked Sendable {
    /// The method, as in `:path` (`/package.Service/Method`).
    public let path: String
    /// The request headers (metadata).
    public let headers: HPACKHeaders
    /// The remote peer, as gRPC names it (`ipv4:127.0.0.1:5000`).
    public let remotePeer: String
    public let localPeer: String
    public let eventLoop: any EventLoop
    /// The Common Name of the client's verified TLS certificate, when the
    /// connection is TLS and the client presented one (see `WireTLSIdentity`).
    public let peerCommonName: String?

    let streamID: HTTP2StreamID
    /// The connection of a call from an HTTP/2 stream; nil for a local call.
    let connection: WireConnection?
    /// Where a local call's output goes (see `WireCallSink`).
    private let sink: (any WireCallSink)?

    init(path: String, headers: HPACKHeaders, streamID: HTTP2StreamID, connection: WireConnection,
         eventLoop: any EventLoop, remotePeer: String, localPeer: String, peerCommonName: String? = nil) {
        self.path = path
        self.headers = headers
        self.streamID = streamID
        self.connection = connection
        self.sink = nil
        self.eventLoop = eventLoop
        self.remotePeer = remotePeer
        self.localPeer = localPeer
        self.peerCommonName = peerCommonName
    }

    /// A local call: served by a router's method like a call from a client,
    /// its messages and status going to `sink` (on `eventLoop`, in order)
    /// instead of an HTTP/2 stream. An HTTP gateway serves JSON this way.
    public init(path: String, headers: HPACKHeaders, eventLoop: any EventLoop, remotePeer: String, localPeer: String,
                peerCommonName: String?, sink: any WireCallSink) {
        self.path = path
        self.headers = headers
        self.streamID = .rootStream
        self.connection = nil
        self.sink = sink
        self.eventLoop = eventLoop
        self.remotePeer = remotePeer
        self.localPeer = localPeer
        self.peerCommonName = peerCommonName
    }

    /// Runs `body` with a local call's sink on the event loop, always
    /// queued (so output keeps the order it was produced in).
    private func toSink(_ body: @escaping @Sendable (any WireCallSink) -> Void) {
        guard let sink else { return }
        eventLoop.execute { body(sink) }
    }

    /// Sends one response message and ends the call with OK (a unary reply).
    public func respond(_ message: ByteBuffer) {
        guard let connection else {
            return toSink { sink in
                sink.send(message, promise: nil)
                sink.finish(.ok)
            }
        }
        connection.submit { $0.write(self.streamID, message: message, status: .ok, promise: nil) }
    }

    /// Sends one message without ending the call; the future completes once
    /// it has left for the socket (flow control included), which is how a
    /// streaming sender gets backpressure.
    @discardableResult
    public func send(_ message: ByteBuffer) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        guard let connection else {
            toSink { $0.send(message, promise: promise) }
            return promise.futureResult
        }
        connection.submit { $0.write(self.streamID, message: message, status: nil, promise: promise) }
        return promise.futureResult
    }

    /// Sends several messages; the future completes once the last has left.
    @discardableResult
    public func send(contentsOf messages: [ByteBuffer]) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        guard let connection else {
            toSink { sink in
                for (index, message) in messages.enumerated() { sink.send(message, promise: index == messages.count - 1 ? promise : nil) }
                if messages.isEmpty { promise.succeed() }
            }
            return promise.futureResult
        }
        connection.submit { connection in
            for (index, message) in messages.enumerated() {
                connection.write(self.streamID, message: message, status: nil, promise: index == messages.count - 1 ? promise : nil)
            }
            if messages.isEmpty { promise.succeed() }
        }
        return promise.futureResult
    }

    /// Ends the call with `status` (after any messages sent before).
    public func finish(_ status: WireStatus) {
        guard let connection else { return toSink { $0.finish(status) } }
        connection.submit { $0.finish(self.streamID, status: status) }
    }

    /// Runs `body` on the call's event loop (in order with its writes).
    public func onEventLoop(_ body: @escaping @Sendable () -> Void) {
        guard let connection else { return toSink { _ in body() } }
        connection.submit { _ in body() }
    }

    /// Runs `body` on the call's event loop in a later turn, never inline
    /// (also when called on the loop, say from a write's completion inside
    /// a flush); whatever it writes is flushed at the end of that turn.
    public func onEventLoopLater(_ body: @escaping @Sendable () -> Void) {
        // A local call's sink takes what it is given as it comes: a task
        // on the loop is a later turn already.
        guard let connection else { return eventLoop.execute(body) }
        connection.submitLater { _ in body() }
    }
}

/// The output of a local call (`WireCall.init(path:headers:eventLoop:...)`),
/// called on the call's event loop in the order the method produced it.
public protocol WireCallSink: AnyObject, Sendable {
    /// One response message, gRPC-framed (5-byte prefix); `promise`
    /// completes once the sink has taken it (backpressure for streams).
    func send(_ message: ByteBuffer, promise: EventLoopPromise<Void>?)
    /// The end of the call; nothing is sent after it.
    func finish(_ status: WireStatus)
}

/// What a streaming method gets told about its call, on the event loop.
public protocol WireStreamHandler: AnyObject {
    /// One request message, in order.
    func received(_ message: ByteBuffer)
    /// The client closed its side (no more messages).
    func inboundClosed()
    /// The call ended before the handler finished it: the client reset the
    /// stream, the connection closed, or the server finished it for an error.
    func cancelled()
}

/// Told about each call of one method (metrics): called on the call's event
/// loop, so keep it to an atomic add or two.
public protocol WireMethodObserver: AnyObject, Sendable {
    /// The call was routed to its method.
    func recordStarted()
    /// Whether `recordHandled` wants each call's duration (then every call
    /// of the method is timed from the moment it was routed).
    var timesCalls: Bool { get }
    /// The call ended with this gRPC status code (its number); a call the
    /// client or the connection ended first counts as CANCELLED. `duration`:
    /// since the call was routed, when `timesCalls`.
    func recordHandled(code: Int, duration: TimeAmount?)
    /// One request message arrived (its length, without gRPC's 5-byte prefix).
    func recordReceived(messageBytes: Int)
    /// One response message was written (its length, without the prefix).
    func recordSent(messageBytes: Int)
}

/// How a method is served.
public enum WireMethod: Sendable {
    /// Exactly one request message; called on the event loop with it. The
    /// handler must eventually call `respond` or `finish` on the call.
    case unary(@Sendable (WireCall, ByteBuffer) -> Void)
    /// Any number of messages both ways; called on the event loop when the
    /// call opens.
    case streaming(@Sendable (WireCall) -> any WireStreamHandler)
}

/// Methods by `:path`.
public struct WireRouter: Sendable {
    public var methods: [String: WireMethod] = [:]
    public init() {}

    public subscript(path: String) -> WireMethod? {
        get { methods[path] }
        set { methods[path] = newValue }
    }
}

extension ByteBuffer {
    /// A gRPC length-prefixed message (uncompressed) holding `bytes`.
    public static func grpcMessage(_ bytes: some Collection<UInt8>, allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 5 + bytes.count)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt32(bytes.count))
        buffer.writeBytes(bytes)
        return buffer
    }
}

/// Sent down a connection's pipeline (a user inbound event) once a TLS
/// layer in front of the gRPC handlers verified the client's certificate:
/// every call on the connection then carries its Common Name.
public struct WireTLSIdentity: Sendable, Equatable {
    public var commonName: String?
    public init(commonName: String?) { self.commonName = commonName }
}
