import NIOHTTP2

/// What a connection handler (server or client side) accepts.
struct WireLimits {
    /// The largest message accepted, in bytes.
    var maxReceiveMessageBytes: Int
    /// The window granted to each stream and to the connection.
    var windowBytes: Int
    /// Bytes a connection may hold for incomplete request messages, across
    /// all its streams (room is reserved for a whole message once its
    /// length is known). Past it the stream that would grow it fails with
    /// RESOURCE_EXHAUSTED: with etcd's unlimited streams per connection,
    /// nothing else bounds a connection's memory, and a 5-byte prefix
    /// announcing a large message would otherwise reserve its size on every
    /// stream.
    var connectionBufferBytes: Int

    init(maxReceiveMessageBytes: Int, windowBytes: Int, connectionBufferBytes: Int? = nil) {
        self.maxReceiveMessageBytes = maxReceiveMessageBytes
        self.windowBytes = windowBytes
        self.connectionBufferBytes = connectionBufferBytes ?? Self.defaultConnectionBufferBytes(maxReceiveMessageBytes: maxReceiveMessageBytes)
    }

    /// Room for 64 messages of the largest size, and at least 64 MiB.
    static func defaultConnectionBufferBytes(maxReceiveMessageBytes: Int) -> Int {
        max(64 << 20, 64 * (maxReceiveMessageBytes + 5))
    }
}

/// Inbound flow control of one stream or of a connection (swift-nio-http2
/// leaves inbound windows to us in frame mode; it does refuse a peer that
/// overruns the window we granted).
///
/// The peer may send `available` more bytes. Bytes `received` lower it;
/// bytes `consumed` (handed to the handler, or dropped) are given back in
/// one WINDOW_UPDATE once half the window's worth has gathered. So what a
/// stream holds received but not consumed is at most its window, and a
/// handler that consumes slowly slows its client.
///
/// One exception keeps a message larger than the window from deadlocking
/// (grpc-go's `adjustWindow` does the same): when the message in progress
/// needs more than `available`, `expect` advances the difference at once;
/// consumption repays the advance before anything else is given back.
/// Invariants: `available >= 0` for a peer that respects the window (the
/// HTTP/2 handler enforces that), `advanced >= 0`, `unreturned >= 0`.
struct InboundWindow {
    let size: Int
    private(set) var available: Int
    /// Consumed and not yet given back.
    private var unreturned = 0
    /// Granted ahead of consumption by `expect`, not yet repaid.
    private var advanced = 0

    init(size: Int) {
        self.size = size
        available = size
    }

    /// Counts `bytes` arriving (flow-controlled length, padding included).
    mutating func received(_ bytes: Int) {
        available -= bytes
    }

    /// Counts `bytes` consumed; the WINDOW_UPDATE increment to send now, if one is due.
    mutating func consumed(_ bytes: Int) -> Int? {
        precondition(bytes >= 0)
        let repaid = min(advanced, bytes)
        advanced -= repaid
        unreturned += bytes - repaid
        guard unreturned > 0 && unreturned >= size / 2 else { return nil }
        defer { unreturned = 0 }
        available += unreturned
        return unreturned
    }

    /// The message in progress needs `bytes` more to be whole; the increment
    /// to send now if the peer could not otherwise send them.
    mutating func expect(_ bytes: Int) -> Int? {
        guard bytes > available else { return nil }
        let increment = bytes - available
        advanced += increment
        available += increment
        return increment
    }

    /// Counts bytes consumed as they arrive (the connection's window, as in
    /// grpc-go, and the client's response streams): the WINDOW_UPDATE to send, if due.
    mutating func update(after bytes: Int, on stream: HTTP2StreamID) -> HTTP2Frame? {
        received(bytes)
        return consumed(bytes).map { HTTP2Frame(streamID: stream, payload: .windowUpdate(windowSizeIncrement: $0)) }
    }

    /// A new connection's window is 65,535 bytes whatever the settings say:
    /// the WINDOW_UPDATE that opens it to `size`.
    static func connectionGrant(_ size: Int) -> HTTP2Frame? {
        size > 65_535 ? HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: size - 65_535)) : nil
    }
}
