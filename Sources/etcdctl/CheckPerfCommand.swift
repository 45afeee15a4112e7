import EtcdClient
import EtcdProto
import Foundation
import Locks

func checkCommand(_ g: @escaping (Invocation) -> Globals) -> Command {
    let check = Command("check <subcommand>", "commands for checking properties of the etcd cluster")
    let perf = Command("perf [options]", "Check the performance of the etcd cluster") { inv in
        try await runCheckPerf(inv, g(inv))
    }
    perf.flag("load", .string, "s", "The performance check's workload model. Accepted workloads: s(small), m(medium), l(large), xl(xLarge)")
    perf.flag("prefix", .string, "/etcdctl-check-perf/", "The prefix for writing the performance check's keys.")
    perf.flag("auto-compact", .bool, "false", "Compact storage with last revision after test is finished.")
    perf.flag("auto-defrag", .bool, "false", "Defragment storage after test is finished.")
    // etcd always runs 60 s; tests run shorter.
    perf.flag("duration", .duration, "60s", "How long the load runs", hidden: true)
    check.add(perf)
    check.add(checkSecurityCommand(g))
    return check
}

/// A workload of etcd's check perf: puts per second, clients (one connection each), seconds.
struct PerfLoad {
    var writesPerSecond: Int
    var clients: Int
    var seconds: Int

    static let models: [String: PerfLoad] = [
        "s": PerfLoad(writesPerSecond: 150, clients: 50, seconds: 60),
        "m": PerfLoad(writesPerSecond: 1000, clients: 200, seconds: 60),
        "l": PerfLoad(writesPerSecond: 8000, clients: 500, seconds: 60),
        "xl": PerfLoad(writesPerSecond: 15000, clients: 1000, seconds: 60),
    ]
    static let aliases = ["s": "s", "small": "s", "m": "m", "medium": "m", "l": "l", "large": "l", "xl": "xl", "xLarge": "xl"]
}

/// Latencies and errors of the check's puts.
struct PerfStats {
    var latencies: [Double] = []
    var errors: [String: Int] = [:]
    var elapsedSeconds = 0.0

    var requestsPerSecond: Double { elapsedSeconds > 0 ? Double(latencies.count) / elapsedSeconds : 0 }
    var slowest: Double { latencies.max() ?? 0 }
    /// Population standard deviation (etcd's report package).
    var stddev: Double {
        guard !latencies.isEmpty else { return .nan }
        let mean = latencies.reduce(0, +) / Double(latencies.count)
        return (latencies.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(latencies.count)).squareRoot()
    }

    /// etcd's verdict lines and whether the check passed.
    func verdict(limit: Int) -> (lines: [String], ok: Bool) {
        var lines: [String] = []
        var ok = true
        if !errors.isEmpty {
            lines.append("FAIL: too many errors")
            for (message, count) in errors.sorted(by: { $0.key < $1.key }) { lines.append("FAIL: ERROR(\(message)) -> \(count)") }
            ok = false
        }
        let rps = requestsPerSecond
        if rps / Double(limit) <= 0.9 {
            lines.append("FAIL: Throughput too low: \(Int(rps) + 1) writes/s")
            ok = false
        } else {
            lines.append("PASS: Throughput is \(Int(rps) + 1) writes/s")
        }
        if slowest > 0.5 {
            lines.append("Slowest request took too long: \(String(format: "%f", slowest))s")
            ok = false
        } else {
            lines.append("PASS: Slowest request took \(String(format: "%f", slowest))s")
        }
        if stddev > 0.1 {
            lines.append("Stddev too high: \(String(format: "%f", stddev))s")
            ok = false
        } else {
            lines.append("PASS: Stddev is \(String(format: "%f", stddev))s")
        }
        lines.append(ok ? "PASS" : "FAIL")
        return (lines, ok)
    }
}

func runCheckPerf(_ inv: Invocation, _ globals: Globals) async throws {
    let loadName = inv.flag("load").string
    guard let model = PerfLoad.aliases[loadName], var load = PerfLoad.models[model] else {
        throw fail(ExitCode.badFeature, "unknown load option \(loadName)")
    }
    let duration = inv.flag("duration").duration
    guard duration > .zero else { throw fail(ExitCode.badArgs, "--duration must be positive") }
    let prefix = inv.flag("prefix").string
    var clients: [EtcdClient] = []
    for _ in 0..<load.clients { clients.append(try globals.makeClient()) }
    defer { clients.forEach { $0.close() } }
    let first = clients[0]

    do {
        let existing = try await first.range(Etcdserverpb_RangeRequest.with {
            $0.key = Data(prefix.utf8)
            $0.rangeEnd = KeyRange.prefixEnd(Data(prefix.utf8))
            $0.limit = 1
        }, timeout: .some(duration))
        if !existing.kvs.isEmpty {
            throw fail(ExitCode.invalidInput, "prefix \(goQuote(prefix)) has keys. Delete with etcdctl del --prefix \(prefix) first")
        }
    } catch let exit as Exit { throw exit } catch { throw fail(ExitCode.error, "\(EtcdClientError(error))") }

    let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    load.seconds = Int(seconds.rounded(.up))
    let stats = try await perfLoad(clients: clients, prefix: Data(prefix.utf8), writesPerSecond: load.writesPerSecond, seconds: seconds)

    let deleted: DeleteResponse
    do {
        deleted = try await first.delete(prefix, options: DeleteOptions(range: .prefix))
    } catch { throw fail(ExitCode.error, "\(EtcdClientError(error))") }
    if inv.flag("auto-compact").bool {
        let revision = deleted.header.revision
        Out.print("Compacting with revision \(revision)")
        do { try await first.compact(revision: revision, physical: true, timeout: .some(.seconds(30))) } catch {
            throw fail(ExitCode.error, "\(EtcdClientError(error))")
        }
        Out.print("Compacted with revision \(revision)")
    }
    if inv.flag("auto-defrag").bool {
        for endpoint in first.endpoints {
            Out.print("Defragmenting \(goQuote(endpoint))")
            do { try await first.defragment(endpoint: endpoint, timeout: .some(.seconds(30))) } catch {
                throw fail(ExitCode.error, "\(EtcdClientError(error))")
            }
            Out.print("Defragmented \(goQuote(endpoint))")
        }
    }
    let (lines, ok) = stats.verdict(limit: load.writesPerSecond)
    for line in lines { Out.print(line) }
    if !ok { throw Exit(code: ExitCode.error) }
}

/// Puts at `writesPerSecond` (one token at a time, as Go's rate.Limiter with
/// burst 1) for `seconds`, spread over the clients; keys are the prefix and
/// 256 bytes starting with a random varint, values 1 KiB of zeros.
func perfLoad(clients: [EtcdClient], prefix: Data, writesPerSecond: Int, seconds: Double) async throws -> PerfStats {
    let value = Data(count: 1024)
    let clock = ContinuousClock()
    let start = clock.now
    let end = start + .milliseconds(Int64(seconds * 1000))
    let interval = Duration.nanoseconds(Int64(1_000_000_000 / max(1, writesPerSecond)))
    let (requests, queue) = AsyncStream.makeStream(of: Data.self, bufferingPolicy: .unbounded)
    let pending = Counter()
    let showProgress = isatty(1) == 1
    let total = Int(seconds.rounded(.up))

    return try await withThrowingTaskGroup(of: PerfStats.self) { group in
        // The generator: one key per tick until the end; at most one queued per client.
        group.addTask {
            var next = start
            var lastShown = -1
            while next < end {
                if pending.value < clients.count {
                    var key = prefix
                    var randomKey = [UInt8](repeating: 0, count: 256)
                    putVarint(&randomKey, Int64.random(in: 0..<Int64.max))
                    key.append(contentsOf: randomKey)
                    pending.add(1)
                    queue.yield(key)
                }
                // A limiter with a burst of 1: a late tick fires at once but does not bank the ticks it missed.
                next = max(next + interval, clock.now)
                if showProgress {
                    let elapsed = Int((clock.now - start) / .seconds(1))
                    if elapsed != lastShown { lastShown = elapsed; Out.print("\r\(min(elapsed, total)) / \(total) seconds", terminator: "") }
                }
                try? await clock.sleep(until: next)
            }
            if showProgress { Out.print("\r\(total) / \(total) seconds") }
            queue.finish()
            return PerfStats()
        }
        for client in clients {
            group.addTask {
                var mine = PerfStats()
                for await key in requests {
                    pending.add(-1)
                    let began = clock.now
                    do {
                        _ = try await client.put(key, value)
                        let took = clock.now - began
                        mine.latencies.append(Double(took.components.seconds) + Double(took.components.attoseconds) / 1e18)
                    } catch {
                        mine.errors["\(EtcdClientError(error))", default: 0] += 1
                    }
                }
                return mine
            }
        }
        var all = PerfStats()
        for try await part in group {
            all.latencies += part.latencies
            for (k, v) in part.errors { all.errors[k, default: 0] += v }
        }
        let elapsed = clock.now - start
        all.elapsedSeconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return all
    }
}

/// Go's binary.PutVarint (zig-zag, then base 128) into the start of `buffer`.
func putVarint(_ buffer: inout [UInt8], _ value: Int64) {
    var u = UInt64(bitPattern: value << 1) ^ UInt64(bitPattern: value >> 63)
    var i = 0
    while u >= 0x80 {
        buffer[i] = UInt8(u & 0x7f) | 0x80
        u >>= 7
        i += 1
    }
    buffer[i] = UInt8(u)
}

/// A shareable atomic counter.
final class Counter: Sendable {
    private let atomic = Atomic<Int>(0)
    var value: Int { atomic.load(ordering: .relaxed) }
    func add(_ n: Int) { atomic.add(n, ordering: .relaxed) }
}
