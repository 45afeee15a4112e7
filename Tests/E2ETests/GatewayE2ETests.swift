import Foundation
import Testing

/// The HTTP side of the client port, driven with curl: the `/v3/*` JSON
/// gateway against the real etcd 3.4's (same status, same JSON once ids,
/// hashes and times are masked), and the endpoints as etcd 3.6 answers them.
@Suite(.serialized) struct GatewayE2ETests {
    /// One curl request: method, path, body, and what of the answer differs
    /// legitimately between two servers.
    struct Step: CustomStringConvertible {
        var method = "POST"
        var path: String
        var body: String?
        /// Keys whose values are masked anywhere in the JSON answer.
        var mask: Set<String> = []
        /// Send the token from the last `/v3/auth/authenticate` answer.
        var withToken = false
        /// Send this as the token instead.
        var token: String?
        var description: String { "\(method) \(path) \(body ?? "")" }
    }

    /// Differ between any two members: ids, terms, the token.
    static let alwaysMasked: Set<String> = ["cluster_id", "member_id", "raft_term", "token"]
    /// Status: what differs between members, and the fields etcd 3.4 lacks.
    static let statusMasked: Set<String> = ["version", "leader", "dbSize", "dbSizeInUse", "raftIndex", "raftTerm", "raftAppliedIndex",
                                            "dbSizeQuota", "storageVersion", "downgradeInfo", "isLearner", "errors"]

    static func steps() -> [Step] {
        let foo = "Zm9v", bar = "YmFy", a = "YQ==", z = "eg=="
        return [
            // KV: good bodies.
            Step(path: "/v3/kv/put", body: #"{"key":"\#(foo)","value":"\#(bar)"}"#),
            Step(path: "/v3/kv/put", body: #"{"key":"\#(foo)","value":"YmF6","prev_kv":true}"#),
            Step(path: "/v3/kv/put", body: #"{"key":"\#(a)","value":"\#(bar)"}"#),
            Step(path: "/v3/kv/range", body: #"{"key":"\#(foo)"}"#),
            Step(path: "/v3/kv/range", body: #"{"key":"\#(a)","range_end":"\#(z)"}"#),
            Step(path: "/v3/kv/range", body: #"{"key":"AA==","range_end":"AA==","keys_only":true}"#),
            Step(path: "/v3/kv/range", body: #"{"key":"\#(foo)","revision":"2"}"#),
            Step(path: "/v3/kv/range", body: #"{"key":"\#(foo)","serializable":true,"count_only":true}"#),
            Step(path: "/v3/kv/range", body: #"{"key":"\#(a)","range_end":"\#(z)","limit":"1","sort_order":"DESCEND"}"#),
            Step(path: "/v3/kv/range", body: #"{"key":"\#(foo)","unknown_field":1}"#),
            Step(path: "/v3beta/kv/range", body: #"{"key":"\#(foo)"}"#),
            Step(path: "/v3/kv/txn", body: #"{"compare":[{"key":"\#(foo)","target":"VALUE","result":"EQUAL","value":"YmF6"}],"success":[{"request_put":{"key":"eA==","value":"MQ=="}}],"failure":[{"request_range":{"key":"\#(foo)"}}]}"#),
            Step(path: "/v3/kv/txn", body: #"{"compare":[{"key":"\#(foo)","target":"VERSION","result":"GREATER","version":"10"}],"failure":[{"request_range":{"key":"\#(foo)"}},{"request_delete_range":{"key":"eA==","prev_kv":true}}]}"#),
            Step(path: "/v3/kv/deleterange", body: #"{"key":"\#(a)","prev_kv":true}"#),
            Step(path: "/v3/kv/deleterange", body: #"{"key":"bm9uZQ=="}"#),
            Step(path: "/v3/kv/compaction", body: #"{"revision":"3"}"#),
            // KV: bad bodies and etcd's errors.
            Step(path: "/v3/kv/range", body: #"{"key":"\#(foo)","revision":"2"}"#),
            Step(path: "/v3/kv/compaction", body: #"{"revision":"100"}"#),
            Step(path: "/v3/kv/range", body: ""),
            Step(path: "/v3/kv/put", body: #"{"value":"\#(bar)"}"#),
            Step(path: "/v3/kv/range", body: #"{bad"#, mask: ["error", "message"]),
            Step(path: "/v3/kv/range", body: #"{"key":1}"#, mask: ["error", "message"]),
            Step(path: "/v3/kv/range", body: #"{"key":"\#(foo)","limit":"many"}"#, mask: ["error", "message"]),
            Step(path: "/v3/kv/txn", body: #"{"success":[{"request_put":{"key":"\#(foo)","value":"MQ=="}},{"request_put":{"key":"\#(foo)","value":"Mg=="}}]}"#),
            Step(path: "/v3/kv/put", body: #"{"key":"\#(foo)","value":"\#(bar)","lease":"12345"}"#),
            Step(path: "/v3/kv/put", body: #"{"key":"\#(foo)","ignore_value":true}"#),
            // Leases.
            Step(path: "/v3/lease/grant", body: #"{"TTL":"60","ID":"7777"}"#),
            Step(path: "/v3/lease/grant", body: #"{"TTL":"60","ID":"7777"}"#),
            Step(path: "/v3/kv/put", body: #"{"key":"bA==","value":"\#(bar)","lease":"7777"}"#),
            // Lock and Election on that lease ("lock/1e61", "election/1e61").
            Step(path: "/v3/lock/lock", body: #"{"name":"bG9jaw==","lease":"7777"}"#),
            Step(path: "/v3/lock/unlock", body: #"{"key":"bG9jay8xZTYx"}"#),
            Step(path: "/v3/lock/lock", body: #"{"name":"bG9jaw==","lease":"12345"}"#),
            Step(path: "/v3/election/campaign", body: #"{"name":"ZWxlY3Rpb24=","lease":"7777","value":"djE="}"#),
            Step(path: "/v3/election/leader", body: #"{"name":"ZWxlY3Rpb24="}"#),
            Step(path: "/v3/election/proclaim", body: #"{"leader":{"name":"ZWxlY3Rpb24=","key":"ZWxlY3Rpb24vMWU2MQ==","rev":"1","lease":"7777"},"value":"djI="}"#),
            Step(path: "/v3/election/leader", body: #"{"name":"bm9uZQ=="}"#),
            Step(path: "/v3/election/resign", body: #"{"leader":{"name":"ZWxlY3Rpb24=","key":"ZWxlY3Rpb24vMWU2MQ==","rev":"1","lease":"7777"}}"#),
            // etcd lists a lease's keys in Go map order (random), so they are masked.
            Step(path: "/v3/lease/timetolive", body: #"{"ID":"7777","keys":true}"#, mask: ["TTL", "keys"]),
            Step(path: "/v3/kv/lease/timetolive", body: #"{"ID":"7777"}"#, mask: ["TTL"]),
            Step(path: "/v3/lease/leases", body: "{}"),
            Step(path: "/v3/kv/lease/leases", body: ""),
            Step(path: "/v3/lease/revoke", body: #"{"ID":"7777"}"#),
            Step(path: "/v3/kv/lease/revoke", body: #"{"ID":"7777"}"#),
            Step(path: "/v3/lease/timetolive", body: #"{"ID":"7777"}"#),
            // Cluster and maintenance.
            Step(path: "/v3/cluster/member/list", body: "{}", mask: ["ID", "name", "peerURLs", "clientURLs"]),
            Step(path: "/v3/cluster/member/remove", body: #"{"ID":"1"}"#),
            Step(path: "/v3/cluster/member/update", body: #"{"ID":"1","peerURLs":["http://127.0.0.1:1"]}"#),
            Step(path: "/v3/cluster/member/promote", body: #"{"ID":"1"}"#),
            // etcd 3.4 leaves these two headers empty; 3.6 and ours fill them.
            Step(path: "/v3/maintenance/alarm", body: #"{"action":"GET"}"#, mask: ["header"]),
            Step(path: "/v3/maintenance/status", body: "{}", mask: statusMasked),
            Step(path: "/v3/maintenance/hash", body: "{}", mask: ["hash"]),
            Step(path: "/v3/maintenance/defragment", body: "{}", mask: ["header"]),
            // Auth: users, roles, a token in the Authorization header.
            Step(path: "/v3/auth/user/add", body: #"{"name":"root","password":"pw"}"#),
            Step(path: "/v3/auth/user/add", body: #"{"name":"root","password":"pw"}"#),
            Step(path: "/v3/auth/user/grant", body: #"{"user":"root","role":"root"}"#),
            Step(path: "/v3/auth/role/add", body: #"{"name":"reader"}"#),
            Step(path: "/v3/auth/role/grant", body: #"{"name":"reader","perm":{"permType":"READ","key":"\#(foo)"}}"#),
            Step(path: "/v3/auth/role/get", body: #"{"role":"reader"}"#),
            Step(path: "/v3/auth/role/list", body: "{}"),
            Step(path: "/v3/auth/user/add", body: #"{"name":"alice","password":"secret"}"#),
            Step(path: "/v3/auth/user/grant", body: #"{"user":"alice","role":"reader"}"#),
            Step(path: "/v3/auth/user/get", body: #"{"name":"alice"}"#),
            Step(path: "/v3/auth/user/list", body: "{}"),
            Step(path: "/v3/auth/user/changepw", body: #"{"name":"alice","password":"secret2"}"#),
            Step(path: "/v3/auth/enable", body: "{}"),
            Step(path: "/v3/kv/range", body: #"{"key":"\#(foo)"}"#),
            Step(path: "/v3/auth/authenticate", body: #"{"name":"alice","password":"wrong"}"#),
            Step(path: "/v3/auth/authenticate", body: #"{"name":"alice","password":"secret2"}"#),
            Step(path: "/v3/kv/range", body: #"{"key":"\#(foo)"}"#, withToken: true),
            Step(path: "/v3/kv/range", body: #"{"key":"\#(foo)"}"#, token: "xyz"),
            Step(path: "/v3/kv/put", body: #"{"key":"\#(foo)","value":"eA=="}"#, withToken: true),
            Step(path: "/v3/auth/authenticate", body: #"{"name":"root","password":"pw"}"#),
            Step(path: "/v3/auth/user/revoke", body: #"{"name":"alice","role":"reader"}"#, withToken: true),
            Step(path: "/v3/auth/role/revoke", body: #"{"role":"reader","key":"\#(foo)"}"#, withToken: true),
            Step(path: "/v3/auth/role/delete", body: #"{"role":"reader"}"#, withToken: true),
            Step(path: "/v3/auth/user/delete", body: #"{"name":"alice"}"#, withToken: true),
            Step(path: "/v3/auth/disable", body: "{}", withToken: true),
            Step(path: "/v3/kv/range", body: #"{"key":"\#(foo)"}"#),
            // Paths and methods the gateway does not serve.
            Step(path: "/v3/kv/nope", body: "{}"),
            Step(method: "GET", path: "/v3/kv/range"),
            Step(method: "GET", path: "/nope"),
        ]
    }

    @Test func curlRequestsMatchRealEtcd() throws {
        let ours = try EtcdProcess()
        defer { ours.terminate() }
        let theirs = try RealEtcdProcess()
        defer { theirs.terminate() }
        var tokens: [Int: String] = [:]
        var mismatches: [String] = []
        let steps = Self.steps()
        #expect(steps.count >= 40)
        var statuses: Set<Int> = []
        for step in steps {
            var answers: [(status: Int, body: String)] = []
            for port in [ours.port, theirs.port] {
                let answer = try Curl.request("http://127.0.0.1:\(port)\(step.path)", method: step.method, body: step.body,
                                              headers: (step.token ?? (step.withToken ? tokens[port] : nil)).map { ["Authorization: \($0)"] } ?? [])
                if step.path == "/v3/auth/authenticate", let token = Curl.field("token", in: answer.body) { tokens[port] = token }
                answers.append(answer)
            }
            statuses.insert(answers[1].status)
            let masked = answers.map { Curl.masked($0.body, keys: Self.alwaysMasked.union(step.mask)) }
            if answers[0].status != answers[1].status || masked[0] != masked[1] {
                mismatches.append("\(step)\n  ours: \(answers[0].status) \(answers[0].body)\n  etcd: \(answers[1].status) \(answers[1].body)")
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) of \(steps.count) differ:\n\(mismatches.joined(separator: "\n"))")
        // The script covers success and the error statuses grpc-gateway maps to.
        #expect(statuses.isSuperset(of: [200, 400, 401, 403, 404, 405, 412]), "\(statuses)")
    }

    /// Bodies over --max-request-bytes get gRPC's RESOURCE_EXHAUSTED (429) as
    /// through etcd's own gateway; bodies far beyond it are refused (413)
    /// without being held.
    @Test func oversizedBodies() throws {
        let ours = try EtcdProcess(extraArguments: ["--max-request-bytes", "1024"])
        defer { ours.terminate() }
        let theirs = try RealEtcdProcess(extraArguments: ["--max-request-bytes", "1024"])
        defer { theirs.terminate() }
        // Base64 of 800 KiB: over the gRPC limit (1024 + 512 KiB).
        let value = Data(repeating: 0x61, count: 800 * 1024).base64EncodedString()
        let body = #"{"key":"Zm9v","value":"\#(value)"}"#
        var answers: [(status: Int, body: String)] = []
        for port in [ours.port, theirs.port] {
            answers.append(try Curl.request("http://127.0.0.1:\(port)/v3/kv/put", body: body))
        }
        #expect(answers[0].status == 429 && answers[0].status == answers[1].status, "\(answers.map(\.status))")
        #expect(Curl.masked(answers[0].body, keys: []) == Curl.masked(answers[1].body, keys: []), "\(answers)")
        // Far beyond: 413 from us, and the connection is usable afterwards.
        let huge = String(repeating: "a", count: 4 * 1024 * 1024)
        let refused = try Curl.request("http://127.0.0.1:\(ours.port)/v3/kv/put", body: #"{"key":"\#(huge)"}"#)
        #expect(refused.status == 413, "\(refused)")
        #expect(try Curl.request("http://127.0.0.1:\(ours.port)/health").status == 200)
    }

    @Test func versionAndHealthAsEtcd36() throws {
        let ours = try EtcdProcess()
        defer { ours.terminate() }
        let base = "http://127.0.0.1:\(ours.port)"
        let version = try Curl.request(base + "/version")
        #expect(version.status == 200 && version.body == #"{"etcdserver":"3.6.0","etcdcluster":"3.6.0","storage":"3.6.0"}"#, "\(version)")
        for path in ["/health", "/health?serializable=true", "/health?exclude=NOSPACE"] {
            let health = try Curl.request(base + path)
            #expect(health.status == 200 && health.body == #"{"health":"true","reason":""}"#, "\(path): \(health)")
        }
        #expect(try Curl.request(base + "/health", method: "POST", body: "").status == 405)
        // HTTP/2 without TLS (prior knowledge): the same answers through GRPCWire's hook.
        let h2 = try Curl.request(base + "/health", options: ["--http2-prior-knowledge"], withVersion: true)
        #expect(h2 == (200, #"{"health":"true","reason":""}|2"#), "\(h2)")
        let h2Put = try Curl.request(base + "/v3/kv/put", body: #"{"key":"eQ==","value":"eQ=="}"#, options: ["--http2-prior-knowledge"])
        #expect(h2Put.status == 200 && h2Put.body.contains(#""revision":"2""#), "\(h2Put)")
        #expect(try Curl.request(base + "/livez") == (200, "ok\n"))
        #expect(try Curl.request(base + "/livez?verbose") == (200, "[+]serializable_read ok\nok\n"))
        #expect(try Curl.request(base + "/readyz?verbose") ==
            (200, "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\n[+]non_learner ok\nok\n"))
        #expect(try Curl.request(base + "/readyz?verbose&exclude=non_learner") ==
            (200, "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\nok\n"))
        #expect(try Curl.request(base + "/readyz/linearizable_read") == (200, "ok\n"))
        #expect(try Curl.request(base + "/livez/serializable_read?verbose") == (200, "[+]serializable_read ok\nok\n"))
        #expect(try Curl.request(base + "/readyz/nope").status == 404)
        // /metrics: the member's exposition in Prometheus' text format.
        let metrics = try Curl.request(base + "/metrics")
        #expect(metrics.status == 200 && metrics.body.contains("\netcd_server_has_leader 1"), "\(metrics.body.prefix(300))")

        // An alarm: /health fails with its reason unless excluded; a CORRUPT
        // alarm fails /readyz's data_corruption check.
        let member = try #require(Curl.field("member_id", in: try Curl.request(base + "/v3/kv/range", body: #"{"key":"eA=="}"#).body))
        let nospace = try Curl.request(base + "/v3/maintenance/alarm", body: #"{"action":"ACTIVATE","memberID":"\#(member)","alarm":"NOSPACE"}"#)
        #expect(nospace.status == 200, "\(nospace)")
        #expect(try Curl.request(base + "/health") == (503, #"{"health":"false","reason":"ALARM NOSPACE"}"# + "\n"))
        #expect(try Curl.request(base + "/health?exclude=NOSPACE") == (200, #"{"health":"true","reason":""}"#))
        #expect(try Curl.request(base + "/readyz").status == 200)
        _ = try Curl.request(base + "/v3/maintenance/alarm", body: #"{"action":"ACTIVATE","memberID":"\#(member)","alarm":"CORRUPT"}"#)
        let ready = try Curl.request(base + "/readyz")
        #expect(ready.status == 503 && ready.body.contains("[-]data_corruption failed: alarm activated: CORRUPT\n"), "\(ready)")
        #expect(try Curl.request(base + "/livez").status == 200)
    }

    /// A member whose cluster has no leader (its one peer never starts).
    @Test func healthWithoutLeader() throws {
        let port = try EtcdProcess.freePort(), peer = try EtcdProcess.freePort(), other = try EtcdProcess.freePort()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("e2e-\(UUID().uuidString)").path
        let ours = try EtcdProcess(
            arguments: ["--data-dir", dir, "--name", "a", "--listen-client-urls", "http://127.0.0.1:\(port)",
                        "--advertise-client-urls", "http://127.0.0.1:\(port)", "--listen-peer-urls", "http://127.0.0.1:\(peer)",
                        "--initial-advertise-peer-urls", "http://127.0.0.1:\(peer)",
                        "--initial-cluster", "a=http://127.0.0.1:\(peer),b=http://127.0.0.1:\(other)"],
            port: port, dataDir: dir, ownsDataDir: true)
        defer {
            ours.kill9()
            try? FileManager.default.removeItem(atPath: dir)
        }
        let base = "http://127.0.0.1:\(port)"
        #expect(try Curl.request(base + "/health") == (503, #"{"health":"false","reason":"RAFT NO LEADER"}"# + "\n"))
        #expect(try Curl.request(base + "/health?serializable=true") == (200, #"{"health":"true","reason":""}"#))
        #expect(try Curl.request(base + "/livez") == (200, "ok\n"))
        let ready = try Curl.request(base + "/readyz", timeout: 30)
        #expect(ready.status == 503 && ready.body.contains("[-]linearizable_read failed: ") && ready.body.contains("[+]serializable_read ok"),
                "\(ready)")
        // Still without a leader (so still publishing itself), SIGTERM stops it.
        ours.process.terminate()
        let deadline = Date().addingTimeInterval(20)
        while ours.process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        #expect(!ours.process.isRunning, "SIGTERM did not stop a member without a leader")
    }

    /// `--listen-metrics-urls`: /metrics and the health endpoints, nothing else.
    @Test func metricsListener() throws {
        let metricsPort = try EtcdProcess.freePort()
        let ours = try EtcdProcess(extraArguments: ["--listen-metrics-urls", "http://127.0.0.1:\(metricsPort)"])
        defer { ours.terminate() }
        let base = "http://127.0.0.1:\(metricsPort)"
        #expect(try Curl.request(base + "/health") == (200, #"{"health":"true","reason":""}"#))
        #expect(try Curl.request(base + "/livez") == (200, "ok\n"))
        #expect(try Curl.request(base + "/readyz/serializable_read") == (200, "ok\n"))
        #expect(try Curl.request(base + "/version").status == 404)
        #expect(try Curl.request(base + "/v3/kv/range", body: #"{"key":"Zm9v"}"#).status == 404)
        let metrics = try Curl.request(base + "/metrics")
        #expect(metrics.status == 200 && metrics.body.contains("# TYPE etcd_server_has_leader gauge"), "\(metrics.body.prefix(300))")
    }

    /// The watch and keep-alive streams, as grpc-gateway streams them:
    /// newline-delimited `{"result":…}` objects, ours and etcd 3.4's alike.
    @Test func watchAndKeepAliveStreams() throws {
        let ours = try EtcdProcess()
        defer { ours.terminate() }
        let theirs = try RealEtcdProcess()
        defer { theirs.terminate() }
        var outputs: [[String]] = []
        for port in [ours.port, theirs.port] {
            let base = "http://127.0.0.1:\(port)"
            // Each stream ends by curl's --max-time (no signal needed).
            let watch = try CurlStream(base + "/v3/watch", body: #"{"create_request":{"key":"dw==","prev_kv":true}}"#, seconds: 8)
            defer { watch.waitUntilExit() }
            let created = try #require(watch.line(timeout: 8))
            _ = try Curl.request(base + "/v3/kv/put", body: #"{"key":"dw==","value":"MQ=="}"#)
            _ = try Curl.request(base + "/v3/kv/put", body: #"{"key":"dw==","value":"Mg=="}"#)
            let first = try #require(watch.line(timeout: 10))
            let second = try #require(watch.line(timeout: 10))
            let lease = try Curl.request(base + "/v3/lease/grant", body: #"{"TTL":"30","ID":"99"}"#)
            #expect(lease.status == 200)
            let keepAlive = try CurlStream(base + "/v3/lease/keepalive", body: #"{"ID":"99"}"#, seconds: 5)
            defer { keepAlive.waitUntilExit() }
            let kept = try #require(keepAlive.line(timeout: 10))
            outputs.append([created, first, second, kept].map { Curl.masked($0, keys: Self.alwaysMasked.union(["watch_id"])) })
        }
        #expect(outputs[0] == outputs[1], "ours: \(outputs[0])\netcd: \(outputs[1])")
        #expect(outputs[0].first?.contains(#""created":true"#) == true)
        #expect(outputs[0][2].contains(#""prev_kv""#))
    }

    /// One port, plaintext and TLS, HTTP/1.1 and HTTP/2 (curl's ALPN picks
    /// h2 over TLS), next to gRPC.
    @Test func httpOverTLSWithHTTP1AndH2() throws {
        let certs = try TLSE2ETests.certificates()
        let server = try TLSE2ETests.server(certs)
        defer { server.terminate() }
        let tls = ["--cacert", certs.cert("ca"), "--cert", certs.cert("client"), "--key", certs.key("client")]
        let base = "https://127.0.0.1:\(server.port)"
        for version in ["--http1.1", "--http2"] {
            let health = try Curl.request(base + "/health", options: tls + [version], withVersion: true)
            #expect(health.status == 200 && health.body.hasPrefix(#"{"health":"true","reason":""}"#), "\(version): \(health)")
            #expect(health.body.hasSuffix(version == "--http2" ? "|2" : "|1.1"), "\(version): \(health)")
            let put = try Curl.request(base + "/v3/kv/put", body: #"{"key":"aA==","value":"\#(version == "--http2" ? "Mg==" : "MQ==")"}"#,
                                       options: tls + [version])
            #expect(put.status == 200 && put.body.contains(#""revision":""#), "\(version): \(put)")
            let bad = try Curl.request(base + "/v3/kv/range", body: "{bad", options: tls + [version])
            #expect(bad.status == 400 && bad.body.contains(#""code":3"#), "\(version): \(bad)")
        }
        #expect(try server.etcdctl(["get", "h", "--print-value-only"]).out == "2\n")
    }
}

/// curl, run as a process.
enum Curl {
    /// The status and body of one request. `withVersion`: the body gets
    /// `|<http version>` appended.
    static func request(_ url: String, method: String? = nil, body: String? = nil, headers: [String] = [], options: [String] = [],
                        timeout: Int = 15, withVersion: Bool = false) throws -> (status: Int, body: String) {
        var arguments = ["-s", "-S", "--max-time", String(timeout), "-o", "-", "-w", withVersion ? "|%{http_version}\n%{http_code}" : "\n%{http_code}"]
        if let method { arguments += ["-X", method] }
        if let body {
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("curl-\(UUID().uuidString)").path
            FileManager.default.createFile(atPath: file, contents: Data(body.utf8))
            arguments += ["--data-binary", "@" + file]
        }
        for header in headers { arguments += ["-H", header] }
        let result = try EtcdProcess.run("/usr/bin/curl", arguments + options + [url], environment: [:], input: nil)
        guard let split = result.out.lastIndex(of: "\n"), let status = Int(result.out[split...].dropFirst()) else {
            throw EtcdProcess.ProcessError.missing("curl output for \(url): \(result)")
        }
        return (status, String(result.out[..<split]))
    }

    /// A top-level-or-nested string field of a JSON answer.
    static func field(_ name: String, in json: String) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) else { return nil }
        func find(_ value: Any) -> String? {
            if let map = value as? [String: Any] {
                if let found = map[name] as? String { return found }
                for child in map.values { if let found = find(child) { return found } }
            }
            if let list = value as? [Any] { for child in list { if let found = find(child) { return found } } }
            return nil
        }
        return find(object)
    }

    /// JSON without `keys` anywhere (keys sorted), or the text itself.
    static func masked(_ text: String, keys: Set<String>) -> String {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]),
              object is [String: Any] || object is [Any] else { return text }
        func mask(_ value: Any) -> Any {
            if let map = value as? [String: Any] {
                return Dictionary(uniqueKeysWithValues: map.filter { !keys.contains($0.key) }.map { ($0.key, mask($0.value)) })
            }
            if let list = value as? [Any] { return list.map(mask) }
            return value
        }
        guard let data = try? JSONSerialization.data(withJSONObject: mask(object), options: [.sortedKeys]) else { return text }
        return String(decoding: data, as: UTF8.self)
    }
}

/// A streaming curl (`-N`) that gives up after `seconds`, writing to a file
/// whose lines are read as they come.
final class CurlStream {
    let process = Process()
    private let file = FileManager.default.temporaryDirectory.appendingPathComponent("stream-\(UUID().uuidString)").path
    private var consumed = 0

    init(_ url: String, body: String, seconds: Int) throws {
        FileManager.default.createFile(atPath: file, contents: nil)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = ["-s", "-N", "--max-time", String(seconds), "-X", "POST", "-d", body, "-o", file, url]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    deinit { try? FileManager.default.removeItem(atPath: file) }

    /// The next whole line, waiting up to `timeout` seconds.
    func line(timeout: TimeInterval) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let data = FileManager.default.contents(atPath: file) ?? Data()
            let rest = data.dropFirst(consumed)
            if let newline = rest.firstIndex(of: 0x0A) {
                let line = rest[rest.startIndex..<newline]
                consumed += line.count + 1
                return String(decoding: line, as: UTF8.self)
            }
            if Date() > deadline { return nil }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    /// Waits for curl to give up (its --max-time).
    func waitUntilExit() { process.waitUntilExit() }
}
