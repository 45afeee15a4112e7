import Checksum
import Foundation
import Logging
import NIOCore
import NIOPosix
import TransportSecurity

/// Where TLS refusals on peer connections are logged.
let peerLogger = Logger(label: "etcd")

/// A connection whose hello was answered.
struct DialResult: Sendable {
    var channel: any Channel
    /// The acceptor's first frame: ok, error or (for cluster-info queries) cluster info.
    var response: Frame
    /// Snapshot streams only: completes when the acceptor acks (fails on error frame or close).
    var ack: EventLoopFuture<Void>?
}

/// Connects to `address`, sends `hello` (and `request` right behind it,
/// when given) and waits for the first answer frame, all within `timeout`.
/// The channel is left open on success (the caller closes it after an
/// error answer); `register` may veto it.
func dialStream(
    loop: any EventLoop, target: DialTarget, url: String, security: TLSCredentials?, hello: Hello, maxMessageBytes: Int,
    timeout: Duration, peer: Peer?, register: (@Sendable (any Channel) -> Bool)?, request: ByteBuffer? = nil
) -> EventLoopFuture<DialResult> {
    if target.tlsHost != nil && security == nil {
        return loop.makeFailedFuture(PeerTransportError.tlsNotConfigured(url: url))
    }
    let response = loop.makePromise(of: Frame.self)
    let ack: EventLoopPromise<Void>? = hello.stream == .snapshot ? loop.makePromise() : nil
    let deadline = NIODeadline.now() + timeout.timeAmount
    let bootstrap = ClientBootstrap(group: loop)
        .connectTimeout(timeout.timeAmount)
        .channelOption(.tcpOption(.tcp_nodelay), value: 1)
        .channelOption(.writeBufferWaterMark, value: .init(low: 256 << 10, high: 1 << 20))
        .channelInitializer { channel in
            if let register, !register(channel) {
                return channel.eventLoop.makeFailedFuture(PeerTransportError.stopped)
            }
            return channel.eventLoop.makeCompletedFuture {
                if let host = target.tlsHost, let security {
                    try SecureChannel.configureDialed(channel, credentials: security, host: host, logger: peerLogger)
                }
                try channel.pipeline.syncOperations.addHandlers(
                    ByteToMessageHandler(FrameDecoder(maxMessageBytes: maxMessageBytes)),
                    DialerHandler(response: response, ack: ack, deadline: deadline, peer: peer))
            }
        }
    return bootstrap.connect(to: target.address).flatMap { channel in
        if let request { channel.write(hello.frame(allocator: channel.allocator), promise: nil) }
        return channel.writeAndFlush(request ?? hello.frame(allocator: channel.allocator))
            .flatMap { response.futureResult }
            .map { DialResult(channel: channel, response: $0, ack: ack?.futureResult) }
            .flatMapErrorThrowing { error in
                channel.close(promise: nil)
                throw error
            }
    }.flatMapErrorThrowing { error in
        response.fail(error)
        ack?.fail(error)
        throw error
    }
}

/// The dialer's end of a connection: hands the first answer frame (and for
/// snapshots the ack) to promises, enforces the handshake deadline, and on
/// message streams asks the peer to drain when the channel becomes writable.
final class DialerHandler: ChannelInboundHandler {
    typealias InboundIn = Frame

    private let response: EventLoopPromise<Frame>
    private let ack: EventLoopPromise<Void>?
    private let deadline: NIODeadline
    private let peer: Peer?
    private var answered = false
    private var timer: Scheduled<Void>?

    init(response: EventLoopPromise<Frame>, ack: EventLoopPromise<Void>?, deadline: NIODeadline, peer: Peer?) {
        self.response = response
        self.ack = ack
        self.deadline = deadline
        self.peer = peer
    }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        let response = self.response
        timer = context.eventLoop.scheduleTask(deadline: deadline) {
            response.fail(PeerTransportError.timeout)
            channel.close(promise: nil)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if !answered {
            answered = true
            timer?.cancel()
            response.succeed(frame)
            return
        }
        guard let ack else {
            context.close(promise: nil)  // message streams are one-way
            return
        }
        switch frame.kind {
        case .snapshotAck: ack.succeed()
        case .error: ack.fail(PeerTransportError.rejected(reason: frame.text))
        default:
            ack.fail(PeerTransportError.protocolViolation("unexpected frame on snapshot stream"))
            context.close(promise: nil)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if let peer, context.channel.isWritable { peer.scheduleDrain(context.channel) }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(PeerTransportError.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(error)
        context.close(promise: nil)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        failAll(PeerTransportError.connectionClosed)
    }

    private func failAll(_ error: any Error) {
        timer?.cancel()
        response.fail(error)
        ack?.fail(error)
    }
}

/// Sends one snapshot on its own connection; `run` blocks and so runs on a
/// dedicated thread.
final class SnapshotSender: Sendable {
    /// Body chunk frames in flight before the writer waits.
    static let window = 4

    let core: TransportCore
    let peer: Peer
    let urls: [String]
    let message: Data
    let writeBody: @Sendable (_ write: (UnsafeRawBufferPointer) throws -> Void) throws -> Void

    init(
        core: TransportCore, peer: Peer, urls: [String], message: Data,
        writeBody: @escaping @Sendable (_ write: (UnsafeRawBufferPointer) throws -> Void) throws -> Void
    ) {
        self.core = core
        self.peer = peer
        self.urls = urls
        self.message = message
        self.writeBody = writeBody
    }

    /// True once the receiver acked.
    func run() -> Bool {
        guard let link = connect(), let ack = link.ack else { return false }
        let channel = link.channel
        defer { channel.close(promise: nil) }
        guard peer.setSnapshotChannel(channel) else { return false }
        do {
            try stream(on: channel)
            try ack.wait()
            return true
        } catch {
            return false
        }
    }

    private func connect() -> DialResult? {
        for url in urls {
            guard let target = try? PeerURL.target(url) else { continue }
            guard let dialing = core.dial(
                target: target, url: url, stream: .snapshot, to: peer.id, loop: core.group.next(), owner: nil)
            else { return nil }
            guard let link = try? dialing.wait() else { continue }
            switch link.response.kind {
            case .ok:
                return link
            case .error:
                link.channel.close(promise: nil)
                core.delegate.transport(rejectedBy: peer.id, reason: link.response.text)
                return nil
            default:
                link.channel.close(promise: nil)
            }
        }
        return nil
    }

    /// Writes the message, the body (coalesced into ≤ 1 MiB chunk frames, at
    /// most `window` unwritten at a time) and the end frame.
    private func stream(on channel: any Channel) throws {
        let allocator = channel.allocator
        let chunkFrameBytes = Wire.headerBytes + Wire.maxChunkBytes
        var inFlight = CircularBuffer<EventLoopFuture<Void>>()
        inFlight.append(channel.writeAndFlush(Wire.frame(.snapshotMessage, message, allocator: allocator)))
        var crc: UInt32 = 0
        var total: UInt64 = 0

        func newChunk() -> ByteBuffer {
            var chunk = allocator.buffer(capacity: chunkFrameBytes)
            Wire.writeHeader(.snapshotChunk, payloadLength: 0, to: &chunk)
            return chunk
        }
        var chunk = newChunk()

        func sendChunk() throws {
            let payload = chunk.readableBytes - Wire.headerBytes
            guard payload > 0 else { return }
            chunk.setInteger(UInt32(payload), at: chunk.readerIndex)
            inFlight.append(channel.writeAndFlush(chunk))
            chunk = newChunk()
            while inFlight.count > Self.window { try inFlight.removeFirst().wait() }
        }

        func write(_ bytes: UnsafeRawBufferPointer) throws {
            guard channel.isActive else { throw PeerTransportError.connectionClosed }
            var offset = 0
            while offset < bytes.count {
                let n = min(chunkFrameBytes - chunk.readableBytes, bytes.count - offset)
                let part = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + n)])
                chunk.writeBytes(part)
                crc = CRC32C.update(crc, part)
                total += UInt64(n)
                offset += n
                if chunk.readableBytes == chunkFrameBytes { try sendChunk() }
            }
        }

        try writeBody(write)
        try sendChunk()
        inFlight.append(channel.writeAndFlush(Wire.endFrame(totalBytes: total, crc: crc, allocator: allocator)))
        for future in inFlight { try future.wait() }
    }
}
