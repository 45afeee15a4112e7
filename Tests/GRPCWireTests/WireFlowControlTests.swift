import EtcdProto
import Foundation
import GRPCWire
import NIOCore
import NIOPosix
import Testing

/// Inbound flow control and stream limits seen from a raw HTTP/2 client:
/// a stream's window comes back as messages are handed to the call, not as
/// bytes arrive; a message larger than the window still gets through; and
/// SETTINGS_MAX_CONCURRENT_STREAMS is advertised and enforced.
///
/// "Nothing was sent before X" is checked with a PING as a barrier: the
/// server writes what a DATA frame causes before it answers a PING sent
/// after it, so the PING ACK marks the end of what the DATA caused.
@Suite(.serialized) struct WireFlowControlTests {
    static let windowBytes = 1 << 20  // WireServer's default

    func withServer(maxConcurrentStreams: Int = 10_000, _ body: (Int) throws -> Void) async throws {
        try await withRawServer({ $0.maxConcurrentStreams = maxConcurrentStreams }, body)
    }

    /// A framed Range request of about `bytes` bytes.
    static func bigRequest(_ bytes: Int) -> [UInt8] {
        var request = Etcdserverpb_RangeRequest()
        request.key = Data("big".utf8)
        request.rangeEnd = Data(repeating: 7, count: bytes)
        return Array(try! request.framed().readableBytesView)
    }

    /// DATA frames of at most 16 KiB (the default SETTINGS_MAX_FRAME_SIZE).
    static func dataFrames(_ bytes: ArraySlice<UInt8>, stream: UInt32, endStream: Bool = false) -> [UInt8] {
        var out: [UInt8] = []
        var offset = bytes.startIndex
        while offset < bytes.endIndex {
            let end = min(offset + 16384, bytes.endIndex)
            let last = end == bytes.endIndex
            out += RawFrame(type: RawFrame.data, flags: last && endStream ? RawFrame.endStream : 0, stream: stream,
                            payload: Array(bytes[offset..<end])).bytes()
            offset = end
        }
        return out
    }

    /// Sends a PING and reads up to its ACK: the stream WINDOW_UPDATE
    /// increments seen on the way.
    static func windowUpdatesBeforePingAck(_ connection: RawHTTP2Connection, stream: UInt32, ping: UInt8) throws -> [UInt32] {
        let payload = [UInt8](repeating: ping, count: 8)
        connection.send(RawFrame(type: RawFrame.ping, payload: payload))
        var increments: [UInt32] = []
        var others: [RawFrame] = []
        while let frame = connection.nextFrame() {
            if frame.type == RawFrame.ping && frame.flags & RawFrame.ack != 0 && frame.payload == payload {
                connection.putBack(others)
                return increments
            }
            if frame.type == RawFrame.windowUpdate && frame.stream == stream {
                increments.append(frame.payload.reduce(UInt32(0)) { $0 << 8 | UInt32($1) } & 0x7FFF_FFFF)
            } else {
                others.append(frame)  // the call's response, perhaps
            }
        }
        throw RawHTTP2Connection.Failure.protocolViolation("no PING ACK")
    }

    /// 600,000 bytes of a 700,000-byte message fit the window: nothing comes
    /// back for them (they are not consumed); once the message is whole and
    /// handed over, its bytes come back in one WINDOW_UPDATE.
    @Test func streamWindowReturnsWhenTheMessageIsHandedOver() async throws {
        try await withServer { port in
            let connection = try RawHTTP2Connection(port: port)
            try connection.handshake()
            let message = Self.bigRequest(700_000)
            connection.send(RawFrame(type: RawFrame.headers, flags: RawFrame.endHeaders, stream: 1,
                                     payload: connection.headerBlock(RawHTTP2Connection.requestHeaders())))
            connection.send(Self.dataFrames(message[..<600_000], stream: 1))
            #expect(try Self.windowUpdatesBeforePingAck(connection, stream: 1, ping: 1) == [])
            connection.send(Self.dataFrames(message[600_000...], stream: 1))
            #expect(try Self.windowUpdatesBeforePingAck(connection, stream: 1, ping: 2) == [UInt32(message.count)])
            connection.send(RawFrame(type: RawFrame.data, flags: RawFrame.endStream, stream: 1))
            let response = try connection.response(on: 1)
            #expect(response.last["grpc-status"] == ["0"])
        }
    }

    /// A 2,000,000-byte message on a 1 MiB window: once its length is known,
    /// the server grants what the rest needs beyond the window at once.
    @Test func aMessageLargerThanTheWindowIsGrantedItsRest() async throws {
        try await withServer { port in
            let connection = try RawHTTP2Connection(port: port)
            try connection.handshake()
            let message = Self.bigRequest(2_000_000)
            connection.send(RawFrame(type: RawFrame.headers, flags: RawFrame.endHeaders, stream: 1,
                                     payload: connection.headerBlock(RawHTTP2Connection.requestHeaders())))
            connection.send(Self.dataFrames(message[..<600_000], stream: 1))
            let rest = message.count - 600_000
            let available = Self.windowBytes - 600_000
            #expect(try Self.windowUpdatesBeforePingAck(connection, stream: 1, ping: 1) == [UInt32(rest - available)])
            connection.send(Self.dataFrames(message[600_000...], stream: 1, endStream: true))
            let response = try connection.response(on: 1)
            #expect(response.last["grpc-status"] == ["0"])
            let echoed = try Etcdserverpb_RangeResponse(serializedBytes: Array(response.data.dropFirst(5)))
            #expect(echoed.kvs.first?.value.count == 2_000_000)
        }
    }

    /// A connection's bytes held for incomplete messages are bounded across
    /// its streams: a second 700,000-byte message announced while the first
    /// is incomplete passes a 1 MiB budget and its stream fails with
    /// RESOURCE_EXHAUSTED; the connection stays up, the first call
    /// completes, and once it has the room is there again.
    @Test func incompleteMessagesAreBoundedPerConnection() async throws {
        try await withRawServer({ $0.connectionBufferBytes = 1 << 20 }) { port in
            let connection = try RawHTTP2Connection(port: port)
            try connection.handshake()
            let message = Self.bigRequest(700_000)
            for stream: UInt32 in [1, 3] {
                connection.send(RawFrame(type: RawFrame.headers, flags: RawFrame.endHeaders, stream: stream,
                                         payload: connection.headerBlock(RawHTTP2Connection.requestHeaders())))
                connection.send(Self.dataFrames(message[..<16_384], stream: stream))
            }
            let refused = try connection.response(on: 3)
            #expect(refused.last["grpc-status"] == ["8"])
            #expect(refused.last["grpc-message"].first?.contains("incomplete") == true)
            connection.send(Self.dataFrames(message[16_384...], stream: 1, endStream: true))
            #expect(try connection.response(on: 1).last["grpc-status"] == ["0"])
            connection.send(RawFrame(type: RawFrame.headers, flags: RawFrame.endHeaders, stream: 5,
                                     payload: connection.headerBlock(RawHTTP2Connection.requestHeaders())))
            connection.send(Self.dataFrames(message[...], stream: 5, endStream: true))
            #expect(try connection.response(on: 5).last["grpc-status"] == ["0"])
            #expect(!connection.closedByPeer)
        }
    }

    /// SETTINGS_MAX_CONCURRENT_STREAMS is advertised; a client that opens
    /// one stream too many loses the connection (swift-nio-http2: GOAWAY
    /// PROTOCOL_ERROR), while a new connection is served.
    @Test func maxConcurrentStreamsIsAdvertisedAndEnforced() async throws {
        try await withServer(maxConcurrentStreams: 2) { port in
            let connection = try RawHTTP2Connection(port: port)
            connection.send(RawFrame.preface + RawFrame(type: RawFrame.settings).bytes())
            var advertised: UInt32?
            while advertised == nil, let frame = connection.nextFrame() {
                guard frame.type == RawFrame.settings && frame.flags & RawFrame.ack == 0 else { continue }
                for at in stride(from: 0, to: frame.payload.count, by: 6) where frame.payload[at] == 0 && frame.payload[at + 1] == 3 {
                    advertised = frame.payload[(at + 2)..<(at + 6)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                }
            }
            #expect(advertised == 2)
            connection.send(RawFrame(type: RawFrame.settings, flags: RawFrame.ack))

            var hold = Etcdserverpb_RangeRequest()
            hold.key = Data("hold".utf8)
            let held = Array(try hold.framed().readableBytesView)
            for stream: UInt32 in [1, 3, 5] {
                connection.send(RawFrame(type: RawFrame.headers, flags: RawFrame.endHeaders, stream: stream,
                                         payload: connection.headerBlock(RawHTTP2Connection.requestHeaders())),
                                RawFrame(type: RawFrame.data, flags: RawFrame.endStream, stream: stream, payload: held))
            }
            var goAway: (errorCode: UInt32, debugData: String)?
            while let frame = connection.nextFrame() { goAway = frame.goAway ?? goAway }
            #expect(connection.closedByPeer)
            #expect(goAway?.errorCode == 1)  // PROTOCOL_ERROR

            let response = try WireRequestHeaderTests.call(port: port, RawHTTP2Connection.requestHeaders())
            #expect(response.last["grpc-status"] == ["0"])
        }
    }
}
