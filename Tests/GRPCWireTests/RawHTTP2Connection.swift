import GRPCWire
import NIOPosix
import NIOCore
import NIOHPACK

#if canImport(Glibc)
import Glibc
#endif

/// One HTTP/2 frame as bytes go on the wire.
struct RawFrame {
    static let data: UInt8 = 0, headers: UInt8 = 1, priority: UInt8 = 2, rstStream: UInt8 = 3, settings: UInt8 = 4
    static let pushPromise: UInt8 = 5, ping: UInt8 = 6, goAway: UInt8 = 7, windowUpdate: UInt8 = 8, continuation: UInt8 = 9
    static let endStream: UInt8 = 0x1, ack: UInt8 = 0x1, endHeaders: UInt8 = 0x4

    var type: UInt8
    var flags: UInt8 = 0
    var stream: UInt32 = 0
    var payload: [UInt8] = []

    /// The frame's bytes; `length` overrides the length field (to lie about it).
    func bytes(length: Int? = nil) -> [UInt8] {
        var out: [UInt8] = []
        append(to: &out, length: length)
        return out
    }

    func append(to out: inout [UInt8], length: Int? = nil) {
        let n = length ?? payload.count
        out.reserveCapacity(out.count + 9 + payload.count)
        out.append(UInt8(n >> 16 & 0xFF))
        out.append(UInt8(n >> 8 & 0xFF))
        out.append(UInt8(n & 0xFF))
        out.append(type)
        out.append(flags)
        out.append(UInt8(stream >> 24 & 0xFF))
        out.append(UInt8(stream >> 16 & 0xFF))
        out.append(UInt8(stream >> 8 & 0xFF))
        out.append(UInt8(stream & 0xFF))
        out.append(contentsOf: payload)
    }

    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    static func uint32(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24 & 0xFF), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
    }

    /// GOAWAY's error code and debug data.
    var goAway: (errorCode: UInt32, debugData: String)? {
        guard type == Self.goAway, payload.count >= 8 else { return nil }
        let code = payload[4..<8].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        return (code, String(decoding: payload[8...], as: UTF8.self))
    }
}

/// A blocking loopback socket that speaks raw HTTP/2 frames: for what no
/// client library would send. Reads give up after `receiveTimeoutSeconds`
/// without data (so a test fails instead of hanging).
final class RawHTTP2Connection {
    private let fd: Int32
    private var input: [UInt8] = []
    /// Frames read ahead and put back (`putBack`), returned first.
    private var backlog: [RawFrame] = []
    private var encoder = HPACKEncoder(allocator: ByteBufferAllocator())
    private var decoder = HPACKDecoder(allocator: ByteBufferAllocator())
    private(set) var closedByPeer = false

    init(port: Int, receiveTimeoutSeconds: Int = 10) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure.socket("socket") }
        var timeout = timeval(tv_sec: receiveTimeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw Failure.socket("connect")
        }
    }

    deinit { close(fd) }

    enum Failure: Error { case socket(String), protocolViolation(String) }

    /// Sends everything; false once the peer has closed (EPIPE, ECONNRESET).
    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            offset += n
        }
        return true
    }

    /// Half-closes: the server reads EOF after what was sent.
    func shutdownOutput() {
        shutdown(fd, Int32(SHUT_WR))
    }

    @discardableResult
    func send(_ frames: RawFrame...) -> Bool { send(frames.flatMap { $0.bytes() }) }

    /// The next frame; nil once the connection is closed (or silent for the
    /// receive timeout).
    func nextFrame() -> RawFrame? {
        if !backlog.isEmpty { return backlog.removeFirst() }
        while true {
            if input.count >= 9 {
                let length = Int(input[0]) << 16 | Int(input[1]) << 8 | Int(input[2])
                if input.count >= 9 + length {
                    let stream = input[5..<9].reduce(UInt32(0)) { $0 << 8 | UInt32($1) } & 0x7FFF_FFFF
                    let frame = RawFrame(type: input[3], flags: input[4], stream: stream, payload: Array(input[9..<(9 + length)]))
                    input.removeFirst(9 + length)
                    return frame
                }
            }
            var buffer = [UInt8](repeating: 0, count: 65536)
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 {
                closedByPeer = n == 0 || errno == ECONNRESET
                return nil
            }
            input += buffer[0..<n]
        }
    }

    /// Frames to be returned again by `nextFrame`, first and in order.
    func putBack(_ frames: [RawFrame]) {
        backlog = frames + backlog
    }

    /// Reads (and drops) until the connection closes; true if it did within
    /// the receive timeout.
    func readUntilClosed() -> Bool {
        while nextFrame() != nil {}
        return closedByPeer
    }

    /// Preface and SETTINGS out (with the largest windows, so the server is
    /// never held up sending), the server's SETTINGS in and acknowledged (so
    /// its settings are in force).
    /// With `largestWindows` false, HTTP/2's default windows (64 KiB): the
    /// client then grants more as it reads.
    func handshake(largestWindows: Bool = true) throws {
        let largestWindow: UInt32 = 0x7FFF_FFFF
        let settings = [0, 4] + RawFrame.uint32(largestWindow)  // SETTINGS_INITIAL_WINDOW_SIZE
        let grant = RawFrame(type: RawFrame.windowUpdate, payload: RawFrame.uint32(largestWindow - 65_535))
        let opening = largestWindows ? RawFrame(type: RawFrame.settings, payload: settings).bytes() + grant.bytes()
            : RawFrame(type: RawFrame.settings).bytes()
        guard send(RawFrame.preface + opening) else {
            throw Failure.socket("send")
        }
        while let frame = nextFrame() {
            if frame.type == RawFrame.settings && frame.flags & RawFrame.ack == 0 {
                guard send(RawFrame(type: RawFrame.settings, flags: RawFrame.ack)) else { throw Failure.socket("send") }
                return
            }
        }
        throw Failure.protocolViolation("no SETTINGS from the server")
    }

    /// A header block (HPACK, with this connection's dynamic table).
    func headerBlock(_ headers: [(String, String)]) -> [UInt8] {
        var buffer = ByteBufferAllocator().buffer(capacity: 256)
        try! encoder.encode(headers: HPACKHeaders(headers), to: &buffer)
        return Array(buffer.readableBytesView)
    }

    func decode(_ block: [UInt8]) throws -> HPACKHeaders {
        var buffer = ByteBuffer(bytes: block)
        return try decoder.decodeHeaders(from: &buffer)
    }

    static func requestHeaders(path: String = "/etcdserverpb.KV/Range", method: String = "POST",
                               contentType: String = "application/grpc", te: Bool = true) -> [(String, String)] {
        var headers = [(":method", method), (":scheme", "http"), (":path", path), (":authority", "localhost"),
                       ("content-type", contentType)]
        if te { headers.append(("te", "trailers")) }
        return headers
    }

    /// What the server answered on `stream`, read until it ended the stream.
    struct Response {
        var headers: [HPACKHeaders] = []
        var data: [UInt8] = []
        var reset: UInt32?
        var first: HPACKHeaders { headers.first ?? [:] }
        var last: HPACKHeaders { headers.last ?? [:] }
    }

    func response(on stream: UInt32) throws -> Response {
        var response = Response()
        while let frame = nextFrame() {
            guard frame.stream == stream else { continue }
            switch frame.type {
            case RawFrame.headers:
                response.headers.append(try decode(frame.payload))
                if frame.flags & RawFrame.endStream != 0 { return response }
            case RawFrame.data:
                response.data += frame.payload
                if frame.flags & RawFrame.endStream != 0 { return response }
            case RawFrame.rstStream:
                response.reset = frame.payload.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                return response
            default:
                continue
            }
        }
        throw Failure.protocolViolation("the connection ended before stream \(stream) did")
    }
}

/// A WireServer with the test router (`WireServerTests.router`) on a free
/// loopback port, for raw-socket tests. `body` runs on the calling task and
/// blocks it (in a detached task its expectations would not count for the
/// test), so the suites using it run in a test phase of their own.
func withRawServer(_ configure: (inout WireServer.Configuration) -> Void,
                   _ body: (_ port: Int) throws -> Void) async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    var configuration = WireServer.Configuration(host: "127.0.0.1", port: 0)
    configure(&configuration)
    let server = WireServer(configuration: configuration, router: WireServerTests.router(events: WireServerTests.Events()), group: group)
    let port = try await server.start()
    defer {
        server.stop()
        group.shutdownGracefully { _ in }
    }
    try body(port)
}
