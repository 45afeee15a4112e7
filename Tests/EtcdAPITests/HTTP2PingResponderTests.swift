import EtcdAPI
import HTTP2PingResponder
import EtcdServer
import NIOCore
import NIOEmbedded
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// HTTP/2 frames as bytes, for feeding the responder and a raw socket.
enum H2 {
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    static func frame(type: UInt8, flags: UInt8 = 0, stream: UInt32 = 0, payload: [UInt8]) -> [UInt8] {
        let n = payload.count
        return [UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), type, flags,
                UInt8(stream >> 24 & 0x7F), UInt8(stream >> 16 & 0xFF), UInt8(stream >> 8 & 0xFF), UInt8(stream & 0xFF)] + payload
    }

    static func ping(_ n: UInt64, ack: Bool = false) -> [UInt8] {
        frame(type: 6, flags: ack ? 1 : 0, payload: (0..<8).map { UInt8(n >> (8 * (7 - $0)) & 0xFF) })
    }

    static let settings = frame(type: 4, payload: [])

    /// A header block of literals (no indexing, no Huffman): enough HPACK
    /// to send a request.
    static func literalHeaders(_ headers: [(String, String)]) -> [UInt8] {
        var block: [UInt8] = []
        for (name, value) in headers {
            block.append(0x00)
            block.append(UInt8(name.utf8.count))
            block += Array(name.utf8)
            block.append(UInt8(value.utf8.count))
            block += Array(value.utf8)
        }
        return block
    }

    static func healthCheck(stream: UInt32) -> [UInt8] {
        let headers = literalHeaders([(":method", "POST"), (":scheme", "http"), (":path", "/grpc.health.v1.Health/Check"),
                                      (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers")])
        return frame(type: 1, flags: 4, stream: stream, payload: headers) + frame(type: 0, flags: 1, stream: stream, payload: [0, 0, 0, 0, 0])
    }

    /// Splits a byte stream into frames: (type, flags, payload).
    static func parse(_ bytes: [UInt8]) -> (frames: [(type: UInt8, flags: UInt8, payload: [UInt8])], rest: [UInt8]) {
        var frames: [(UInt8, UInt8, [UInt8])] = []
        var i = 0
        while bytes.count - i >= 9 {
            let length = Int(bytes[i]) << 16 | Int(bytes[i + 1]) << 8 | Int(bytes[i + 2])
            guard bytes.count - i - 9 >= length else { break }
            frames.append((bytes[i + 3], bytes[i + 4], Array(bytes[(i + 9)..<(i + 9 + length)])))
            i += 9 + length
        }
        return (frames, Array(bytes[i...]))
    }
}

@Suite struct HTTP2PingResponderTests {
    /// Whatever the chunking, PINGs are answered and removed, and every other
    /// byte reaches the next handler unchanged and in order.
    @Test(arguments: [1, 2, 5, 9, 16, 17, 64, 4096])
    func answersPingsAndPassesEverythingElse(chunkSize: Int) throws {
        let channel = EmbeddedChannel(handler: HTTP2PingResponder())
        let data = H2.frame(type: 0, flags: 1, stream: 1, payload: Array(repeating: 0x06, count: 40))
        let headers = H2.frame(type: 1, flags: 4, stream: 3, payload: [0x82, 0x86])
        let pingAck = H2.ping(77, ack: true)      // answer to a server ping: passes through
        let oddPing = H2.frame(type: 6, payload: [1, 2, 3])  // malformed: left for the HTTP/2 handler
        var input = H2.preface + H2.settings
        var expectedThrough = input
        for i in 0..<20 {
            input += H2.ping(UInt64(i)) + data
            expectedThrough += data
        }
        input += pingAck + headers + oddPing + H2.ping(999)
        expectedThrough += pingAck + headers + oddPing

        var offset = 0
        while offset < input.count {
            let end = min(offset + chunkSize, input.count)
            try channel.writeInbound(ByteBuffer(bytes: input[offset..<end]))
            offset = end
        }

        var through: [UInt8] = []
        while let buffer = try channel.readInbound(as: ByteBuffer.self) { through += Array(buffer.readableBytesView) }
        #expect(through == expectedThrough)

        var written: [UInt8] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { written += Array(buffer.readableBytesView) }
        let answers = H2.parse(written)
        #expect(answers.rest.isEmpty)
        #expect(answers.frames.count == 21)
        #expect(answers.frames.allSatisfy { $0.type == 6 && $0.flags == 1 })
        #expect(answers.frames.map(\.payload) == ((0..<20).map { UInt64($0) } + [999]).map { Array(H2.ping($0)[9...]) })
        _ = try channel.finish()
    }

    /// On a client's connection the server's bytes start with frames, not a preface.
    @Test func clientSideAnswersServerPings() throws {
        let channel = EmbeddedChannel(handler: HTTP2PingResponder(expectsClientPreface: false))
        let data = H2.frame(type: 0, stream: 1, payload: Array(repeating: 7, count: 30))
        try channel.writeInbound(ByteBuffer(bytes: H2.settings + H2.ping(5) + data))
        var through: [UInt8] = []
        while let buffer = try channel.readInbound(as: ByteBuffer.self) { through += Array(buffer.readableBytesView) }
        #expect(through == H2.settings + data)
        let answer = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(Array(answer.readableBytesView) == H2.ping(5, ack: true))
        _ = try channel.finish()
    }

    /// Over a real socket, with the server's own rules (grpc-go's, see
    /// GRPCWire's ServerKeepalive) instead of this responder: a client that
    /// PINGs after each of 1,000 responses, as Go clients' bandwidth
    /// estimation does (five times swift-nio-http2's default control-frame
    /// limit), gets 1,000 ACKs and no GOAWAY. A client that floods PINGs
    /// with nothing in between is sent away: GOAWAY ENHANCE_YOUR_CALM
    /// "too_many_pings", as grpc-go does.
    @Test(arguments: [true, false])
    func pingFloodOverLoopback(pingsFollowResponses: Bool) async throws {
        let listener = ClientListener(address: try ListenAddress(parsing: "http://127.0.0.1:0"))
        try await withThrowingTaskGroup { group in
            group.addTask { try await listener.serve() }
            defer { listener.stop() }
            let port = try #require(try await listener.boundPort())
            let result = try await Task.detached {
                try RawHTTP2Client.pingFlood(port: port, pings: 1000, afterResponses: pingsFollowResponses)
            }.value
            if pingsFollowResponses {
                #expect(result.goAway == nil)
                #expect(result.acks == 1000)
            } else {
                #expect(result.goAway?.code == 11)
                #expect(result.goAway?.debugData == "too_many_pings")
                #expect(result.acks < 1000)
            }
            listener.stop()
            try await group.waitForAll()
        }
    }
}

/// A blocking loopback socket that speaks just enough HTTP/2 to flood PINGs.
enum RawHTTP2Client {
    struct Result { var acks = 0; var goAway: (code: UInt32, debugData: String)? }

    /// `pings` PINGs: all at once, or each after a health check's response.
    static func pingFlood(port: Int, pings: Int, afterResponses: Bool) throws -> Result {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SocketError.failed("socket") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw SocketError.failed("connect") }

        var result = Result()
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        /// Reads frames until `done` says so (or the connection ends).
        func read(until done: (_ type: UInt8, _ flags: UInt8) -> Bool) {
            while result.goAway == nil {
                let n = recv(fd, &buffer, buffer.count, 0)
                if n <= 0 { return }  // closed, or 10 s without data
                received += buffer[0..<n]
                let parsed = H2.parse(received)
                received = parsed.rest
                var finished = false
                for frame in parsed.frames {
                    if frame.type == 6 && frame.flags & 1 == 1 { result.acks += 1 }
                    if frame.type == 7 && frame.payload.count >= 8 {
                        let code = frame.payload[4..<8].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                        result.goAway = (code, String(decoding: frame.payload[8...], as: UTF8.self))
                    }
                    if done(frame.type, frame.flags) { finished = true }
                }
                if finished { return }
            }
        }

        try sendAll(fd, H2.preface + H2.settings + H2.frame(type: 4, flags: 1, payload: []))
        if afterResponses {
            for i in 0..<pings {
                try sendAll(fd, H2.healthCheck(stream: UInt32(2 * i + 1)))
                read { type, flags in type == 1 && flags & 1 == 1 }  // the call's trailers
                try sendAll(fd, H2.ping(UInt64(i)))
            }
        } else {
            var out: [UInt8] = []
            for i in 0..<pings { out += H2.ping(UInt64(i)) }
            try sendAll(fd, out)
        }
        if result.acks < pings { read { _, _ in result.acks == pings } }
        return result
    }

    private static func sendAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw SocketError.failed("send") }
            offset += n
        }
    }

    enum SocketError: Error { case failed(String) }
}
