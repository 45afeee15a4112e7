import EtcdClient
import Foundation
import Testing

@Suite(.serialized) struct CheckPerfTests {
    /// `check perf --load s` for 3 s (etcd's 60 s through the hidden --duration):
    /// 150 puts/s, then the prefix deleted, compacted and defragmented, and etcd's verdict lines.
    @Test func smallLoadRunsAndCleansUp() async throws {
        let server = try await offload { try TwinEtcd() }
        defer { server.cleanup() }
        let client = try EtcdClient(endpoints: [server.endpoint])
        defer { client.close() }
        let started = ContinuousClock.now
        let r = try await offload {
            try runTool(ourEtcdctl, ["--endpoints=\(server.endpoint)", "check", "perf", "--load=s", "--duration=3s", "--auto-compact", "--auto-defrag"], timeout: 30)
        }
        let took = ContinuousClock.now - started
        #expect(took < .seconds(10), "took \(took)")
        let lines = r.out.split(separator: "\n").map(String.init)
        #expect(lines.count == 8, "\(r)")
        guard lines.count == 8 else { return }
        let revision = try #require(lines[0].firstMatch(of: /^Compacting with revision ([0-9]+)$/).flatMap { Int64($0.1) }, "\(r)")
        #expect(lines[1] == "Compacted with revision \(revision)")
        #expect(lines[2] == "Defragmenting \"\(server.endpoint)\"" && lines[3] == "Defragmented \"\(server.endpoint)\"")
        // Every put is one revision, then one delete of the prefix: at most 150/s for 3 s get
        // through the limiter. (How many fewer depends on the machine: a debug build on a
        // busy machine makes far fewer, so the lower bound only says that the load ran.)
        let puts = revision - 2
        #expect(puts >= 30 && puts <= 452, "\(puts) puts")
        let throughput = try #require(lines[4].firstMatch(of: /^(PASS: Throughput is|FAIL: Throughput too low:) ([0-9]+) writes\/s$/).flatMap { Int64($0.2) }, "\(r)")
        // etcd's figure: successful puts over the load's time (at least the 3 s), plus one.
        #expect(throughput <= puts / 3 + 1 && throughput >= puts / 10, "\(lines[4]) after \(puts) puts")
        // PASS above 90% of 150/s (the printed figure is the rate's integer part plus one).
        if throughput - 1 != 135 { #expect(lines[4].hasPrefix("PASS") == (throughput - 1 > 135), "\(lines[4])") }
        #expect(lines[5].contains(/^(PASS: Slowest request took|Slowest request took too long:) [0-9]+\.[0-9]{6}s$/), "\(lines[5])")
        #expect(lines[6].contains(/^(PASS: Stddev is|Stddev too high:) [0-9]+\.[0-9]{6}s$/), "\(lines[6])")
        // The verdict agrees with the lines above it and with the exit code.
        let passed = lines[4...6].allSatisfy { $0.hasPrefix("PASS") }
        #expect(lines[7] == (passed ? "PASS" : "FAIL") && r.status == (passed ? 0 : 1), "\(r)")
        // Nothing left under the prefix, history compacted at the delete.
        #expect(try await client.get("/etcdctl-check-perf/", options: .prefix).count == 0)
        #expect(try await client.get("x").header.revision == revision)
        await #expect(throws: EtcdClientError.compacted) { try await client.get("x", options: GetOptions(revision: revision - 1)) }
    }

    @Test func refusesABusyPrefixAndUnknownLoadsLikeTheGoEtcdctl() async throws {
        let server = try await offload { try TwinEtcd() }
        defer { server.cleanup() }
        _ = try runTool(goEtcdctl, ["--endpoints=\(server.endpoint)", "put", "/busy/k", "v"])
        for args in [["check", "perf", "--prefix=/busy/"], ["check", "perf", "--load=huge"], ["check", "perf", "--load=medium", "--prefix=/busy/"]] {
            let ours = try await offload { try runTool(ourEtcdctl, ["--endpoints=\(server.endpoint)"] + args) }
            let go = try await offload { try runTool(goEtcdctl, ["--endpoints=\(server.endpoint)"] + args) }
            #expect(ours.status == go.status && ours.out == go.out && ours.err == go.err, "ours: \(ours)\ngo: \(go)")
            #expect(ours.status == 3 || ours.status == 4)
        }
    }
}
