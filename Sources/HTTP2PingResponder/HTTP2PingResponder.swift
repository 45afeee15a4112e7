import NIOCore
import NIOHTTP2

/// Answers HTTP/2 PING frames before they reach `NIOHTTP2Handler`.
///
/// swift-nio-http2 closes a connection (GOAWAY ENHANCE_YOUR_CALM) after 200
/// control frames in 30 s. Go gRPC clients — etcdctl, Kubernetes, etcd's
/// benchmark — send a bandwidth-estimation PING with most responses, so a
/// busy Go client would be disconnected mid-watch. This handler sits between
/// the byte stream (after TLS) and the HTTP/2 handler, answers every client
/// PING with a PING ACK carrying the same 8 bytes, and passes every other
/// byte through untouched. PING ACKs (answers to our own pings) and malformed
/// PINGs go through, so the HTTP/2 handler still sees and judges them.
///
/// The same applies to a Swift client talking to a Go server (etcd itself):
/// install it on the client's connections with `expectsClientPreface: false`.
/// That is where it is used now (EtcdClient, LeaderForwarder, etcd-bench):
/// our own server (GRPCWire) lets swift-nio-http2 answer PINGs and judges
/// them by grpc-go's keepalive rules instead (see `ServerKeepalive`).
public final class HTTP2PingResponder: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    static let prefaceLength = 24
    static let frameHeaderLength = 9
    private static let pingType: UInt8 = 0x6
    private static let ackFlag: UInt8 = 0x1
    private static let pingPayloadLength = 8

    private enum State {
        /// Client connection preface still to pass through.
        case preface(remaining: Int)
        /// Collecting a frame header (up to 9 bytes).
        case header
        /// Passing through the rest of a frame's payload.
        case payload(remaining: Int)
        /// Collecting the 8-byte payload of a PING to answer.
        case ping
    }

    private var state: State
    /// Bytes held back: a partial frame header, or a PING frame being collected.
    private var pending: ByteBuffer?

    /// PINGs answered on this connection (for tests and metrics).
    public private(set) var pingsAnswered = 0

    /// - Parameter expectsClientPreface: true on a server's connections (the
    ///   client's 24-byte preface comes first), false on a client's.
    public init(expectsClientPreface: Bool = true) {
        state = expectsClientPreface ? .preface(remaining: Self.prefaceLength) : .header
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var input = unwrapInboundIn(data)
        var passThrough = context.channel.allocator.buffer(capacity: input.readableBytes)
        var answered = false

        while input.readableBytes > 0 {
            switch state {
            case let .preface(remaining):
                let n = min(remaining, input.readableBytes)
                var slice = input.readSlice(length: n)!
                passThrough.writeBuffer(&slice)
                state = remaining - n == 0 ? .header : .preface(remaining: remaining - n)

            case let .payload(remaining):
                let n = min(remaining, input.readableBytes)
                var slice = input.readSlice(length: n)!
                passThrough.writeBuffer(&slice)
                state = remaining - n == 0 ? .header : .payload(remaining: remaining - n)

            case .header:
                var header = pending ?? context.channel.allocator.buffer(capacity: Self.frameHeaderLength)
                let n = min(Self.frameHeaderLength - header.readableBytes, input.readableBytes)
                var slice = input.readSlice(length: n)!
                header.writeBuffer(&slice)
                guard header.readableBytes == Self.frameHeaderLength else {
                    pending = header
                    continue
                }
                pending = nil
                let view = header.readableBytesView
                let length = Int(view[view.startIndex]) << 16 | Int(view[view.startIndex + 1]) << 8 | Int(view[view.startIndex + 2])
                let type = view[view.startIndex + 3]
                let flags = view[view.startIndex + 4]
                let streamID = view[(view.startIndex + 5)...].reduce(0) { $0 << 8 | UInt32($1) } & 0x7FFF_FFFF
                if type == Self.pingType, flags & Self.ackFlag == 0, length == Self.pingPayloadLength, streamID == 0 {
                    pending = header
                    state = .ping
                } else {
                    passThrough.writeBuffer(&header)
                    state = length == 0 ? .header : .payload(remaining: length)
                }

            case .ping:
                var frame = pending!
                let needed = Self.frameHeaderLength + Self.pingPayloadLength - frame.readableBytes
                let n = min(needed, input.readableBytes)
                var slice = input.readSlice(length: n)!
                frame.writeBuffer(&slice)
                guard n == needed else {
                    pending = frame
                    continue
                }
                pending = nil
                // Same frame back with the ACK flag set: length, type and payload are unchanged.
                frame.setInteger(Self.ackFlag, at: frame.readerIndex + 4)
                context.write(wrapOutboundOut(frame), promise: nil)
                pingsAnswered += 1
                answered = true
                state = .header
            }
        }

        if answered { context.flush() }
        if passThrough.readableBytes > 0 {
            context.fireChannelRead(wrapInboundOut(passThrough))
        }
    }
}

extension HTTP2PingResponder {
    /// Inserts a responder just before the connection's `NIOHTTP2Handler`.
    /// Call on the channel's event loop while it is being set up (for
    /// grpc-swift-nio-transport: from its `channelDebuggingCallbacks`).
    public static func install(on channel: any Channel, expectsClientPreface: Bool) -> EventLoopFuture<Void> {
        channel.eventLoop.submit {
            let pipeline = channel.pipeline.syncOperations
            let http2 = try pipeline.handler(type: NIOHTTP2Handler.self)
            try pipeline.addHandler(HTTP2PingResponder(expectsClientPreface: expectsClientPreface), position: .before(http2))
        }
    }
}
