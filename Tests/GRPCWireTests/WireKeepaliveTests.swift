import EtcdProto
import Foundation
import GRPCWire
import NIOCore
import NIOPosix
import Testing

/// Keepalive over a raw HTTP/2 socket, as grpc-go's server behaves with
/// etcd's settings: a ping flood is sent away with GOAWAY ENHANCE_YOUR_CALM
/// "too_many_pings"; an idle connection is pinged, and closed if it then
/// stays silent.
@Suite(.serialized) struct WireKeepaliveTests {
    func withServer(_ keepalive: WireServer.Configuration.Keepalive, _ body: (Int) throws -> Void) async throws {
        try await withRawServer({ $0.keepalive = keepalive }, body)
    }

    static func ping(_ n: UInt8, ack: Bool = false) -> RawFrame {
        RawFrame(type: RawFrame.ping, flags: ack ? RawFrame.ack : 0, payload: [UInt8](repeating: n, count: 8))
    }

    /// With a call open, ten PINGs back to back: the first four are
    /// answered (one allowed, grpc-go's two strikes, and the third strike),
    /// then GOAWAY ENHANCE_YOUR_CALM "too_many_pings" and the connection closes.
    @Test func aPingFloodIsSentAway() async throws {
        try await withServer(.init()) { port in
            let connection = try RawHTTP2Connection(port: port)
            try connection.handshake()
            var hold = Etcdserverpb_RangeRequest()
            hold.key = Data("hold".utf8)
            connection.send(RawFrame(type: RawFrame.headers, flags: RawFrame.endHeaders, stream: 1,
                                     payload: connection.headerBlock(RawHTTP2Connection.requestHeaders())),
                            RawFrame(type: RawFrame.data, flags: RawFrame.endStream, stream: 1,
                                     payload: Array(try hold.framed().readableBytesView)))
            connection.send((1...10).flatMap { Self.ping($0).bytes() })
            var acks: [UInt8] = []
            var goAway: (errorCode: UInt32, debugData: String)?
            while goAway == nil, let frame = connection.nextFrame() {
                if frame.type == RawFrame.ping && frame.flags & RawFrame.ack != 0 { acks.append(frame.payload[0]) }
                goAway = frame.goAway
            }
            #expect(acks == [1, 2, 3, 4])
            #expect(goAway?.errorCode == 11)
            #expect(goAway?.debugData == "too_many_pings")
            #expect(connection.readUntilClosed())
        }
    }

    /// A burst of messages larger than the client's window leaves as the
    /// client grants room. A client that PINGs as a Go client estimating
    /// bandwidth does (after a DATA frame, once its last PING is answered)
    /// is not sent away: data has gone out since its last PING (grpc-go
    /// forgives a PING after each DATA frame it writes; counting only when
    /// the burst was queued sent Go's `etcdctl snapshot save` away).
    @Test func pingsWhileABurstDrainsAreNotStrikes() async throws {
        try await withServer(.init()) { port in
            let connection = try RawHTTP2Connection(port: port)
            try connection.handshake(largestWindows: false)
            connection.send(RawFrame(type: RawFrame.headers, flags: RawFrame.endHeaders, stream: 1,
                                     payload: connection.headerBlock(RawHTTP2Connection.requestHeaders(path: "/etcdserverpb.Maintenance/Snapshot"))),
                            RawFrame(type: RawFrame.data, flags: RawFrame.endStream, stream: 1,
                                     payload: Array(try Etcdserverpb_SnapshotRequest().framed().readableBytesView)))
            var received = 0
            var pings: UInt8 = 0
            var pingOutstanding = false
            var ended = false
            var goAway: (errorCode: UInt32, debugData: String)?
            while !ended, goAway == nil, let frame = connection.nextFrame() {
                goAway = frame.goAway
                if frame.type == RawFrame.ping, frame.flags & RawFrame.ack != 0 { pingOutstanding = false }
                guard frame.stream == 1 else { continue }
                if frame.type == RawFrame.headers, frame.flags & RawFrame.endStream != 0 { ended = true }
                guard frame.type == RawFrame.data, !frame.payload.isEmpty else { continue }
                received += frame.payload.count
                let increment = RawFrame.uint32(UInt32(frame.payload.count))
                connection.send(RawFrame(type: RawFrame.windowUpdate, payload: increment),
                                RawFrame(type: RawFrame.windowUpdate, stream: 1, payload: increment))
                if !pingOutstanding {
                    pings &+= 1
                    pingOutstanding = true
                    connection.send(Self.ping(pings))
                }
            }
            #expect(goAway == nil)
            #expect(ended)
            #expect(pings > 10)
            #expect(received == WireServerTests.BurstStream.messages.reduce(0) { $0 + $1.readableBytes })
        }
    }

    /// Idle past the interval, the client is pinged. One that answers is
    /// pinged again a while later and still served; one that stays silent
    /// past the timeout is closed.
    @Test func idleConnectionsArePingedAndSilentOnesClosed() async throws {
        var keepalive = WireServer.Configuration.Keepalive()
        keepalive.interval = .milliseconds(100)
        // Long enough for this test's thread to answer on a busy machine.
        keepalive.timeout = .seconds(3)
        try await withServer(keepalive) { port in
            let answering = try RawHTTP2Connection(port: port)
            try answering.handshake()
            for _ in 0..<2 {
                var ping: RawFrame?
                while ping == nil, let frame = answering.nextFrame() {
                    if frame.type == RawFrame.ping && frame.flags & RawFrame.ack == 0 { ping = frame }
                }
                let payload = try #require(ping?.payload)
                answering.send(RawFrame(type: RawFrame.ping, flags: RawFrame.ack, payload: payload))
            }
            answering.send(RawFrame(type: RawFrame.headers, flags: RawFrame.endHeaders, stream: 1,
                                    payload: answering.headerBlock(RawHTTP2Connection.requestHeaders())),
                           RawFrame(type: RawFrame.data, flags: RawFrame.endStream, stream: 1, payload: WireRequestHeaderTests.rangeHello))
            #expect(try answering.response(on: 1).last["grpc-status"] == ["0"])

            let silent = try RawHTTP2Connection(port: port)
            try silent.handshake()
            var pinged = false
            while let frame = silent.nextFrame() {
                if frame.type == RawFrame.ping && frame.flags & RawFrame.ack == 0 { pinged = true }
            }
            #expect(pinged)
            #expect(silent.closedByPeer)
        }
    }
}
