import ArgumentParser
import Backend
import EtcdProto
import Foundation
import MVCC

/// Drives the MVCC store directly (no gRPC, no raft): puts through the
/// apply path (batched backend commits) and single-key ranges.
struct MVCCBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mvcc",
        abstract: "Benchmark the MVCC store and LMDB backend directly."
    )

    @Option(help: "Number of puts.") var puts: Int = 200_000
    @Option(help: "Number of single-key ranges.") var ranges: Int = 1_000_000
    @Option(help: "Distinct keys written (puts cycle over them).") var keys: Int = 100_000
    @Option(help: "Value size in bytes.") var valueBytes: Int = 256
    @Option(help: "Directory for the database (a temporary one by default).") var dataDir: String?
    @Flag(help: "Save a consistent index with every put, as the apply loop does.") var consistentIndex = false
    @Flag(help: "Fill prevKv in write events (a read per put).") var prevKvEvents = false

    func run() throws {
        let directory = dataDir ?? NSTemporaryDirectory() + "mvcc-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { if dataDir == nil { try? FileManager.default.removeItem(atPath: directory) } }
        let backend = try Backend(path: directory + "/db")
        let store = try KVStore(backend: backend, config: StoreConfig(eventsIncludePrevKv: prevKvEvents))

        let keyData = (0..<keys).map { Data(String(format: "key-%08d", $0).utf8) }
        var request = Etcdserverpb_PutRequest()
        request.value = Data((0..<valueBytes).map { UInt8(truncatingIfNeeded: $0) })
        let clock = ContinuousClock()
        var index: UInt64 = 0
        var cpuStart = threadCPUSeconds()
        let putTime = try clock.measure {
            for i in 0..<puts {
                request.key = keyData[i % keys]
                _ = try store.put(request)
                if consistentIndex {
                    index += 1
                    try backend.setConsistentIndex(index, term: 1)
                }
                try backend.commitIfDue()
            }
            try backend.forceCommit()
        }
        let putSeconds = putTime.seconds
        let putCPU = threadCPUSeconds() - cpuStart
        print(String(format: "put:   %d puts of %d-byte values in %.3f s = %.0f puts/s (%.2f µs/op); CPU %.3f s = %.0f puts per CPU-second",
                     puts, valueBytes, putSeconds, Double(puts) / putSeconds, putSeconds * 1e6 / Double(puts),
                     putCPU, Double(puts) / putCPU))

        var range = Etcdserverpb_RangeRequest()
        var generator = SystemRandomNumberGenerator()
        let written = min(puts, keys)
        let order = (0..<ranges).map { _ in Int.random(in: 0..<written, using: &generator) }
        var found = 0
        cpuStart = threadCPUSeconds()
        let rangeTime = try clock.measure {
            for i in order {
                range.key = keyData[i]
                found += try store.range(range).kvs.count
            }
        }
        precondition(found == ranges, "missing keys")
        let rangeSeconds = rangeTime.seconds
        let rangeCPU = threadCPUSeconds() - cpuStart
        print(String(format: "range: %d single-key ranges in %.3f s = %.0f ranges/s (%.2f µs/op); CPU %.3f s = %.0f ranges per CPU-second",
                     ranges, rangeSeconds, Double(ranges) / rangeSeconds, rangeSeconds * 1e6 / Double(ranges),
                     rangeCPU, Double(ranges) / rangeCPU))
        print("db size \(backend.sizeBytes) bytes, revision \(store.currentRevision)")
        try backend.close()
    }

    /// CPU time of this thread: on a shared machine wall time undercounts.
    private func threadCPUSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
