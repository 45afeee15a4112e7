import Foundation
import GRPCWire
import Locks
import NIOCore
import NIOPosix
import Testing

/// GRPCWire's client streams (`WireClient.stream`) against GRPCWire's
/// server: server streaming beyond the window, bidirectional echo, cancel,
/// error statuses, a dropped connection, and flow control both ways (a
/// slow consumer makes the server wait; a server that takes nothing makes
/// `send` wait).
@Suite(.serialized) struct WireStreamTests {
    static let many = "/test.Stream/Many"
    static let echo = "/test.Stream/Echo"
    static let fail = "/test.Stream/Fail"
    static let hold = "/test.Stream/Hold"

    final class Log: Sendable {
        let events = Mutex<[String]>([])
        /// Messages the Many method has sent (each completes once it left, flow control included).
        let sent = Mutex(0)
        func add(_ event: String) { events.withLock { $0.append(event) } }
        func count(_ event: String) -> Int { events.withLock { $0.filter { $0 == event }.count } }
    }

    /// The message `index` of a Many reply: `size` bytes of `index`.
    static func payload(_ index: Int, size: Int) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeRepeatingByte(UInt8(truncatingIfNeeded: index), count: size)
        return buffer
    }

    static func request(count: Int, size: Int, last: Int = 0) -> ByteBuffer {
        var body = ByteBuffer()
        body.writeInteger(UInt32(count))
        body.writeInteger(UInt32(size))
        body.writeInteger(UInt32(last))
        return .grpcMessage(body.readableBytesView)
    }

    /// Many: `count` messages of `size` bytes, one at a time as each goes
    /// out, then one of `last` bytes when not 0, then OK.
    final class Many: WireStreamHandler {
        let call: WireCall
        let log: Log
        init(call: WireCall, log: Log) { self.call = call; self.log = log }
        func received(_ message: ByteBuffer) {
            var message = message
            guard let count = message.readInteger(as: UInt32.self), let size = message.readInteger(as: UInt32.self),
                  let last = message.readInteger(as: UInt32.self) else { return call.finish(.internalError("bad request")) }
            sendFrom(0, count: Int(count), size: Int(size), last: Int(last))
        }
        func sendFrom(_ index: Int, count: Int, size: Int, last: Int) {
            guard index < count else {
                if last > 0 {
                    let call = self.call
                    call.send(.grpcMessage(WireStreamTests.payload(count, size: last).readableBytesView)).whenSuccess { call.finish(.ok) }
                } else {
                    call.finish(.ok)
                }
                return
            }
            call.send(.grpcMessage(WireStreamTests.payload(index, size: size).readableBytesView)).whenSuccess { [self] in
                log.sent.withLock { $0 += 1 }
                sendFrom(index + 1, count: count, size: size, last: last)
            }
        }
        func inboundClosed() {}
        func cancelled() { log.add("cancelled") }
    }

    /// Echo: every message back; OK once the client closes its side.
    final class Echo: WireStreamHandler {
        let call: WireCall
        init(call: WireCall) { self.call = call }
        func received(_ message: ByteBuffer) { call.send(.grpcMessage(message.readableBytesView)) }
        func inboundClosed() { call.finish(.ok) }
        func cancelled() {}
    }

    /// Fail: two messages, then FAILED_PRECONDITION with a message the server percent-encodes.
    final class Fail: WireStreamHandler {
        let call: WireCall
        init(call: WireCall) { self.call = call }
        func received(_ message: ByteBuffer) {
            call.send(contentsOf: [.grpcMessage([1]), .grpcMessage([2])])
            call.finish(WireStatus(code: .failedPrecondition, message: "not 100% ✓ done"))
        }
        func inboundClosed() {}
        func cancelled() {}
    }

    /// Hold: notes each message as "held" and never ends the call.
    final class Hold: WireStreamHandler {
        let log: Log
        init(log: Log) { self.log = log }
        func received(_ message: ByteBuffer) { log.add("held") }
        func inboundClosed() {}
        func cancelled() { log.add("cancelled") }
    }

    func withServerAndClient(_ body: (WireClient, WireServer, Log) async throws -> Void) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let log = Log()
        var router = WireRouter()
        router[Self.many] = .streaming { Many(call: $0, log: log) }
        router[Self.echo] = .streaming { Echo(call: $0) }
        router[Self.fail] = .streaming { Fail(call: $0) }
        router[Self.hold] = .streaming { _ in Hold(log: log) }
        let server = WireServer(configuration: .init(host: "127.0.0.1", port: 0), router: router, group: group)
        let port = try await server.start()
        let clientGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = try await WireClient.connect(.init(host: "127.0.0.1", port: port), group: clientGroup).get()
        do {
            try await body(client, server, log)
        } catch {
            Issue.record(error)
        }
        try await client.close().get()
        server.stop()
        try await clientGroup.shutdownGracefully()
        try await group.shutdownGracefully()
    }

    /// Waits (at most 10 s) for `condition`; fails the test when it does not come true.
    func waitUntil(_ condition: () -> Bool, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while !condition() && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        try #require(condition(), "condition still false after 10 s", sourceLocation: sourceLocation)
    }

    /// The status a stream ends with (nil: it ended OK), after reading everything.
    func end(of stream: WireStream) async -> (messages: [ByteBuffer], status: WireStatus?) {
        var messages: [ByteBuffer] = []
        do {
            for try await message in stream { messages.append(message) }
            return (messages, nil)
        } catch {
            return (messages, error as? WireStatus ?? WireStatus(code: .unknown, message: "\(error)"))
        }
    }

    /// 40 messages of 100 KiB and a last one of 3 MiB: four times the 1 MiB
    /// window in all, and one message three times it.
    @Test(.timeLimit(.minutes(1))) func serverStreamingBeyondTheWindow() async throws {
        try await withServerAndClient { client, _, _ in
            let stream = client.stream(Self.many, request: Self.request(count: 40, size: 100 << 10, last: 3 << 20))
            let (messages, status) = await end(of: stream)
            #expect(status == nil)
            #expect(messages.count == 41)
            for (index, message) in messages.enumerated() {
                #expect(message == Self.payload(index, size: index < 40 ? 100 << 10 : 3 << 20))
            }
            #expect(stream.status == .ok)
        }
    }

    /// A consumer that stops reading holds at most the window: the server
    /// waits (its sends do not complete) until the consumer reads again.
    @Test(.timeLimit(.minutes(1))) func slowConsumerMakesTheServerWait() async throws {
        try await withServerAndClient { client, _, log in
            let size = 64 << 10, count = 400
            let stream = client.stream(Self.many, request: Self.request(count: count, size: size))
            var iterator = stream.makeAsyncIterator()
            #expect(try await iterator.next() == Self.payload(0, size: size))
            // The window (1 MiB) holds 15 whole messages; one was taken (less
            // than the quarter window that would be given back): 14 remain.
            let full = 14 * (size + 5)
            try await waitUntil { stream.bufferedBytes >= full }
            #expect(stream.bufferedBytes <= 1 << 20)
            let sent = log.sent.withLock { $0 }
            #expect(sent <= 17, "the server sent \(sent) of \(count) messages past a full window")
            // Reading on, everything arrives in order.
            var index = 1
            while let message = try await iterator.next() {
                #expect(message == Self.payload(index, size: size))
                index += 1
            }
            #expect(index == count)
            #expect(stream.bufferedBytes == 0)
        }
    }

    /// A stream opened with a larger window lets the server run that far
    /// ahead of a consumer that reads nothing (a bulk download keeps
    /// flowing while its consumer writes), and no further.
    @Test(.timeLimit(.minutes(1))) func aLargerStreamWindowLetsTheServerRunAhead() async throws {
        try await withServerAndClient { client, _, log in
            let size = 64 << 10, count = 200
            let stream = client.stream(Self.many, request: Self.request(count: count, size: size), windowBytes: 4 << 20)
            var iterator = stream.makeAsyncIterator()
            #expect(try await iterator.next() == Self.payload(0, size: size))
            // 4 MiB holds 63 whole messages; with the connection's 1 MiB
            // window only 15 would come.
            try await waitUntil { stream.bufferedBytes >= 60 * (size + 5) }
            #expect(stream.bufferedBytes <= 4 << 20)
            let sent = log.sent.withLock { $0 }
            #expect(sent <= 66, "the server sent \(sent) of \(count) messages past a full window")
            var index = 1
            while let message = try await iterator.next() {
                #expect(message == Self.payload(index, size: size))
                index += 1
            }
            #expect(index == count)
        }
    }

    /// Messages both ways on one stream, one larger than the window; the
    /// client's half-close ends the call with OK.
    @Test(.timeLimit(.minutes(1))) func bidirectionalEcho() async throws {
        try await withServerAndClient { client, _, _ in
            let stream = client.stream(Self.echo)
            let sizes = (0..<100).map { $0 == 50 ? 2 << 20 : $0 * 37 + 1 }
            async let received = end(of: stream)
            for (index, size) in sizes.enumerated() {
                try await stream.send(.grpcMessage(Self.payload(index, size: size).readableBytesView))
            }
            stream.finishSending()
            let (messages, status) = await received
            #expect(status == nil)
            #expect(messages.count == sizes.count)
            for (index, message) in messages.enumerated() {
                #expect(message == Self.payload(index, size: sizes[index]))
            }
            // Sending after the end fails with the call's end.
            await #expect(throws: WireStatus.self) { try await stream.send(.grpcMessage([1])) }
        }
    }

    /// `cancel()` and cancelling the consuming task both reset the stream:
    /// the consumer gets CANCELLED and the server's handler hears of it.
    @Test(.timeLimit(.minutes(1))) func cancelResetsTheStream() async throws {
        try await withServerAndClient { client, _, log in
            let stream = client.stream(Self.hold)
            try await stream.send(.grpcMessage([0]))
            try await waitUntil { log.count("held") == 1 }
            stream.cancel()
            let (_, status) = await end(of: stream)
            #expect(status?.code == .cancelled)
            try await waitUntil { log.count("cancelled") == 1 }

            let second = client.stream(Self.hold)
            try await second.send(.grpcMessage([0]))
            try await waitUntil { log.count("held") == 2 }
            let reader = Task { await end(of: second) }
            reader.cancel()
            #expect(await reader.value.status?.code == .cancelled)
            try await waitUntil { log.count("cancelled") == 2 }
            // The connection still serves new streams.
            #expect(await end(of: client.stream(Self.many, request: Self.request(count: 2, size: 10))).messages.count == 2)
        }
    }

    /// A stream still open at its deadline is reset and ends with DEADLINE_EXCEEDED.
    @Test(.timeLimit(.minutes(1))) func deadlineEndsAStream() async throws {
        try await withServerAndClient { client, _, log in
            let started = ContinuousClock.now
            let stream = client.stream(Self.hold, deadline: .now() + .milliseconds(150))
            try await stream.send(.grpcMessage([0]))
            let (_, status) = await end(of: stream)
            #expect(status == WireStatus(code: .deadlineExceeded, message: "context deadline exceeded"))
            #expect(ContinuousClock.now - started >= .milliseconds(150))
            try await waitUntil { log.count("cancelled") == 1 }
        }
    }

    /// The messages before an error status arrive, then the status, its message percent-decoded.
    @Test func serverErrorStatus() async throws {
        try await withServerAndClient { client, _, _ in
            let (messages, status) = await end(of: client.stream(Self.fail, request: .grpcMessage([0])))
            #expect(messages == [ByteBuffer(bytes: [1]), ByteBuffer(bytes: [2])])
            #expect(status == WireStatus(code: .failedPrecondition, message: "not 100% ✓ done"))
            // The same on a bidirectional stream whose side is still open: it
            // ends too (reset NO_ERROR), and sending on it fails.
            let open = client.stream(Self.fail)
            try await open.send(.grpcMessage([0]))
            let (bidiMessages, bidiStatus) = await end(of: open)
            #expect(bidiMessages.count == 2)
            #expect(bidiStatus?.code == .failedPrecondition)
            await #expect(throws: WireStatus.self) { try await open.send(.grpcMessage([1])) }
            // A method the server does not serve.
            let (_, unknown) = await end(of: client.stream("/test.Stream/Nope", request: .grpcMessage([0])))
            #expect(unknown?.code == .unimplemented)
        }
    }

    /// Every open stream fails with UNAVAILABLE when the connection goes,
    /// and a blocked or later send fails too.
    @Test(.timeLimit(.minutes(1))) func connectionLossFailsEveryOpenStream() async throws {
        try await withServerAndClient { client, server, log in
            let streams = (0..<3).map { _ in client.stream(Self.hold) }
            for stream in streams { try await stream.send(.grpcMessage([0])) }
            try await waitUntil { log.count("held") == 3 }
            server.stop(grace: .milliseconds(10))
            for stream in streams {
                let (_, status) = await end(of: stream)
                #expect(status?.code == .unavailable)
            }
            await #expect(throws: WireStatus.self) { try await streams[0].send(.grpcMessage([1])) }
            let late = await end(of: client.stream(Self.hold))
            #expect(late.status?.code == .unavailable)
        }
    }

    /// A peer that never reads: what `send` queues stays bounded (a sender
    /// waits once `outboundLimitBytes` are queued), and cancelling the
    /// stream releases the waiting sender.
    @Test(.timeLimit(.minutes(1))) func sendWaitsForAPeerThatTakesNothing() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let listener = try await ServerBootstrap(group: group)
            .childChannelOption(.autoRead, value: false)
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(listener.localAddress?.port)
        let client = try await WireClient.connect(.init(host: "127.0.0.1", port: port), group: group).get()
        let stream = client.stream(Self.echo, outboundLimitBytes: 256 << 10)
        let size = 16 << 10
        let sent = Mutex(0)
        let sender = Task {
            for index in 0..<1000 {
                try await stream.send(.grpcMessage(Self.payload(index, size: size).readableBytesView))
                sent.withLock { $0 += 1 }
            }
        }
        try await waitUntil { stream.sendersWaiting == 1 }
        // What left (at most the 64 KiB initial window) plus the limit.
        let queued = sent.withLock { $0 }
        #expect(queued <= (256 << 10) / size + (65_535 / size) + 2)
        stream.cancel()
        await #expect(throws: WireStatus.self) { try await sender.value }
        #expect(sent.withLock { $0 } == queued)
        #expect(stream.sendersWaiting == 0)
        try await client.close().get()
        try await listener.close()
        try await group.shutdownGracefully()
    }
}
