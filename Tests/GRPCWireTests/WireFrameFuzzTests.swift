import Dispatch
import Foundation
import GRPCWire
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A seeded generator (SplitMix64): one seed replays a run exactly.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Random and mutated HTTP/2 frame sequences, each on a raw connection of
/// its own, against a live WireServer: bad lengths and stream ids, window
/// overflows, HPACK garbage, bad padding, RST_STREAM storms, PING and
/// SETTINGS floods, lying gRPC length prefixes. Throughout, a well-behaved
/// client on another connection must be served; afterwards every fuzzed
/// connection must be gone and the process's memory bounded.
///
/// The seed is printed; rerun one with WIRE_FUZZ_SEED=<seed> (and
/// WIRE_FUZZ_SEQUENCES=<n> to change the count). Sequence i uses the
/// generator seeded with seed ^ i, so a failure names the sequence too.
@Suite(.serialized) struct WireFrameFuzzTests {
    static let unaryPath = "/fuzz.Echo/Unary"
    static let streamPath = "/fuzz.Echo/Stream"

    final class EchoStream: WireStreamHandler {
        let call: WireCall
        init(call: WireCall) { self.call = call }
        func received(_ message: ByteBuffer) { call.send(.grpcMessage(message.readableBytesView)) }
        func inboundClosed() { call.finish(.ok) }
        func cancelled() {}
    }

    static var router: WireRouter {
        var router = WireRouter()
        router[unaryPath] = .unary { call, message in call.respond(.grpcMessage(message.readableBytesView)) }
        router[streamPath] = .streaming { EchoStream(call: $0) }
        return router
    }

    @Test(.timeLimit(.minutes(3))) func randomFrameSequencesNeitherCrashNorLeakNorStarveOthers() async throws {
        let environment = ProcessInfo.processInfo.environment
        let seed = environment["WIRE_FUZZ_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 0...UInt64.max)
        let sequences = environment["WIRE_FUZZ_SEQUENCES"].flatMap { Int($0) } ?? 10_000
        print("WireFrameFuzzTests: seed \(seed), \(sequences) sequences (rerun with WIRE_FUZZ_SEED=\(seed))")

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var configuration = WireServer.Configuration(host: "127.0.0.1", port: 0)
        configuration.maxConcurrentStreams = 100
        let server = WireServer(configuration: configuration, router: Self.router, group: group)
        let port = try await server.start()
        let clientGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = try await WireClient.connect(.init(host: "127.0.0.1", port: port), group: clientGroup).get()
        defer {
            _ = client.close()
            server.stop()
            group.shutdownGracefully { _ in }
            clientGroup.shutdownGracefully { _ in }
        }

        // Warm up (allocator pools, first connections), then measure.
        try Self.wellBehavedCall(client, 0)
        let rssBefore = Self.residentBytes()

        // Several at once: each waits for the server to close its connection.
        let workers = 8
        let failures = NIOLockedValueBox<[String]>([])
        let goodCalls = NIOLockedValueBox(0)
        let answered = NIOLockedValueBox(0)
        // The blocking sockets run on dispatch's threads, not the test's
        // cooperative one (which the other suites' servers share).
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in DispatchQueue.global().async {
            DispatchQueue.concurrentPerform(iterations: workers) { worker in
                for index in stride(from: worker, to: sequences, by: workers) {
                    var random = SplitMix64(seed: seed ^ UInt64(index))
                    let bytes = Self.sequence(&random)
                    do {
                        let headers = try Self.play(bytes, port: port, random: &random)
                        answered.withLockedValue { $0 += headers }
                    } catch {
                        failures.withLockedValue { $0.append("sequence \(index): \(error)") }
                    }
                    if index % 50 == worker {
                        // A real call on the good connection, between fuzzed ones.
                        do {
                            try Self.wellBehavedCall(client, index)
                            goodCalls.withLockedValue { $0 += 1 }
                        } catch {
                            failures.withLockedValue { $0.append("well-behaved call after sequence \(index): \(error)") }
                        }
                    }
                }
            }
            done.resume()
        } }

        let seen = failures.withLockedValue { $0 }
        // The fuzzing reached the gRPC layer: the server answered calls.
        let answeredCalls = answered.withLockedValue { $0 }
        print("WireFrameFuzzTests: \(answeredCalls) HEADERS answered on fuzzed connections")
        #expect(answeredCalls >= sequences / 10, "seed \(seed)")
        #expect(seen.isEmpty, "seed \(seed): \(seen.prefix(5))")
        #expect(goodCalls.withLockedValue { $0 } >= sequences / 50 - workers, "seed \(seed)")

        // Every fuzzed connection goes; only the good client's stays.
        let deadline = ContinuousClock.now + .seconds(20)
        while server.openConnections > 1 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(server.openConnections == 1, "seed \(seed)")
        try Self.wellBehavedCall(client, sequences)

        let rssAfter = Self.residentBytes()
        print("WireFrameFuzzTests: resident \(rssBefore >> 20) MiB before, \(rssAfter >> 20) MiB after")
        #expect(rssAfter - rssBefore < 256 << 20, "seed \(seed): resident memory grew from \(rssBefore) to \(rssAfter)")
    }

    // MARK: - The well-behaved client

    static func wellBehavedCall(_ client: WireClient, _ n: Int) throws {
        let payload = Array("well-behaved \(n)".utf8)
        let promise = client.eventLoop.makePromise(of: ByteBuffer.self)
        client.eventLoop.execute {
            client.unary(unaryPath, .grpcMessage(payload)) { result in promise.completeWith(result.mapError { $0 as any Error }) }
        }
        let response = try promise.futureResult.wait()
        guard Array(response.readableBytesView) == payload else {
            throw RawHTTP2Connection.Failure.protocolViolation("echo mismatch: \(Array(response.readableBytesView))")
        }
    }

    // MARK: - Playing a sequence

    /// Sends `bytes` in random chunks on a fresh connection, shuts down its
    /// side and reads until the server closes. A server that stops reading
    /// or never closes fails the sequence (10 s without a byte).
    /// Returns the number of HEADERS frames the server sent (calls answered).
    @discardableResult
    static func play(_ bytes: [UInt8], port: Int, random: inout SplitMix64) throws -> Int {
        let connection = try RawHTTP2Connection(port: port, receiveTimeoutSeconds: 10)
        var offset = 0
        while offset < bytes.count {
            let end = min(bytes.count, offset + Int.random(in: 1...max(1, bytes.count / 2 + 1), using: &random))
            guard connection.send(Array(bytes[offset..<end])) else { break }  // the server closed on us: fine
            offset = end
        }
        connection.shutdownOutput()
        var answered = 0
        while let frame = connection.nextFrame() {
            if frame.type == RawFrame.headers { answered += 1 }
        }
        guard connection.closedByPeer else {
            throw RawHTTP2Connection.Failure.protocolViolation("the server neither closed nor answered for 10 s")
        }
        return answered
    }

    // MARK: - Generating a sequence

    static func sequence(_ random: inout SplitMix64) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(8192)
        out += Int.random(in: 0..<50, using: &random) == 0 ? garbage(&random, 0...30) : RawFrame.preface
        RawFrame(type: RawFrame.settings, payload: settingsPayload(&random, valid: Int.random(in: 0..<10, using: &random) != 0)).append(to: &out)
        if Bool.random(using: &random) { RawFrame(type: RawFrame.settings, flags: RawFrame.ack).append(to: &out) }
        var nextStream: UInt32 = 1
        // Often a good call or two first, so the chaos meets open streams.
        for _ in 0..<Int.random(in: 0...2, using: &random) {
            appendValidCall(&out, &random, &nextStream)
        }
        for _ in 0..<Int.random(in: 1...12, using: &random) {
            appendFrames(&out, &random, &nextStream)
        }
        // Mutations of the whole byte stream: flipped bytes, a truncation.
        switch Int.random(in: 0..<10, using: &random) {
        case 0:
            for _ in 0..<Int.random(in: 1...8, using: &random) where out.count > 24 {
                out[Int.random(in: 24..<out.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
            }
        case 1:
            out.removeLast(Int.random(in: 0...min(out.count, 40), using: &random))
        default:
            break
        }
        return out
    }

    static func garbage(_ random: inout SplitMix64, _ count: ClosedRange<Int>) -> [UInt8] {
        let n = Int.random(in: count, using: &random)
        var bytes = [UInt8](repeating: 0, count: n)
        var word: UInt64 = 0
        for i in 0..<n {
            if i % 8 == 0 { word = random.next() }
            bytes[i] = UInt8(truncatingIfNeeded: word >> (8 * UInt64(i % 8)))
        }
        return bytes
    }

    /// SETTINGS entries: valid ones (each parameter within its range), or
    /// any identifier with any value.
    static func settingsPayload(_ random: inout SplitMix64, valid: Bool) -> [UInt8] {
        var payload: [UInt8] = []
        for _ in 0..<Int.random(in: 0...4, using: &random) {
            let identifier = UInt16.random(in: 1...(valid ? 6 : 9), using: &random)
            var value = UInt32.random(in: 0...UInt32.max, using: &random)
            if valid {
                switch identifier {
                case 2: value &= 1  // ENABLE_PUSH
                case 4: value &= 0x7FFF_FFFF  // INITIAL_WINDOW_SIZE
                case 5: value = 16_384 + value % (16_777_215 - 16_384)  // MAX_FRAME_SIZE
                default: break
                }
            }
            payload.append(UInt8(identifier >> 8))
            payload.append(UInt8(identifier & 0xFF))
            payload.append(contentsOf: RawFrame.uint32(value))
        }
        if !valid && Bool.random(using: &random) { payload += [1, 2, 3] }  // not a multiple of 6
        return payload
    }

    static func streamID(_ random: inout SplitMix64, _ next: inout UInt32) -> UInt32 {
        switch Int.random(in: 0..<10, using: &random) {
        case 0: return 0
        case 1: return UInt32.random(in: 0...UInt32.max, using: &random)  // reserved bit, even ids, huge ids
        case 2: return max(1, next &- 2)  // a stream used before
        case 3: return next &+ 1  // even: a server's id
        default:
            defer { next = next &+ 2 }
            return next
        }
    }

    static func requestHeaders(_ random: inout SplitMix64) -> [(String, String)] {
        var headers = RawHTTP2Connection.requestHeaders(path: Bool.random(using: &random) ? unaryPath : streamPath)
        switch Int.random(in: 0..<8, using: &random) {
        case 0: headers.removeAll { $0.0 == ":path" }
        case 1: headers.append(("grpc-timeout", ["1m", "999999999H", "bad", "0n"].randomElement(using: &random)!))
        case 2: headers.append(("grpc-encoding", "gzip"))
        case 3: headers[4] = ("content-type", "text/html")
        case 4: headers.append(("x-big", String(repeating: "x", count: Int.random(in: 1...20_000, using: &random))))
        default: break
        }
        return headers
    }

    /// A gRPC message whose prefix may lie (compressed flag, length).
    static func grpcMessage(_ random: inout SplitMix64) -> [UInt8] {
        let body = garbage(&random, 0...200)
        var length = UInt32(body.count)
        switch Int.random(in: 0..<6, using: &random) {
        case 0: length = UInt32.random(in: 0...UInt32.max, using: &random)
        case 1: length = UInt32(5 << 20)  // over the 4 MiB limit
        case 2: length += UInt32.random(in: 1...70_000, using: &random)  // more than is sent
        default: break
        }
        let compressed: UInt8 = Int.random(in: 0..<10, using: &random) == 0 ? UInt8.random(in: 1...255, using: &random) : 0
        return [compressed] + RawFrame.uint32(length) + body
    }

    /// A header block of literals without indexing or Huffman coding: valid
    /// HPACK that costs no more than copying (HPACKEncoder's Huffman coding
    /// in a debug build would take most of this test's time).
    static func headerBlock(_ headers: [(String, String)]) -> [UInt8] {
        var block: [UInt8] = []
        func integer(_ value: Int) {
            guard value >= 127 else { return block.append(UInt8(value)) }
            block.append(127)
            var rest = value - 127
            while rest >= 128 {
                block.append(UInt8(rest & 0x7F | 0x80))
                rest >>= 7
            }
            block.append(UInt8(rest))
        }
        for (name, value) in headers {
            block.append(0x00)
            integer(name.utf8.count)
            block += name.utf8
            integer(value.utf8.count)
            block += value.utf8
        }
        return block
    }

    /// A well-formed call: headers, then a message whose prefix is true,
    /// in one or a few DATA frames; the stream perhaps left open.
    static func appendValidCall(_ out: inout [UInt8], _ random: inout SplitMix64, _ next: inout UInt32) {
        let stream = next
        next = next &+ 2
        let path = Bool.random(using: &random) ? unaryPath : streamPath
        RawFrame(type: RawFrame.headers, flags: RawFrame.endHeaders, stream: stream,
                 payload: headerBlock(RawHTTP2Connection.requestHeaders(path: path))).append(to: &out)
        let body = garbage(&random, 0...3000)
        let message = [0] + RawFrame.uint32(UInt32(body.count)) + body
        let endStream = Int.random(in: 0..<4, using: &random) != 0
        var offset = 0
        repeat {
            let end = min(message.count, offset + Int.random(in: 1...message.count, using: &random))
            let last = end == message.count
            RawFrame(type: RawFrame.data, flags: last && endStream ? RawFrame.endStream : 0, stream: stream,
                     payload: Array(message[offset..<end])).append(to: &out)
            offset = end
        } while offset < message.count
    }

    static func appendFrames(_ out: inout [UInt8], _ random: inout SplitMix64, _ next: inout UInt32) {
        let stream = streamID(&random, &next)
        let flags = UInt8.random(in: 0...255, using: &random) & (Bool.random(using: &random) ? 0x2D : 0x05)
        switch Int.random(in: 0..<16, using: &random) {
        case 15:
            appendValidCall(&out, &random, &next)
        case 0, 1, 2:
            // A request, perhaps with messages.
            RawFrame(type: RawFrame.headers, flags: RawFrame.endHeaders | (flags & RawFrame.endStream), stream: stream,
                     payload: headerBlock(requestHeaders(&random))).append(to: &out)
            for index in 0..<Int.random(in: 0...3, using: &random) {
                RawFrame(type: RawFrame.data, flags: index == 2 ? RawFrame.endStream : 0, stream: stream,
                         payload: grpcMessage(&random)).append(to: &out)
            }
        case 3:
            // HPACK garbage, maybe split over CONTINUATIONs.
            RawFrame(type: RawFrame.headers, flags: flags & ~RawFrame.endHeaders, stream: stream, payload: garbage(&random, 0...64)).append(to: &out)
            for _ in 0..<Int.random(in: 0...3, using: &random) {
                RawFrame(type: RawFrame.continuation, flags: Bool.random(using: &random) ? RawFrame.endHeaders : 0,
                         stream: stream, payload: garbage(&random, 0...64)).append(to: &out)
            }
        case 4:
            // DATA with bad padding or a lying gRPC prefix.
            var payload = grpcMessage(&random)
            if flags & 0x8 != 0 { payload.insert(UInt8.random(in: 0...255, using: &random), at: 0) }
            RawFrame(type: RawFrame.data, flags: flags & 0x9, stream: stream, payload: payload).append(to: &out)
        case 5:
            // WINDOW_UPDATE: zero, overflowing, on any stream.
            let increment = [UInt32(0), 1, 0x7FFF_FFFF, UInt32.random(in: 0...UInt32.max, using: &random)].randomElement(using: &random)!
            for _ in 0..<Int.random(in: 1...3, using: &random) {
                RawFrame(type: RawFrame.windowUpdate, stream: stream, payload: RawFrame.uint32(increment)).append(to: &out)
            }
        case 6:
            // A RST_STREAM storm (past swift-nio-http2's 200 in 30 s at times).
            for _ in 0..<Int.random(in: 1...300, using: &random) {
                RawFrame(type: RawFrame.rstStream, stream: streamID(&random, &next),
                         payload: RawFrame.uint32(UInt32.random(in: 0...13, using: &random))).append(to: &out)
            }
        case 7:
            // A PING flood (ACKs too, and wrong lengths or streams now and then).
            for _ in 0..<Int.random(in: 1...300, using: &random) {
                let odd = Int.random(in: 0..<30, using: &random) == 0
                RawFrame(type: RawFrame.ping, flags: Int.random(in: 0..<10, using: &random) == 0 ? RawFrame.ack : 0,
                         stream: odd && Bool.random(using: &random) ? 1 : 0,
                         payload: garbage(&random, odd ? 0...12 : 8...8)).append(to: &out)
            }
        case 8:
            // A SETTINGS flood.
            for _ in 0..<Int.random(in: 1...300, using: &random) {
                RawFrame(type: RawFrame.settings, flags: Int.random(in: 0..<20, using: &random) == 0 ? RawFrame.ack : 0,
                         payload: settingsPayload(&random, valid: Int.random(in: 0..<10, using: &random) != 0)).append(to: &out)
            }
        case 9:
            // PRIORITY (self-dependency too), GOAWAY and PUSH_PROMISE from a client.
            let type = [RawFrame.priority, RawFrame.goAway, RawFrame.pushPromise].randomElement(using: &random)!
            let payload = type == RawFrame.priority ? RawFrame.uint32(Bool.random(using: &random) ? stream : 0) + [16] : garbage(&random, 0...16)
            RawFrame(type: type, flags: flags, stream: stream, payload: payload).append(to: &out)
        case 10:
            // A length field that lies (short, long, beyond SETTINGS_MAX_FRAME_SIZE).
            let frame = RawFrame(type: UInt8.random(in: 0...9, using: &random), flags: flags, stream: stream, payload: garbage(&random, 0...40))
            let length = [0, frame.payload.count + 1, max(0, frame.payload.count - 1), 16_385, 0xFF_FFFF].randomElement(using: &random)!
            frame.append(to: &out, length: length)
        case 11:
            // An unknown frame type (to be ignored).
            RawFrame(type: UInt8.random(in: 10...255, using: &random), flags: flags, stream: stream, payload: garbage(&random, 0...40)).append(to: &out)
        case 12:
            // Many streams opened and left open.
            let block = headerBlock(RawHTTP2Connection.requestHeaders(path: streamPath))
            for _ in 0..<Int.random(in: 1...150, using: &random) {
                RawFrame(type: RawFrame.headers, flags: RawFrame.endHeaders, stream: next, payload: block).append(to: &out)
                next = next &+ 2
            }
        case 13:
            // A message in many small DATA frames, maybe never finished.
            let message = grpcMessage(&random)
            var offset = 0
            while offset < message.count {
                let end = min(message.count, offset + Int.random(in: 1...16, using: &random))
                RawFrame(type: RawFrame.data, stream: stream, payload: Array(message[offset..<end])).append(to: &out)
                offset = end
            }
        default:
            out += garbage(&random, 1...64)
        }
    }

    static func residentBytes() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kilobytes = Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "") else { return 0 }
        return kilobytes * 1024
    }
}
