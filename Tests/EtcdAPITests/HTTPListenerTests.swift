@testable import EtcdAPI
import EtcdServer
import Foundation
import NIOCore
import NIOPosix
import Testing

/// The client port's HTTP/1 side against connections curl would not make:
/// unfinished requests and idle keep-alive connections are closed after the
/// idle timeout; a finished request is answered.
@Suite struct HTTPListenerTests {
    /// Connects to `port`, writes `bytes`, and returns what the server sent
    /// until it closed the connection, or nil if it did not close within
    /// `timeout`.
    static func exchange(_ bytes: String, port: Int, timeout: TimeAmount) async throws -> String? {
        let received = NIOLockedBuffer()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Collector(received)) }
            }
            .connect(host: "127.0.0.1", port: port).get()
        try await channel.writeAndFlush(ByteBuffer(string: bytes))
        // Past the timeout we close it ourselves, and say so.
        let timer = channel.eventLoop.scheduleTask(in: timeout) {
            received.timedOut = true
            channel.close(promise: nil)
        }
        try? await channel.closeFuture.get()
        timer.cancel()
        return received.timedOut ? nil : received.text
    }

    final class NIOLockedBuffer: @unchecked Sendable {
        private let lock = NSLock()
        private var bytes: [UInt8] = []
        private var expired = false
        var timedOut: Bool {
            get { lock.withLock { expired } }
            set { lock.withLock { expired = newValue } }
        }
        func append(_ buffer: ByteBuffer) { lock.withLock { bytes += buffer.readableBytesView } }
        var text: String { lock.withLock { String(decoding: bytes, as: UTF8.self) } }
    }

    final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let received: NIOLockedBuffer
        init(_ received: NIOLockedBuffer) { self.received = received }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { received.append(unwrapInboundIn(data)) }
    }

    @Test func unfinishedAndIdleConnectionsAreClosed() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("http-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let member = try Member(config: ServerConfig(name: "m1", dataDir: dir))
        defer { member.stop() }
        let listener = ClientListener(address: try ListenAddress(parsing: "http://127.0.0.1:0"), member: member,
                                      httpIdleTimeout: .seconds(2))
        try await withThrowingTaskGroup { group in
            group.addTask { try await listener.serve() }
            defer { listener.stop() }
            let port = try #require(try await listener.boundPort())
            // Half a request head: closed once the timeout passes, unanswered.
            // (So is a connection that sent nothing, or too little to tell its protocol.)
            #expect(try await Self.exchange("PR", port: port, timeout: .seconds(10)) == "")
            let unfinished = try await Self.exchange("GET /version HTTP/1.1\r\nHost: x\r\n", port: port, timeout: .seconds(10))
            #expect(unfinished == "")
            // A whole request is answered; the kept-alive connection is then closed when idle.
            let answered = try #require(try await Self.exchange("GET /version HTTP/1.1\r\nHost: x\r\n\r\n", port: port, timeout: .seconds(10)))
            #expect(answered.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(answered)")
            #expect(answered.hasSuffix(#"{"etcdserver":"3.6.0","etcdcluster":"3.6.0","storage":"3.6.0"}"#), "\(answered)")
            // A body over the limit: 413, and the connection closed.
            let limit = listener.httpBodyLimit
            let large = try #require(try await Self.exchange(
                "POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nContent-Length: \(limit + 1)\r\n\r\n" + String(repeating: "a", count: limit + 1),
                port: port, timeout: .seconds(10)))
            #expect(large.hasPrefix("HTTP/1.1 413"), "\(large.prefix(200))")
            // Not HTTP at all: swift-nio's codec answers 400 and the connection closes.
            let garbage = try #require(try await Self.exchange("HELLO\r\n\r\n", port: port, timeout: .seconds(10)))
            #expect(garbage.hasPrefix("HTTP/1.1 400"), "\(garbage)")
            // Two requests on one connection, answered in order; the second closes it.
            let twice = try #require(try await Self.exchange(
                "GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                port: port, timeout: .seconds(10)))
            #expect(twice.components(separatedBy: "HTTP/1.1 200 OK").count == 3, "\(twice)")
            #expect(twice.contains(#"{"health":"true","reason":""}"#) && twice.hasSuffix(#""storage":"3.6.0"}"#), "\(twice)")
            listener.stop()
            try await group.waitForAll()
        }
    }
}
