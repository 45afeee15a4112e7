import ArgumentParser
import EtcdGRPC
import EtcdProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Locks

/// `watch`: many watchers of one key, spread over watch streams; a writer
/// puts that key; reports events delivered per second and two latencies:
/// from sending the put to seeing its event (the commit included; each
/// value carries its send time and its number), and from the put's response
/// to the event (the notify path alone; an event seen before the put
/// returned counts as 0).
struct WatchLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch", abstract: "Watch events per second and put→event latency, against a running server.")

    @OptionGroup var options: LoadOptions

    @Option(help: "Watchers in all, all on the same key.")
    var watchers = 1000

    @Option(help: "Watch streams the watchers are spread over.")
    var streams = 10

    @Option(help: "Puts of the watched key (each produces one event per watcher).")
    var puts = 100

    @Option(help: "Pause between puts, in milliseconds.")
    var putIntervalMs = 10

    func validate() throws {
        guard watchers > 0, streams > 0, streams <= watchers, puts > 0 else {
            throw ValidationError("watchers, streams and puts must be positive, streams at most watchers")
        }
    }

    func run() async throws {
        let key = Data("watch-bench-key".utf8)
        let watchers = watchers, streams = streams, puts = puts, interval = putIntervalMs
        let tally = WatchTally(puts: puts)
        let clock = ContinuousClock()
        let origin = clock.now
        let expected = watchers * puts

        let elapsed = try await LoadRunner.withConnections(options) { clients in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for stream in 0..<streams {
                    let client = Etcdserverpb_Watch.Client(wrapping: clients[stream % clients.count])
                    let count = watchers / streams + (stream < watchers % streams ? 1 : 0)
                    group.addTask {
                        try await client.watch(requestProducer: { writer in
                            for _ in 0..<count {
                                var request = Etcdserverpb_WatchRequest()
                                request.createRequest.key = key
                                try await writer.write(request)
                            }
                        }, onResponse: { response in
                            var seen = 0
                            for try await message in response.messages {
                                if message.created { tally.created.add(1, ordering: .relaxed) }
                                guard !message.events.isEmpty else { continue }
                                let now = clock.now
                                var latencies: [Duration] = []
                                var arrivals: [(Int, ContinuousClock.Instant)] = []
                                for event in message.events {
                                    let (sent, number) = event.kv.value.withUnsafeBytes {
                                        ($0.loadUnaligned(as: Int64.self), $0.loadUnaligned(fromByteOffset: 8, as: Int64.self))
                                    }
                                    latencies.append(now - (origin + .nanoseconds(sent)))
                                    arrivals.append((Int(number), now))
                                }
                                seen += message.events.count
                                tally.received.withLock { state in
                                    state.events += latencies.count
                                    state.latencies += latencies
                                    state.arrivals += arrivals
                                    state.last = now
                                }
                                if seen >= count * puts { return }
                            }
                        })
                    }
                }
                // Wait until every watcher is created (bounded: 60 s).
                let deadline = clock.now + .seconds(60)
                while tally.created.load(ordering: .relaxed) < watchers && clock.now < deadline {
                    try await Task.sleep(for: .milliseconds(10))
                }
                guard tally.created.load(ordering: .relaxed) == watchers else { throw ValidationError("watchers were not all created") }
                let kv = Etcdserverpb_KV.Client(wrapping: clients[0])
                let start = clock.now
                for number in 0..<puts {
                    var put = Etcdserverpb_PutRequest()
                    put.key = key
                    let sent = (clock.now - origin).components
                    var stamp = [sent.seconds * 1_000_000_000 + sent.attoseconds / 1_000_000_000, Int64(number)]
                    put.value = stamp.withUnsafeMutableBytes { Data($0) }
                    _ = try await kv.put(put)
                    let returned = clock.now
                    tally.returned.withLock { $0[number] = returned }
                    if interval > 0 { try await Task.sleep(for: .milliseconds(interval)) }
                }
                // Bounded wait for the last events.
                let end = clock.now + .seconds(60)
                while tally.received.withLock({ $0.events }) < expected && clock.now < end {
                    try await Task.sleep(for: .milliseconds(10))
                }
                group.cancelAll()
                return (tally.received.withLock { $0.last } ?? clock.now) - start
            }
        }
        let (events, latencies, arrivals) = tally.received.withLock { ($0.events, $0.latencies, $0.arrivals) }
        let returned = tally.returned.withLock { $0 }
        let afterReturn = arrivals.map { number, seen in
            returned[number].map { max(.zero, seen - $0) } ?? .zero
        }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        print("watch: \(watchers) watchers on \(streams) streams, \(puts) puts; \(events) of \(expected) events in \(String(format: "%.2f", seconds)) s")
        print(String(format: "  events/s: %.0f", Double(events) / seconds))
        LoadRunner.report(label: "put→event", latencies: latencies, errors: expected - events, elapsed: elapsed)
        LoadRunner.report(label: "put returned→event", latencies: afterReturn, errors: expected - events, elapsed: elapsed)
    }
}

/// What the watch streams have seen so far.
final class WatchTally: Sendable {
    let created = Atomic<Int>(0)
    let received = Mutex<(events: Int, latencies: [Duration], arrivals: [(Int, ContinuousClock.Instant)], last: ContinuousClock.Instant?)>(
        (0, [], [], nil))
    /// When each put (by number) returned.
    let returned: Mutex<[ContinuousClock.Instant?]>

    init(puts: Int) {
        returned = Mutex([ContinuousClock.Instant?](repeating: nil, count: puts))
    }
}

/// `lease-keepalive`: each client grants a lease, then sends keep-alives
/// on its own stream one after another; reports keep-alives per second.
struct LeaseKeepAliveLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lease-keepalive", abstract: "Lease keep-alives against a running server.")

    @OptionGroup var options: LoadOptions

    func run() async throws {
        let options = options
        let clock = ContinuousClock()
        let result = try await LoadRunner.withConnections(options) { clients in
            try await LoadRunner.runWorkers(options, clients) { _, count, client in
                let lease = Etcdserverpb_Lease.Client(wrapping: client)
                var grant = Etcdserverpb_LeaseGrantRequest()
                grant.ttl = 60
                let id = try await lease.leaseGrant(grant).id
                let (requests, continuation) = AsyncStream<Etcdserverpb_LeaseKeepAliveRequest>.makeStream()
                var keepAlive = Etcdserverpb_LeaseKeepAliveRequest()
                keepAlive.id = id
                let request = keepAlive
                // The first keep-alive goes out before the response stream
                // opens: a Go server sends its headers only with its first answer.
                let firstSent = clock.now
                continuation.yield(request)
                return try await lease.leaseKeepAlive(requestProducer: { writer in
                    for await request in requests { try await writer.write(request) }
                }, onResponse: { response in
                    var latencies: [Duration] = []
                    var errors = 0
                    var messages = response.messages.makeAsyncIterator()
                    var begin = firstSent
                    for sent in 0..<count {
                        if sent > 0 {
                            begin = clock.now
                            continuation.yield(request)
                        }
                        guard let answer = try await messages.next() else { errors += 1; break }
                        if answer.ttl <= 0 { errors += 1 }
                        latencies.append(clock.now - begin)
                    }
                    continuation.finish()
                    return (latencies, errors)
                })
            }
        }
        LoadRunner.report(label: "lease-keepalive", latencies: result.0, errors: result.1, elapsed: result.2)
    }
}
