import Foundation
import NIOCore

/// Frame kinds (the byte after the length). See the protocol description in
/// `PeerTransport.swift`.
enum FrameKind: UInt8, Sendable {
    case hello = 0x01
    case ok = 0x02
    case error = 0x03
    case message = 0x10
    case snapshotMessage = 0x20
    case snapshotChunk = 0x21
    case snapshotEnd = 0x22
    case snapshotAck = 0x23
    case clusterInfo = 0x30
    case hashKVRequest = 0x31
    case hashKVResponse = 0x32

    /// Largest payload accepted for this kind.
    func payloadLimit(maxMessageBytes: Int) -> Int {
        switch self {
        case .message, .snapshotMessage, .clusterInfo: maxMessageBytes
        case .snapshotChunk: Wire.maxChunkBytes
        case .hello, .ok, .error, .snapshotEnd, .snapshotAck, .hashKVRequest, .hashKVResponse: Wire.maxControlBytes
        }
    }
}

/// What a connection carries, chosen by the dialer's hello.
enum StreamKind: UInt8, Sendable {
    case messages = 1
    case snapshot = 2
    case clusterInfo = 3
    case hashKV = 4
}

enum Wire {
    static let magic: UInt32 = 0x4554_5054  // "ETPT"
    static let version: UInt8 = 1
    static let headerBytes = 5
    static let maxChunkBytes = 1 << 20
    static let maxControlBytes = 4096
    /// `PeerTransportConfig.maxMessageBytes`'s default (used by `fetchClusterInfo`).
    static let defaultMaxMessageBytes = 64 << 20
    /// What the 32-bit length field can describe.
    static let maxFrameBytes = Int(UInt32.max)
    static let helloBytes = 4 + 1 + 8 + 8 + 8 + 1

    /// Appends one frame header (length of `payloadLength`, `kind`) to `buffer`.
    static func writeHeader(_ kind: FrameKind, payloadLength: Int, to buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt32(payloadLength))
        buffer.writeInteger(kind.rawValue)
    }

    /// A whole frame whose payload is `payload`'s bytes.
    static func frame(_ kind: FrameKind, _ payload: Data, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: headerBytes + payload.count)
        writeHeader(kind, payloadLength: payload.count, to: &buffer)
        payload.withUnsafeBytes { _ = buffer.writeBytes($0) }
        return buffer
    }

    /// A frame with an empty payload.
    static func emptyFrame(_ kind: FrameKind, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: headerBytes)
        writeHeader(kind, payloadLength: 0, to: &buffer)
        return buffer
    }

    /// An error frame carrying `reason` as UTF-8.
    static func errorFrame(_ reason: String, allocator: ByteBufferAllocator) -> ByteBuffer {
        let bytes = Array(reason.utf8.prefix(maxControlBytes))
        var buffer = allocator.buffer(capacity: headerBytes + bytes.count)
        writeHeader(.error, payloadLength: bytes.count, to: &buffer)
        buffer.writeBytes(bytes)
        return buffer
    }

    /// The snapshot end frame: total body length and CRC32C of the body.
    static func endFrame(totalBytes: UInt64, crc: UInt32, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: headerBytes + 12)
        writeHeader(.snapshotEnd, payloadLength: 12, to: &buffer)
        buffer.writeInteger(totalBytes)
        buffer.writeInteger(crc)
        return buffer
    }
}

/// One decoded frame.
struct Frame: Sendable {
    var kind: FrameKind
    var payload: ByteBuffer

    /// The payload copied out as `Data`.
    var data: Data {
        payload.withUnsafeReadableBytes { Data($0) }
    }

    /// The payload read as UTF-8 (error reasons).
    var text: String {
        String(decoding: payload.readableBytesView, as: UTF8.self)
    }
}

/// The dialer's first frame.
struct Hello: Sendable, Equatable {
    var clusterID: UInt64
    var fromID: UInt64
    var toID: UInt64
    var stream: StreamKind

    func frame(allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: Wire.headerBytes + Wire.helloBytes)
        Wire.writeHeader(.hello, payloadLength: Wire.helloBytes, to: &buffer)
        buffer.writeInteger(Wire.magic)
        buffer.writeInteger(Wire.version)
        buffer.writeInteger(clusterID)
        buffer.writeInteger(fromID)
        buffer.writeInteger(toID)
        buffer.writeInteger(stream.rawValue)
        return buffer
    }

    /// Parses a hello payload; nil when malformed or of another protocol version.
    init?(payload: ByteBuffer) {
        var p = payload
        guard p.readableBytes == Wire.helloBytes,
            p.readInteger(as: UInt32.self) == Wire.magic,
            p.readInteger(as: UInt8.self) == Wire.version,
            let cluster = p.readInteger(as: UInt64.self),
            let from = p.readInteger(as: UInt64.self),
            let to = p.readInteger(as: UInt64.self),
            let raw = p.readInteger(as: UInt8.self),
            let stream = StreamKind(rawValue: raw)
        else { return nil }
        self.init(clusterID: cluster, fromID: from, toID: to, stream: stream)
    }

    init(clusterID: UInt64, fromID: UInt64, toID: UInt64, stream: StreamKind) {
        self.clusterID = clusterID
        self.fromID = fromID
        self.toID = toID
        self.stream = stream
    }
}

/// Splits the byte stream into frames. The length is checked against the
/// kind's limit before any payload is buffered, so a bad length closes the
/// connection instead of growing a buffer.
struct FrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = Frame
    let maxMessageBytes: Int

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let start = buffer.readerIndex
        guard let length = buffer.getInteger(at: start, as: UInt32.self),
            let rawKind = buffer.getInteger(at: start + 4, as: UInt8.self)
        else { return .needMoreData }
        guard let kind = FrameKind(rawValue: rawKind) else {
            throw PeerTransportError.protocolViolation("unknown frame kind \(rawKind)")
        }
        guard Int(length) <= kind.payloadLimit(maxMessageBytes: maxMessageBytes) else {
            throw PeerTransportError.protocolViolation("frame of \(length) bytes exceeds limit")
        }
        guard buffer.readableBytes >= Wire.headerBytes + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: Wire.headerBytes)
        let payload = buffer.readSlice(length: Int(length))!
        context.fireChannelRead(wrapInboundOut(Frame(kind: kind, payload: payload)))
        return .continue
    }

    mutating func decodeLast(
        context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool
    ) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

/// Where to dial a peer, and whether over TLS.
struct DialTarget: Sendable {
    var address: SocketAddress
    /// The host the peer's certificate must name (the URL's, `localhost`
    /// kept); nil for a plaintext `http://` URL.
    var tlsHost: String?
}

/// A parsed "http://HOST:PORT" or "https://HOST:PORT" URL.
struct PeerURL: Sendable, Equatable {
    var host: String
    var port: Int
    /// `https://`: TLS.
    var secure = false
    /// The host as the URL spells it (before `localhost` → 127.0.0.1).
    var urlHost = ""

    /// Accepts `http://` and `https://` URLs whose host is an
    /// IPv4 literal, a bracketed IPv6 literal or `localhost`; an optional
    /// trailing `/` is ignored.
    init(_ url: String) throws(PeerTransportError) {
        var rest = Substring(url)
        if rest.hasPrefix("http://") {
            rest = rest.dropFirst(7)
        } else if rest.hasPrefix("https://") {
            rest = rest.dropFirst(8)
            secure = true
        } else {
            throw .invalidURL(url)
        }
        while rest.hasSuffix("/") { rest = rest.dropLast() }
        let hostPart: Substring
        let portPart: Substring
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw .invalidURL(url) }
            hostPart = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            guard after.hasPrefix(":") else { throw .invalidURL(url) }
            portPart = after.dropFirst()
        } else {
            guard let colon = rest.lastIndex(of: ":") else { throw .invalidURL(url) }
            hostPart = rest[..<colon]
            portPart = rest[rest.index(after: colon)...]
        }
        guard let port = Int(portPart), (0...65535).contains(port), !hostPart.isEmpty else {
            throw .invalidURL(url)
        }
        host = hostPart == "localhost" ? "127.0.0.1" : String(hostPart)
        urlHost = String(hostPart)
        self.port = port
        _ = try socketAddress(url: url)
    }

    /// Parses `url` into what a dialer needs.
    static func target(_ url: String) throws(PeerTransportError) -> DialTarget {
        let parsed = try PeerURL(url)
        return DialTarget(address: try parsed.socketAddress(url: url), tlsHost: parsed.secure ? parsed.urlHost : nil)
    }

    func socketAddress(url: String) throws(PeerTransportError) -> SocketAddress {
        do {
            return try SocketAddress(ipAddress: host, port: port)
        } catch {
            throw .invalidURL(url)
        }
    }
}

extension Duration {
    /// The same span as a NIO `TimeAmount`.
    var timeAmount: TimeAmount {
        let (seconds, attoseconds) = components
        return .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
