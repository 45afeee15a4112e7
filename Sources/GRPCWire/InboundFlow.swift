import NIOHTTP2

/// What a connection handler (server or client side) accepts.
struct WireLimits {
    /// The largest message accepted, in bytes.
    var maxReceiveMessageBytes: Int
    /// The window granted to each stream and to the connection.
    var windowBytes: Int
}

/// Inbound flow control of one stream or of the connection: counts what
/// arrives and gives it back in one WINDOW_UPDATE once half the window is
/// used (swift-nio-http2 leaves inbound windows to us in frame mode).
struct InboundWindow {
    let size: Int
    private var unacknowledged = 0

    init(size: Int) { self.size = size }

    /// Counts `bytes` received on `stream` (`.rootStream`: the connection);
    /// the WINDOW_UPDATE to send now, if one is due.
    mutating func update(after bytes: Int, on stream: HTTP2StreamID) -> HTTP2Frame? {
        unacknowledged += bytes
        guard unacknowledged >= size / 2 else { return nil }
        defer { unacknowledged = 0 }
        return HTTP2Frame(streamID: stream, payload: .windowUpdate(windowSizeIncrement: unacknowledged))
    }

    /// A new connection's window is 65,535 bytes whatever the settings say:
    /// the WINDOW_UPDATE that opens it to `size`.
    static func connectionGrant(_ size: Int) -> HTTP2Frame? {
        size > 65_535 ? HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: size - 65_535)) : nil
    }
}
