import EtcdProto
import Foundation
import GRPCWire
import NIOCore
import NIOPosix
import SwiftProtobuf
import Testing

/// GRPCWire's lean client (etcd-bench's transport) against GRPCWire's
/// server: unary calls, statuses, many calls on one connection, messages
/// beyond the flow-control window both ways, and a connection that closes
/// under open calls. (Against the real etcd: E2ETests.BenchE2ETests.)
@Suite(.serialized) struct WireClientTests {
    static let range = "/etcdserverpb.KV/Range"

    func withServerAndClient(metadata: [(name: String, value: String)] = [],
                             _ body: (WireClient, WireServerTests.Events) async throws -> Void) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let events = WireServerTests.Events()
        let server = WireServer(configuration: .init(host: "127.0.0.1", port: 0),
                                router: WireServerTests.router(events: events), group: group)
        let port = try await server.start()
        let clientGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var configuration = WireClient.Configuration(host: "127.0.0.1", port: port)
        configuration.metadata = metadata
        let client = try await WireClient.connect(configuration, group: clientGroup).get()
        do {
            try await body(client, events)
        } catch {
            Issue.record(error)
        }
        try await client.close().get()
        server.stop()
        try await clientGroup.shutdownGracefully()
        try await group.shutdownGracefully()
    }

    func call(_ client: WireClient, _ path: String = range, key: String, value: Data = Data()) async -> Result<Etcdserverpb_RangeResponse, WireStatus> {
        var request = Etcdserverpb_RangeRequest()
        request.key = Data(key.utf8)
        request.rangeEnd = value
        let framed = WireServerTests.framed(request)
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<ByteBuffer, WireStatus>, Never>) in
            client.eventLoop.execute {
                client.unary(path, framed) { continuation.resume(returning: $0) }
            }
        }
        return result.flatMap { bytes in
            (try? Etcdserverpb_RangeResponse(serializedBytes: Array(bytes.readableBytesView))).map { .success($0) }
                ?? .failure(WireStatus(code: .dataLoss, message: "test: undecodable response"))
        }
    }

    @Test func unaryCallsAndStatuses() async throws {
        try await withServerAndClient { client, _ in
            let echoed = try await call(client, key: "hello").get()
            #expect(echoed.kvs.first?.key == Data("hello".utf8))

            // The server percent-encodes this message; the client decodes it.
            #expect(await call(client, key: "fail:not 100% ✓ done") == .failure(WireStatus(code: .failedPrecondition, message: "not 100% ✓ done")))

            guard case .failure(let unknown) = await call(client, "/etcdserverpb.KV/Put", key: "x") else {
                Issue.record("Put is not served here")
                return
            }
            #expect(unknown.code == .unimplemented)
            #expect(unknown.message.contains("etcdserverpb.KV/Put"))
            // Still usable after failed calls.
            #expect(try await call(client, key: "again").get().kvs.first?.key == Data("again".utf8))
        }
    }

    @Test func manyCallsAtOnceOnOneConnection() async throws {
        try await withServerAndClient { client, _ in
            let keys = await withTaskGroup(of: Data?.self) { group in
                for index in 0..<400 {
                    group.addTask { try? await call(client, key: "k\(index)").get().kvs.first?.key }
                }
                var keys = Set<Data>()
                for await key in group { if let key { keys.insert(key) } }
                return keys
            }
            #expect(keys.count == 400)
        }
    }

    /// 2.5 MiB each way: more than the 1 MiB windows, so the response only
    /// arrives if the client gives window back as it reads.
    @Test(.timeLimit(.minutes(1))) func messagesLargerThanTheWindowFlowBothWays() async throws {
        try await withServerAndClient { client, _ in
            let big = Data((0..<(5 << 19)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
            for _ in 0..<2 {
                let echoed = try await call(client, key: "big", value: big).get()
                #expect(echoed.kvs.first?.value == big)
            }
        }
    }

    /// A call still open when the connection closes fails with UNAVAILABLE,
    /// and so does every call after.
    @Test func openCallsFailWhenTheConnectionCloses() async throws {
        try await withServerAndClient { client, events in
            async let held = call(client, key: "hold")
            // Close only once the server has the call.
            let deadline = ContinuousClock.now + .seconds(10)
            while !events.all.contains("hold") && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            try await client.close().get()
            guard case .failure(let status) = await held else {
                Issue.record("the held call should have failed")
                return
            }
            #expect(status.code == .unavailable)
            guard case .failure(let later) = await call(client, key: "late") else {
                Issue.record("a call on a closed connection should fail")
                return
            }
            #expect(later.code == .unavailable)
        }
    }

    /// The client's `grpc-timeout`: a call still open at its deadline ends
    /// with DEADLINE_EXCEEDED (and its late answer goes nowhere); calls
    /// answered in time are untouched; a malformed value is refused.
    @Test func grpcTimeoutEndsCallsStillOpenAtTheDeadline() async throws {
        let exceeded = WireStatus(code: .deadlineExceeded, message: "context deadline exceeded")
        try await withServerAndClient(metadata: [("grpc-timeout", "100m")]) { client, events in
            // Should the server miss the deadline, the test fails at 5 s
            // (the held call ends with the connection) instead of hanging.
            let backstop = client.eventLoop.scheduleTask(in: .seconds(5)) { _ = client.close() }
            defer { backstop.cancel() }
            let started = ContinuousClock.now
            #expect(await call(client, key: "hold") == .failure(exceeded))
            #expect(ContinuousClock.now - started >= .milliseconds(100))
            #expect(events.all.contains("hold"))
            // Two open at once, deadlines 50 ms apart: the sweep that ends
            // the first sets itself again for the second.
            async let first = call(client, key: "hold")
            try await Task.sleep(for: .milliseconds(50))
            async let second = call(client, key: "hold")
            let (a, b) = await (first, second)
            #expect(a == .failure(exceeded) && b == .failure(exceeded), "\(a) \(b)")
            // Answered 300 ms after the deadline ended it.
            #expect(await call(client, key: "slow") == .failure(exceeded))
            try await Task.sleep(for: .milliseconds(400))
            let inTime = try await call(client, key: "in time").get()
            #expect(inTime.kvs.first?.key == Data("in time".utf8))
        }
        // Longer than a TimeAmount holds: no deadline at all.
        try await withServerAndClient(metadata: [("grpc-timeout", "99999999H")]) { client, _ in
            let answered = try await call(client, key: "x").get()
            #expect(answered.kvs.first?.key == Data("x".utf8))
        }
        for bad in ["1x", "S", "123456789S", "-1S"] {
            try await withServerAndClient(metadata: [("grpc-timeout", bad)]) { client, _ in
                #expect(await call(client, key: "x") == .failure(WireStatus(code: .internalError, message: "transport: malformed grpc-timeout: \(bad)")))
            }
        }
    }

    /// The async call with a deadline: still open then, it is reset and
    /// ends with DEADLINE_EXCEEDED; the connection serves the next call.
    @Test func perCallDeadlineEndsTheCallAndKeepsTheConnection() async throws {
        try await withServerAndClient { client, events in
            let started = ContinuousClock.now
            let request = WireServerTests.framed(Self.rangeRequest("hold"))
            await #expect(throws: WireStatus(code: .deadlineExceeded, message: "context deadline exceeded")) {
                _ = try await client.unary(Self.range, request, deadline: .now() + .milliseconds(150)).get()
            }
            #expect(ContinuousClock.now - started >= .milliseconds(150))
            #expect(events.all.contains("hold"))
            // A deadline far enough away does not touch a call answered in time.
            let bytes = try await client.unary(Self.range, WireServerTests.framed(Self.rangeRequest("ok")), deadline: .now() + .seconds(10)).get()
            #expect(try Etcdserverpb_RangeResponse(grpcMessage: bytes).kvs.first?.key == Data("ok".utf8))
        }
    }

    /// Cancelling the task of an async call resets its stream: it ends
    /// with CANCELLED and the connection serves the next call.
    @Test func cancellingTheTaskCancelsTheCall() async throws {
        try await withServerAndClient { client, events in
            let request = WireServerTests.framed(Self.rangeRequest("hold"))
            let task = Task { () -> WireStatus? in
                if case .failure(let status) = await client.unary(Self.range, request) { return status }
                return nil
            }
            let deadline = ContinuousClock.now + .seconds(10)
            while !events.all.contains("hold") && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            task.cancel()
            #expect(await task.value?.code == .cancelled)
            let bytes = try await client.unary(Self.range, WireServerTests.framed(Self.rangeRequest("after"))).get()
            #expect(try Etcdserverpb_RangeResponse(grpcMessage: bytes).kvs.first?.key == Data("after".utf8))
        }
    }

    /// Per-call metadata goes after the connection's own, and a new value
    /// (a refreshed token) replaces the cached headers of the path.
    @Test func perCallMetadataGoesWithEachCall() async throws {
        try await withServerAndClient(metadata: [("x-conn", "c")]) { client, _ in
            var seen: [String] = []
            for (name, metadata) in [("token", [("token", "first")]), ("token", [("token", "first")]), ("token", [("token", "second")]),
                                     ("token", []), ("x-conn", [("token", "t")])] as [(String, [(name: String, value: String)])] {
                seen.append(try await Self.header(client, name, metadata))
            }
            #expect(seen == ["first", "first", "second", "", "c"])
        }
    }

    /// Keep-alive: a peer that never answers PINGs (nor anything) gets the
    /// connection closed after interval + timeout; the open call fails with
    /// UNAVAILABLE and the close error says why.
    @Test(.timeLimit(.minutes(1))) func keepaliveClosesAConnectionWhosePeerIsSilent() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        // Accepts and swallows every byte: no SETTINGS, no PING ACK.
        let silent = try await ServerBootstrap(group: group)
            .childChannelInitializer { $0.eventLoop.makeSucceededVoidFuture() }
            .bind(host: "127.0.0.1", port: 0).get()
        var configuration = WireClient.Configuration(host: "127.0.0.1", port: silent.localAddress!.port!)
        configuration.keepalive = (interval: .milliseconds(100), timeout: .milliseconds(200))
        let client = try await WireClient.connect(configuration, group: group).get()
        let started = ContinuousClock.now
        // The 20 s deadline is only a backstop: keep-alive must end the call long before.
        await #expect(throws: WireStatus(code: .unavailable, message: "connection closed")) {
            _ = try await client.unary(Self.range, WireServerTests.framed(Self.rangeRequest("x")), deadline: .now() + .seconds(20)).get()
        }
        let took = ContinuousClock.now - started
        #expect(took >= .milliseconds(200) && took < .seconds(5), "took \(took)")
        let reason = try await client.eventLoop.submit { client.closeError.map { "\($0)" } }.get()
        #expect(reason?.contains("keepalive ping not answered") == true, "\(String(describing: reason))")
        #expect(!client.isOpen)
        try await silent.close()
        try await group.shutdownGracefully()
    }

    /// Keep-alive against a server that answers: the PING's ACK clears the
    /// timeout, so a call that outlives interval + timeout completes and the
    /// connection serves calls after it.
    @Test func keepaliveAnsweredKeepsTheConnection() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let events = WireServerTests.Events()
        let server = WireServer(configuration: .init(host: "127.0.0.1", port: 0), router: WireServerTests.router(events: events), group: group)
        let port = try await server.start()
        var configuration = WireClient.Configuration(host: "127.0.0.1", port: port)
        configuration.keepalive = (interval: .milliseconds(100), timeout: .milliseconds(150))
        let client = try await WireClient.connect(configuration, group: group).get()
        // "slow" answers after 300 ms: a PING goes out while it is open.
        for key in ["slow", "slow", "after"] {
            switch await client.unary(Self.range, WireServerTests.framed(Self.rangeRequest(key))) {
            case .success(let bytes): #expect(try Etcdserverpb_RangeResponse(grpcMessage: bytes).kvs.first?.key == Data(key.utf8))
            case .failure(let status): Issue.record("\(key): \(status)")
            }
        }
        #expect(client.isOpen)
        try await client.close().get()
        server.stop()
        try await group.shutdownGracefully()
    }

    /// The values of the request header `name` the server saw, comma-joined.
    static func header(_ client: WireClient, _ name: String, _ metadata: [(name: String, value: String)]) async throws -> String {
        let bytes = try await client.unary(range, WireServerTests.framed(rangeRequest("header:" + name)), metadata: metadata).get()
        return String(decoding: try Etcdserverpb_RangeResponse(grpcMessage: bytes).kvs.first?.value ?? Data(), as: UTF8.self)
    }

    static func rangeRequest(_ key: String) -> Etcdserverpb_RangeRequest {
        var request = Etcdserverpb_RangeRequest()
        request.key = Data(key.utf8)
        return request
    }

    @Test func connectingToNoServerFails() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        // Bind and close a listener to find a port nobody serves.
        let listener = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let port = listener.localAddress!.port!
        try await listener.close()
        await #expect(throws: (any Error).self) {
            _ = try await WireClient.connect(.init(host: "127.0.0.1", port: port), group: group).get()
        }
        try await group.shutdownGracefully()
    }
}
