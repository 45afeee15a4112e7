import EtcdGRPC
import EtcdProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCWire
import Locks
import NIOCore
import NIOPosix
import SwiftProtobuf
import Testing

/// GRPCWire against grpc-swift's client: unary and streaming calls, statuses,
/// flow control beyond the first window, message limits, cancellation and
/// shutdown. The etcd message types only give the calls a shape.
///
/// Serialized, and on an event loop group of their own: the flood and
/// large-message cases would otherwise take the process-wide loops from
/// other suites' servers running in parallel.
@Suite(.serialized) struct WireServerTests {
    static func framed(_ message: some SwiftProtobuf.Message) -> ByteBuffer {
        try! message.framed()
    }

    /// A router whose KV.Range echoes the request's key (and range_end as the
    /// value), fails with the status a key asks for, or never answers "hold"; Watch echoes each
    /// request's key back as an event.
    static func router(events: Events) -> WireRouter {
        var router = WireRouter()
        router["/etcdserverpb.KV/Range"] = .unary { call, bytes in
            guard let request = try? Etcdserverpb_RangeRequest(serializedBytes: Array(bytes.readableBytesView)) else {
                return call.finish(.internalError("bad request"))
            }
            if request.key == Data("slow".utf8) { events.add("slow") }
            // "hold": never answered (the call stays open until the connection goes).
            if request.key == Data("hold".utf8) { return events.add("hold") }
            if let text = String(data: request.key, encoding: .utf8), text.hasPrefix("fail:") {
                return call.finish(WireStatus(code: .failedPrecondition, message: String(text.dropFirst(5))))
            }
            // "header:NAME": answers with the values of the request's header NAME, comma-joined.
            if let text = String(data: request.key, encoding: .utf8), text.hasPrefix("header:") {
                var response = Etcdserverpb_RangeResponse()
                var kv = Mvccpb_KeyValue()
                kv.key = request.key
                kv.value = Data(call.headers[String(text.dropFirst(7))].joined(separator: ",").utf8)
                response.kvs = [kv]
                return call.respond(framed(response))
            }
            // Answer from another thread, as the member's completions do
            // ("slow": 300 ms later).
            let delay: DispatchTimeInterval = request.key == Data("slow".utf8) ? .milliseconds(300) : .nanoseconds(0)
            DispatchQueue.global().asyncAfter(deadline: .now() + delay) {
                var response = Etcdserverpb_RangeResponse()
                var kv = Mvccpb_KeyValue()
                kv.key = request.key
                kv.value = request.rangeEnd
                response.kvs = [kv]
                call.respond(framed(response))
            }
        }
        router["/etcdserverpb.Watch/Watch"] = .streaming { call in
            EchoStream(call: call, events: events)
        }
        router["/etcdserverpb.Maintenance/Snapshot"] = .streaming { call in
            BurstStream(call: call)
        }
        return router
    }

    /// Answers its request with `BurstStream.messages` in one send (far
    /// more than a client's first window), then ends the call.
    final class BurstStream: WireStreamHandler {
        static let messages = (0..<32).map { i -> ByteBuffer in
            var response = Etcdserverpb_SnapshotResponse()
            response.blob = Data(repeating: UInt8(i), count: 32 * 1024)
            response.remainingBytes = UInt64(31 - i)
            return framed(response)
        }
        let call: WireCall
        init(call: WireCall) { self.call = call }
        func received(_ message: ByteBuffer) {
            let call = self.call
            call.send(contentsOf: Self.messages).whenComplete { _ in call.finish(.ok) }
        }
        func inboundClosed() {}
        func cancelled() {}
    }

    final class Events: Sendable {
        let log = Mutex<[String]>([])
        func add(_ event: String) { log.withLock { $0.append(event) } }
        var all: [String] { log.withLock { $0 } }
    }

    /// Echoes; ends the call when the client closes its side, unless it sent
    /// "hold" (then only the client's cancellation ends it).
    final class EchoStream: WireStreamHandler {
        let call: WireCall
        let events: Events
        var hold = false
        init(call: WireCall, events: Events) {
            self.call = call
            self.events = events
        }
        func received(_ message: ByteBuffer) {
            let request = try! Etcdserverpb_WatchRequest(serializedBytes: Array(message.readableBytesView))
            if request.createRequest.key == Data("hold".utf8) {
                hold = true
                events.add("held")
            }
            var response = Etcdserverpb_WatchResponse()
            var event = Mvccpb_Event()
            event.kv.key = request.createRequest.key
            response.events = [event]
            call.send(WireServerTests.framed(response))
        }
        func inboundClosed() {
            events.add("closed")
            if !hold { call.finish(.ok) }
        }
        func cancelled() { events.add("cancelled") }
    }

    /// Polls `condition` (every 20 ms, at most 10 s).
    /// Waits (at most 10 s) for `condition`; fails the test when it does not come true.
    func waitUntil(_ condition: () -> Bool, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while !condition() && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        try #require(condition(), "condition still false after 10 s", sourceLocation: sourceLocation)
    }

    func withServer(maxReceive: Int = 4 << 20, _ body: (WireServer, GRPCClient<HTTP2ClientTransport.Posix>, Events) async throws -> Void) async throws {
        let events = Events()
        var configuration = WireServer.Configuration(host: "127.0.0.1", port: 0)
        configuration.maxReceiveMessageBytes = maxReceive
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = WireServer(configuration: configuration, router: Self.router(events: events), group: group)
        let port = try await server.start()
        defer {
            server.stop()
            group.shutdownGracefully { _ in }
        }
        let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
        try await withGRPCClient(transport: transport) { client in
            try await body(server, client, events)
        }
    }

    func range(_ kv: Etcdserverpb_KV.Client<HTTP2ClientTransport.Posix>, key: String, value: Data = Data()) async throws -> Etcdserverpb_RangeResponse {
        var request = Etcdserverpb_RangeRequest()
        request.key = Data(key.utf8)
        request.rangeEnd = value
        return try await kv.range(request)
    }

    @Test func unaryCallsStatusesAndUnknownMethods() async throws {
        try await withServer { _, client, _ in
            let kv = Etcdserverpb_KV.Client(wrapping: client)
            let echoed = try await range(kv, key: "hello")
            #expect(echoed.kvs.first?.key == Data("hello".utf8))

            // A status with a message that needs gRPC's percent-encoding.
            do {
                _ = try await range(kv, key: "fail:not 100% ✓ done")
                Issue.record("the call should fail")
            } catch let error as RPCError {
                #expect(error.code == .failedPrecondition)
                #expect(error.message == "not 100% ✓ done")
            }

            // A method nobody registered.
            do {
                _ = try await kv.put(Etcdserverpb_PutRequest())
                Issue.record("Put is not served here")
            } catch let error as RPCError {
                #expect(error.code == .unimplemented)
            }
        }
    }

    /// Many calls at once on one connection (more than swift-nio-http2's
    /// default of 100 concurrent streams), answered from other threads.
    @Test func manyConcurrentCallsOnOneConnection() async throws {
        try await withServer { _, client, _ in
            let kv = Etcdserverpb_KV.Client(wrapping: client)
            let keys = try await withThrowingTaskGroup(of: Data.self) { group in
                for index in 0..<400 {
                    group.addTask { try await range(kv, key: "k\(index)").kvs.first?.key ?? Data() }
                }
                var keys = Set<Data>()
                for try await key in group { keys.insert(key) }
                return keys
            }
            #expect(keys.count == 400)
        }
    }

    /// Requests and responses of 2.5 MiB each: beyond the 1 MiB window the
    /// server grants, so only its WINDOW_UPDATEs let them through.
    @Test(.timeLimit(.minutes(1))) func messagesLargerThanTheWindowFlowBothWays() async throws {
        try await withServer { _, client, _ in
            let kv = Etcdserverpb_KV.Client(wrapping: client)
            let big = Data((0..<(5 << 19)).map { UInt8(truncatingIfNeeded: $0) })
            for _ in 0..<2 {
                let echoed = try await range(kv, key: "big", value: big)
                #expect(echoed.kvs.first?.value == big)
            }
        }
    }

    /// A limit well under gRPC's 4 MiB default (as `--max-request-bytes`
    /// plus 512 KiB can be): a message of exactly the limit is served, one
    /// byte more gets RESOURCE_EXHAUSTED with grpc-go's message.
    @Test func aMessageOverTheLimitIsRefused() async throws {
        let limit = 1024
        try await withServer(maxReceive: limit) { _, client, _ in
            let kv = Etcdserverpb_KV.Client(wrapping: client)
            func request(size: Int) throws -> Etcdserverpb_RangeRequest {
                var request = Etcdserverpb_RangeRequest()
                request.key = Data("big".utf8)
                request.rangeEnd = Data(count: size - 8)  // 3 + 2 tags + 3 length bytes of overhead
                #expect(try (request.serializedBytes() as [UInt8]).count == size)
                return request
            }
            #expect(try await kv.range(request(size: limit)).kvs.first?.value.count == limit - 8)
            do {
                _ = try await kv.range(request(size: limit + 1))
                Issue.record("the call should be refused")
            } catch let error as RPCError {
                #expect(error.code == .resourceExhausted)
                #expect(error.message == "grpc: received message larger than max (\(limit + 1) vs. \(limit))")
            }
            // The connection is still good.
            #expect(try await range(kv, key: "small").kvs.first?.key == Data("small".utf8))
        }
    }

    /// A bidirectional stream keeps order; closing the client side reaches
    /// the handler, and a cancelled call tells it too.
    @Test func streamsKeepOrderAndSeeTheirEnd() async throws {
        try await withServer { _, client, events in
            let watch = Etcdserverpb_Watch.Client(wrapping: client)
            let keys = try await watch.watch(requestProducer: { writer in
                for index in 0..<500 {
                    var request = Etcdserverpb_WatchRequest()
                    request.createRequest.key = Data("w\(index)".utf8)
                    try await writer.write(request)
                }
            }, onResponse: { response in
                var keys: [String] = []
                for try await message in response.messages {
                    keys += message.events.map { String(decoding: $0.kv.key, as: UTF8.self) }
                }
                return keys
            })
            #expect(keys == (0..<500).map { "w\($0)" })
            #expect(events.all == ["closed"])

            // A call the client gives up on.
            let task = Task {
                try await watch.watch(requestProducer: { writer in
                    var request = Etcdserverpb_WatchRequest()
                    request.createRequest.key = Data("hold".utf8)
                    try await writer.write(request)
                    try await Task.sleep(for: .seconds(30))
                }, onResponse: { response in
                    for try await _ in response.messages {}
                })
            }
            try await waitUntil { events.all.contains("held") }
            task.cancel()
            try await waitUntil { events.all.contains("cancelled") }
            #expect(events.all.contains("cancelled"))
        }
    }

    /// stop() lets a call in flight finish, then closes its connection.
    @Test(.timeLimit(.minutes(1))) func stopLetsCallsInFlightFinish() async throws {
        try await withServer { server, client, events in
            let kv = Etcdserverpb_KV.Client(wrapping: client)
            _ = try await range(kv, key: "warm-up")
            async let slow = range(kv, key: "slow")
            try await waitUntil { events.all.contains("slow") }
            let started = ContinuousClock.now
            server.stop(grace: .seconds(20))
            #expect(try await slow.kvs.first?.key == Data("slow".utf8))
            await server.waitUntilClosed()
            // Closed when its last call ended, not at the grace period.
            #expect(ContinuousClock.now - started < .seconds(10))
        }
    }

    /// stop() closes the listener: no new connection gets served.
    @Test func stopClosesTheListener() async throws {
        let server = WireServer(configuration: .init(host: "127.0.0.1", port: 0), router: Self.router(events: Events()))
        let port = try await server.start()
        #expect(server.port == port)
        server.stop()
        await server.waitUntilClosed()
        let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
        try await withGRPCClient(transport: transport) { client in
            let kv = Etcdserverpb_KV.Client(wrapping: client)
            do {
                _ = try await range(kv, key: "late")
                Issue.record("a stopped server should not answer")
            } catch let error as RPCError {
                #expect(error.code == .unavailable || error.code == .deadlineExceeded)
            }
        }
    }
}
