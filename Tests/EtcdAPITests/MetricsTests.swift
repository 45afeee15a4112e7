import EtcdAPI
import EtcdGRPC
import EtcdProto
@testable import EtcdServer
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Testing

/// The Prometheus exposition of a served member: etcd's names, values that
/// follow what happened, and text that Prometheus' own checker accepts.
@Suite struct MetricsTests {
    @Test func valuesFollowRequestsRaftAndTheDisk() async throws {
        try await withServedMember { member, client in
            let kv = Etcdserverpb_KV.Client(wrapping: client)
            for i in 0..<20 { _ = try await kv.put(WatchServiceTests.put("k\(i % 5)", "v\(i)")) }
            let before = Exposition(member.metrics.exposition())
            for i in 0..<7 { _ = try await kv.put(WatchServiceTests.put("m\(i)", "x")) }
            var range = Etcdserverpb_RangeRequest()
            range.key = Data("k0".utf8)
            for _ in 0..<3 { _ = try await kv.range(range) }
            var txn = Etcdserverpb_TxnRequest()
            var op = Etcdserverpb_RequestOp()
            op.requestPut = WatchServiceTests.put("t", "1")
            txn.success = [op, op.withKey("t2")]
            _ = try await kv.txn(txn)
            var delete = Etcdserverpb_DeleteRangeRequest()
            delete.key = Data("m0".utf8)
            _ = try await kv.deleteRange(delete)
            // A request refused before it reaches raft still counts as handled, with its code.
            await #expect(throws: RPCError.self) { _ = try await kv.put(WatchServiceTests.put("", "no key")) }

            let after = try await Exposition.awaiting(member) { $0["etcd_disk_backend_commit_duration_seconds_count"] ?? 0 > 0 }
            // mvcc counters: 7 puts + 2 in the txn; 3 ranges; 1 delete; 1 txn.
            #expect(after.delta("etcd_mvcc_put_total", since: before) == 9)
            #expect(after.delta("etcd_mvcc_range_total", since: before) == 3)
            #expect(after.delta("etcd_mvcc_delete_total", since: before) == 1)
            #expect(after.delta("etcd_mvcc_txn_total", since: before) == 1)
            #expect(after["etcd_debugging_mvcc_keys_total"] == Double(5 + 7 + 2))
            #expect(after["etcd_server_has_leader"] == 1)
            #expect(after["etcd_server_is_leader"] == 1)
            #expect(after["etcd_server_leader_changes_seen_total"] == 1)
            #expect(after["etcd_server_proposals_applied_total"] == Double(member.raftStatus().appliedIndex))
            #expect(after["etcd_server_proposals_pending"] == 0)
            #expect(after["etcd_server_quota_backend_bytes"] == Double(2 << 30))
            #expect(after["etcd_mvcc_db_total_size_in_bytes"] ?? 0 > 0)
            // Every acknowledged write was fsynced in the WAL at least once.
            #expect(after.delta("etcd_disk_wal_fsync_duration_seconds_count", since: before) ?? 0 >= 1)
            #expect(after["etcd_disk_wal_fsync_duration_seconds_bucket{le=\"8.192\"}"] == after["etcd_disk_wal_fsync_duration_seconds_count"])

            let put = #"grpc_type="unary",grpc_service="etcdserverpb.KV",grpc_method="Put""#
            #expect(after.delta("grpc_server_started_total{\(put)}", since: before) == 8)
            #expect(after.delta("grpc_server_handled_total{\(put),grpc_code=\"OK\"}", since: before) == 7)
            #expect(after["grpc_server_handled_total{\(put),grpc_code=\"InvalidArgument\"}"] == 1)
            #expect(after["grpc_server_handled_total{\(put),grpc_code=\"NotFound\"}"] == 0, "every code's series exists from the start")
            #expect(after.delta("grpc_server_msg_received_total{\(put)}", since: before) == 8)
            #expect(after.delta("etcd_network_client_grpc_received_bytes_total", since: before) ?? 0 > 0)
            #expect(after.delta("etcd_network_client_grpc_sent_bytes_total", since: before) ?? 0 > 0)

            #expect(after["etcd_server_version{server_version=\"\(EtcdVersion.server)\"}"] == 1)
            #expect(after["etcd_server_id{server_id=\"\(String(member.memberID, radix: 16))\"}"] == 1)
            #expect(after["etcd_cluster_version{cluster_version=\"3.6\"}"] == 1)
            #expect(after["process_resident_memory_bytes"] ?? 0 > Double(1 << 20))
            #expect(after["process_open_fds"] ?? 0 > 3)
            let started = try #require(after["process_start_time_seconds"])
            #expect(abs(started - Date().timeIntervalSince1970) < 24 * 3600)
        }
    }

    /// `--metrics extensive` adds go-grpc-prometheus' handling-time
    /// histogram per method (Prometheus' default buckets), which etcd's
    /// etcdGRPCRequestsSlow alert reads; the default, basic, has none.
    @Test func extensiveMetricsTimeEveryCall() async throws {
        let put = #"grpc_type="unary",grpc_service="etcdserverpb.KV",grpc_method="Put""#
        for extensive in [false, true] {
            try await withServedMember(configure: { config in
                // As `--metrics` sets it (its parsing: ServerConfigTests).
                let parsed = try ServerConfig(settings: [.metrics: extensive ? "extensive" : "basic"])
                config.extensiveMetrics = parsed.extensiveMetrics
            }) { member, client in
                let kv = Etcdserverpb_KV.Client(wrapping: client)
                for i in 0..<5 { _ = try await kv.put(WatchServiceTests.put("k\(i)", "v")) }
                await #expect(throws: RPCError.self) { _ = try await kv.put(WatchServiceTests.put("", "no key")) }
                let exposition = Exposition(member.metrics.exposition())
                if extensive {
                    #expect(exposition.types["grpc_server_handling_seconds"] == "histogram")
                    #expect(exposition["grpc_server_handling_seconds_count{\(put)}"] == 6)
                    #expect(exposition["grpc_server_handling_seconds_bucket{\(put),le=\"10.0\"}"] == 6)
                    #expect(exposition["grpc_server_handling_seconds_bucket{\(put),le=\"+Inf\"}"] == 6)
                    let sum = try #require(exposition["grpc_server_handling_seconds_sum{\(put)}"])
                    #expect(sum > 0 && sum < 60)
                } else {
                    #expect(exposition.types["grpc_server_handling_seconds"] == nil)
                    #expect(exposition["grpc_server_handled_total{\(put),grpc_code=\"OK\"}"] == 5)
                }
            }
        }
    }

    @Test func promtoolAcceptsTheExpositionAfterLoad() async throws {
        try await withServedMember { member, client in
            let kv = Etcdserverpb_KV.Client(wrapping: client)
            for i in 0..<50 { _ = try await kv.put(WatchServiceTests.put("load\(i % 10)", String(repeating: "v", count: i))) }
            var range = Etcdserverpb_RangeRequest()
            range.key = Data("load".utf8)
            range.rangeEnd = Data("loae".utf8)
            _ = try await kv.range(range)
            let exposition = try await Exposition.awaiting(member) { $0["etcd_disk_backend_commit_duration_seconds_count"] ?? 0 > 0 }
            #expect(exposition.types["etcd_disk_wal_fsync_duration_seconds"] == "histogram")
            #expect(exposition.types["etcd_mvcc_put_total"] == "counter")
            #expect(exposition.types["etcd_server_has_leader"] == "gauge")
            // promtool parses it (exit 1 would be a parse error) and finds
            // only what it finds in etcd 3.4's own exposition: gauges that
            // etcd names *_total (exit 3, lint findings).
            let (status, output) = try promtool(checking: member.metrics.exposition())
            #expect(status == 0 || status == 3, "promtool check metrics: \(output)")
            let findings = output.split(separator: "\n").map(String.init)
            let unexpected = findings.filter { finding in
                !Self.etcdGaugesNamedTotal.contains { finding == "\($0) non-counter metrics should not have \"_total\" suffix" }
            }
            #expect(unexpected.isEmpty, "promtool findings etcd 3.4's exposition does not have: \(unexpected)")
        }
    }

    /// etcd's gauges whose names end in _total (`promtool check metrics` on
    /// etcd 3.4's /metrics flags each of them, with exit status 3).
    static let etcdGaugesNamedTotal = [
        "etcd_debugging_mvcc_keys_total", "etcd_debugging_mvcc_slow_watcher_total", "etcd_debugging_mvcc_watcher_total",
        "etcd_disk_wal_write_bytes_total", "etcd_server_proposals_applied_total", "etcd_server_proposals_committed_total",
        "etcd_server_snapshot_apply_in_progress_total",
    ]

    @Test func theListenerHandsOutTheExposition() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("metrics-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let member = try Member(config: ServerConfig(name: "metrics", dataDir: dir))
        defer { member.stop() }
        let withMember = ClientListener(address: try ListenAddress(parsing: "http://127.0.0.1:0"), member: member)
        let healthOnly = ClientListener(address: try ListenAddress(parsing: "http://127.0.0.1:0"))
        try await withThrowingTaskGroup { group in
            // (Served and stopped: a listener must not be dropped unserved.)
            for listener in [withMember, healthOnly] {
                group.addTask { try await listener.serve() }
                _ = try await listener.boundPort()
                listener.stop()
            }
            try await group.waitForAll()
        }
        let exposition = try #require(withMember.metricsExposition)
        #expect(Exposition(exposition())["etcd_server_id{server_id=\"\(String(member.memberID, radix: 16))\"}"] == 1)
        #expect(healthOnly.metricsExposition == nil)
    }

    /// Runs Debian's `promtool check metrics` on `text`.
    func promtool(checking text: [UInt8]) throws -> (Int32, String) {
        let candidates = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        let path = try #require(candidates.first { FileManager.default.isExecutableFile(atPath: $0) },
                                "promtool is missing: apt-get install prometheus (scripts/test.sh installs it)")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = ["check", "metrics"]
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        try process.run()
        input.fileHandleForWriting.write(Data(text))
        try input.fileHandleForWriting.close()
        let result = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: result, as: UTF8.self))
    }
}

/// A parsed exposition: samples by their series (`name{labels}` as printed)
/// and `# TYPE` by family.
struct Exposition {
    var samples: [String: Double] = [:]
    var types: [String: String] = [:]

    init(_ bytes: [UInt8]) {
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                if parts.count == 4 { types[String(parts[2])] = String(parts[3]) }
                continue
            }
            guard !line.hasPrefix("#"), let space = line.lastIndex(of: " ") else { continue }
            samples[String(line[..<space])] = Double(line[line.index(after: space)...])
        }
    }

    subscript(series: String) -> Double? { samples[series] }

    func delta(_ series: String, since earlier: Exposition) -> Double? {
        guard let now = samples[series] else { return nil }
        return now - (earlier.samples[series] ?? 0)
    }

    /// The member's exposition once `ready` holds (the backend commits on a
    /// 100 ms timer), within 10 s.
    static func awaiting(_ member: Member, _ ready: (Exposition) -> Bool) async throws -> Exposition {
        let deadline = ContinuousClock.now + .seconds(10)
        while true {
            let exposition = Exposition(member.metrics.exposition())
            if ready(exposition) || ContinuousClock.now > deadline { return exposition }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}

extension Etcdserverpb_RequestOp {
    func withKey(_ key: String) -> Etcdserverpb_RequestOp {
        var op = self
        op.requestPut.key = Data(key.utf8)
        return op
    }
}
