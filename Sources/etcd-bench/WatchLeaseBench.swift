import ArgumentParser
import EtcdClient
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
/// returned counts as 0). With `--distinct-keys` every watcher watches a
/// key of its own and the puts go round the keys (one event per put): the
/// cost of many idle watchers, as a Kubernetes apiserver holds them.
struct WatchLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch", abstract: "Watch events per second and put→event latency, against a running server.")

    @OptionGroup var options: LoadOptions

    @Option(help: "Watchers in all, all on the same key (or each on its own, with --distinct-keys).")
    var watchers = 1000

    @Flag(help: "Each watcher watches a key of its own; the puts go round the keys.")
    var distinctKeys = false

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
        if options.client == "etcdclient" { return try await runEtcdClient() }
        let watchers = watchers, streams = streams, puts = puts, interval = putIntervalMs, distinct = distinctKeys
        // Watcher w watches key(w); stream s holds watchers s, s + streams, ...
        let key: @Sendable (Int) -> Data = { watcher in Data((distinct ? "watch-bench-key/\(watcher)" : "watch-bench-key").utf8) }
        // Events watcher w sees: every put, or the puts of its own key.
        let eventsOf: @Sendable (Int) -> Int = { watcher in distinct ? puts / watchers + (watcher < puts % watchers ? 1 : 0) : puts }
        let tally = WatchTally(puts: puts)
        let clock = ContinuousClock()
        let origin = clock.now
        let expected = (0..<watchers).reduce(0) { $0 + eventsOf($1) }

        let elapsed = try await LoadRunner.withConnections(options) { clients in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for stream in 0..<streams {
                    let client = Etcdserverpb_Watch.Client(wrapping: clients[stream % clients.count])
                    let mine = Array(stride(from: stream, to: watchers, by: streams))
                    let streamEvents = mine.reduce(0) { $0 + eventsOf($1) }
                    group.addTask {
                        try await client.watch(requestProducer: { writer in
                            for watcher in mine {
                                var request = Etcdserverpb_WatchRequest()
                                request.createRequest.key = key(watcher)
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
                                if seen >= streamEvents { return }
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
                    put.key = key(number % watchers)
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
        let seconds = elapsed.seconds
        print("watch: \(watchers) watchers\(distinct ? " on distinct keys" : "") on \(streams) streams, \(puts) puts; \(events) of \(expected) events in \(String(format: "%.2f", seconds)) s")
        print(String(format: "  events/s: %.0f", Double(events) / seconds))
        LoadRunner.report(label: "put→event", latencies: latencies, errors: expected - events, elapsed: elapsed)
        LoadRunner.report(label: "put returned→event", latencies: afterReturn, errors: expected - events, elapsed: elapsed)
    }
}

extension WatchLoad {
    /// `--client etcdclient`: every watcher is an `EtcdClient.watch` (its own
    /// stream; `--streams` does not apply) on `--conns` clients; one more
    /// client puts. Reports events per second and the process's CPU per
    /// event from the first put to the last event (the puts' CPU included).
    func runEtcdClient() async throws {
        let watchers = watchers, puts = puts, interval = putIntervalMs, distinct = distinctKeys
        let key: @Sendable (Int) -> String = { distinct ? "watch-bench-key/\($0)" : "watch-bench-key" }
        let expected = distinct ? puts : puts * watchers
        let clients = try EtcdClientLoad.makeClients(options)
        let writer = try EtcdClientLoad.makeClients(options)[0]
        defer { (clients + [writer]).forEach { $0.close() } }
        let received = EventCount()
        let clock = ContinuousClock()
        let watches = try await withThrowingTaskGroup(of: EtcdWatch.self) { group in
            for watcher in 0..<watchers {
                group.addTask { try await clients[watcher % clients.count].watch(key(watcher)) }
            }
            var watches: [EtcdWatch] = []
            for try await watch in group { watches.append(watch) }
            return watches
        }
        _ = try await writer.status()
        let cpu = ProcessCPU.now()
        let start = clock.now
        let elapsed = try await withThrowingTaskGroup(of: Void.self) { group in
            for watch in watches {
                group.addTask {
                    for try await response in watch { received.value.add(response.events.count, ordering: .relaxed) }
                }
            }
            let value = String(repeating: "v", count: 16)
            for number in 0..<puts {
                try await writer.put(key(number % watchers), value)
                if interval > 0 { try await Task.sleep(for: .milliseconds(interval)) }
            }
            // Bounded wait for the last events.
            let end = clock.now + .seconds(60)
            while received.value.load(ordering: .relaxed) < expected && clock.now < end {
                try await Task.sleep(for: .milliseconds(1))
            }
            let elapsed = clock.now - start
            watches.forEach { $0.cancel() }
            group.cancelAll()
            return elapsed
        }
        let cpuSeconds = ProcessCPU.now() - cpu
        let events = received.value.load(ordering: .relaxed)
        let seconds = elapsed.seconds
        print("watch (EtcdClient): \(watchers) watchers\(distinct ? " on distinct keys" : ""), \(puts) puts; \(events) of \(expected) events in \(String(format: "%.2f", seconds)) s")
        print(String(format: "  events/s: %.0f; process CPU %.2f s, %.1f µs per event", Double(events) / seconds, cpuSeconds,
                     cpuSeconds * 1e6 / Double(max(1, events))))
    }
}

/// Events seen by the EtcdClient watchers.
final class EventCount: Sendable {
    let value = Atomic<Int>(0)
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
/// With `--leases N` the clients first grant N leases between them (not
/// timed), then each keeps its share alive in turn: keep-alive throughput
/// with many leases held.
struct LeaseKeepAliveLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lease-keepalive", abstract: "Lease keep-alives against a running server.")

    @OptionGroup var options: LoadOptions

    @Option(help: "Leases granted before the keep-alives start, spread over the clients (default: one per client).")
    var leases: Int?

    @Option(help: "TTL of each lease, in seconds.")
    var ttl: Int64 = 600

    func validate() throws {
        if let leases, leases < options.clients {
            throw ValidationError("--leases must be at least --clients")
        }
    }

    func run() async throws {
        let options = options, ttl = ttl
        let leaseCount = leases ?? options.clients
        let clock = ContinuousClock()
        let result = try await LoadRunner.withConnections(options) { clients in
            // Grant every lease first (client c grants leases c, c + clients, ...).
            let granted = clock.now
            let ids = try await withThrowingTaskGroup(of: [Int64].self) { group in
                for worker in 0..<options.clients {
                    let lease = Etcdserverpb_Lease.Client(wrapping: clients[worker % clients.count])
                    group.addTask {
                        var ids: [Int64] = []
                        for _ in stride(from: worker, to: leaseCount, by: options.clients) {
                            var grant = Etcdserverpb_LeaseGrantRequest()
                            grant.ttl = ttl
                            ids.append(try await lease.leaseGrant(grant).id)
                        }
                        return ids
                    }
                }
                var byWorker: [[Int64]] = []
                for try await ids in group { byWorker.append(ids) }
                return byWorker
            }
            let grantSeconds = (clock.now - granted).seconds
            print(String(format: "granted %d leases in %.2f s (%.0f/s)", leaseCount, grantSeconds, Double(leaseCount) / grantSeconds))
            let shares = Mutex(ids)
            return try await LoadRunner.runWorkers(options, clients) { _, count, client in
                let lease = Etcdserverpb_Lease.Client(wrapping: client)
                let mine = shares.withLock { $0.removeLast() }
                let (requests, continuation) = AsyncStream<Etcdserverpb_LeaseKeepAliveRequest>.makeStream()
                var keepAlive = Etcdserverpb_LeaseKeepAliveRequest()
                keepAlive.id = mine[0]
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
                            var next = request
                            next.id = mine[sent % mine.count]
                            continuation.yield(next)
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
