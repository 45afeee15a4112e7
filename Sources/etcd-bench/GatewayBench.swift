import ArgumentParser
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// Load on the JSON gateway (`put --gateway`, `range --gateway`: `POST
/// /v3/kv/put`, `/v3/kv/range`): each
/// client is its own HTTP/1.1 keep-alive connection sending one request at a
/// time, through swift-nio's HTTP/1 client codec. Works against ours and the
/// real etcd's gateway alike.
enum GatewayLoad {
    static func run(_ options: LoadOptions, label: String, path: String, body: @escaping @Sendable (Int) -> String) async throws {
        let addresses = try options.addresses()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        do {
            try await measure(options, label: label, path: path, addresses: addresses, group: group, body: body)
            try await group.shutdownGracefully()
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private static func measure(_ options: LoadOptions, label: String, path: String, addresses: [(String, Int)],
                                group: MultiThreadedEventLoopGroup, body: @escaping @Sendable (Int) -> String) async throws {
        let perClient = options.total / options.clients
        var channels: [(any Channel, EventLoopFuture<([Duration], Int)>)] = []
        for worker in 0..<options.clients {
            let (host, port) = addresses[worker % addresses.count]
            let count = perClient + (worker < options.total % options.clients ? 1 : 0)
            let loop = group.next()
            let done = loop.makePromise(of: ([Duration], Int).self)
            let handler = GatewayClientHandler(host: host, path: path, worker: worker, count: count, body: body, done: done)
            let channel = try await ClientBootstrap(group: loop)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                }
                .connect(host: host, port: port).get()
            channels.append((channel, done.futureResult))
        }
        let start = NIODeadline.now()
        for (channel, _) in channels {
            channel.eventLoop.execute { channel.pipeline.fireUserInboundEventTriggered(GatewayClientHandler.Start()) }
        }
        var latencies: [Duration] = []
        var errors = 0
        for (_, done) in channels {
            let (some, failed) = try await done.get()
            latencies += some
            errors += failed
        }
        let elapsed = Duration.nanoseconds(Int64((NIODeadline.now() - start).nanoseconds))
        for (channel, _) in channels { try? await channel.close() }
        LoadRunner.report(label: label, latencies: latencies, errors: errors, elapsed: elapsed)
    }
}

/// One client: sends `count` requests one after another on its connection.
final class GatewayClientHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    struct Start {}

    private let host: String
    private let path: String
    private let worker: Int
    private let count: Int
    private let body: @Sendable (Int) -> String
    private let done: EventLoopPromise<([Duration], Int)>
    private var sent = 0
    private var started = NIODeadline.now()
    private var latencies: [Duration] = []
    private var errors = 0
    private var status = 200

    init(host: String, path: String, worker: Int, count: Int, body: @escaping @Sendable (Int) -> String,
         done: EventLoopPromise<([Duration], Int)>) {
        self.host = host
        self.path = path
        self.worker = worker
        self.count = count
        self.body = body
        self.done = done
        latencies.reserveCapacity(count)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is Start { sendNext(context) } else { context.fireUserInboundEventTriggered(event) }
    }

    private func sendNext(_ context: ChannelHandlerContext) {
        guard sent < count else {
            done.succeed((latencies, errors))
            return
        }
        let text = body(worker &* 1_000_003 &+ sent)
        sent += 1
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path)
        head.headers.add(name: "Host", value: host)
        head.headers.add(name: "Content-Type", value: "application/json")
        head.headers.add(name: "Content-Length", value: String(text.utf8.count))
        started = .now()
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
        case .body:
            break
        case .end:
            latencies.append(.nanoseconds(Int64((NIODeadline.now() - started).nanoseconds)))
            if status != 200 { errors += 1 }
            sendNext(context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        done.fail(ChannelError.ioOnClosedChannel)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        done.fail(error)
        context.close(promise: nil)
    }
}
