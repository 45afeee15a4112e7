import NIOCore
import NIOHPACK
import NIOHTTP2

/// An HTTP/2 request that is not a gRPC call (its content-type is not
/// `application/grpc`), such as curl's `GET /health` on a TLS connection
/// where ALPN chose h2. It reaches `WireServer.Configuration.plainRequests`
/// once its body is complete; GRPCWire knows nothing of what it means.
public struct WirePlainRequest: Sendable {
    /// `:method`, e.g. `GET`.
    public var method: String
    /// `:path`, with its query.
    public var path: String
    /// Every header (pseudo-headers included).
    public var headers: HPACKHeaders
    public var body: ByteBuffer
    public var remotePeer: String
    public var localPeer: String
    /// The client certificate's Common Name (see `WireTLSIdentity`).
    public var peerCommonName: String?
}

/// The answer to a `WirePlainRequest`: a head, body parts, an end. Callable
/// from any thread; the work runs on the connection's event loop in order.
public final class WirePlainResponse: @unchecked Sendable {
    let streamID: HTTP2StreamID
    let connection: WireConnection
    public let eventLoop: any EventLoop

    init(streamID: HTTP2StreamID, connection: WireConnection, eventLoop: any EventLoop) {
        self.streamID = streamID
        self.connection = connection
        self.eventLoop = eventLoop
    }

    /// The status and headers (names in lower case, as HTTP/2 wants them).
    public func head(status: Int, headers: [(String, String)]) {
        connection.submit { $0.writePlainHead(self.streamID, status: status, headers: headers) }
    }

    /// A part of the body; the future completes once it left for the socket
    /// (fails once the stream is gone: the client reset it or left).
    @discardableResult
    public func body(_ bytes: ByteBuffer) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        connection.submit { $0.writePlainBody(self.streamID, bytes, promise: promise) }
        return promise.futureResult
    }

    /// Ends the response (and the stream).
    public func end() {
        connection.submit { $0.endPlain(self.streamID) }
    }

    /// Runs `body` when the stream ends early (reset, connection closed).
    public func onCancel(_ body: @escaping @Sendable () -> Void) {
        connection.submit { $0.onPlainCancel(self.streamID, body) }
    }
}

/// Serves plain requests; must eventually `end()` the response.
public typealias WirePlainHandler = @Sendable (WirePlainRequest, WirePlainResponse) -> Void

/// A plain request on a connection: its body as it arrives, then the answer.
final class PlainStream {
    var request: WirePlainRequest
    var dispatched = false
    var headSent = false
    var cancelHandlers: [@Sendable () -> Void] = []
    init(request: WirePlainRequest) { self.request = request }
}
