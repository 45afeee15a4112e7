import Foundation
import Testing

/// A real Prometheus (Debian's) scrapes our /metrics: the queries the etcd
/// dashboards and alerts are built on return values.
@Suite(.serialized) struct PrometheusScrapeTests {
    @Test func prometheusScrapesOurMetrics() throws {
        let ours = try EtcdProcess()
        defer { ours.terminate() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("prometheus-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try """
        global:
          scrape_interval: 1s
        scrape_configs:
          - job_name: etcd
            static_configs:
              - targets: ["127.0.0.1:\(ours.port)"]
        """.write(toFile: dir + "/prometheus.yml", atomically: true, encoding: .utf8)
        let webPort = try EtcdProcess.freePort()
        let prometheus = Process()
        prometheus.executableURL = URL(fileURLWithPath: "/usr/bin/prometheus")
        prometheus.arguments = ["--config.file=\(dir)/prometheus.yml", "--storage.tsdb.path=\(dir)/data",
                                "--web.listen-address=127.0.0.1:\(webPort)", "--log.level=warn"]
        prometheus.standardOutput = FileHandle.nullDevice
        prometheus.standardError = FileHandle.nullDevice
        try prometheus.run()
        defer { prometheus.terminate(); prometheus.waitUntilExit() }

        func query(_ expression: String) throws -> String {
            let encoded = expression.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? expression
            return try Curl.request("http://127.0.0.1:\(webPort)/api/v1/query?query=\(encoded)", method: "GET").body
        }
        let queries = [
            "up{job=\"etcd\"} == 1",
            "etcd_server_has_leader == 1",
            "histogram_quantile(0.99, sum(rate(etcd_disk_wal_fsync_duration_seconds_bucket[15s])) by (le)) > 0",
            "sum(rate(grpc_server_handled_total{grpc_method=\"Put\",grpc_code=\"OK\"}[15s])) > 0",
            "etcd_mvcc_db_total_size_in_bytes > 0",
        ]
        var answered: [String: String] = [:]
        // Writes keep the WAL's fsyncs coming while Prometheus scrapes; at
        // most 60 s for every query to return a sample.
        let deadline = Date().addingTimeInterval(60)
        var round = 0
        while answered.count < queries.count && Date() < deadline {
            round += 1
            #expect(try ours.etcdctl(["put", "scraped", "\(round)"]).status == 0)
            for expression in queries where answered[expression] == nil {
                let body = (try? query(expression)) ?? ""
                if body.contains(#""status":"success""#) && body.contains(#""value":["#) { answered[expression] = body }
            }
            Thread.sleep(forTimeInterval: 0.5)
        }
        for expression in queries {
            #expect(answered[expression] != nil, "no sample for \(expression)")
        }
    }
}
