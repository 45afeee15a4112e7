import EtcdGRPC
import EtcdProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import HTTP2PingResponder
import SwiftProtobuf
import Testing

/// The same seeded script of KV operations against the real etcd (Debian's
/// etcd-server 3.4) and against ours; every response — or error code and
/// message — must be equal once member/cluster ids and the raft term are
/// blanked out. Revisions, counts, `more`, prev kvs and txn results are compared.
@Suite(.serialized) struct DifferentialTests {
    static let realEtcd = "/usr/bin/etcd"

    @Test(arguments: [1, 2, 3] as [UInt64])
    func kvScriptMatchesRealEtcd(seed: UInt64) async throws {
        let ours = try EtcdProcess()
        defer { ours.terminate() }
        let theirs = try RealEtcdProcess()
        defer { theirs.terminate() }

        let ports = (ours: ours.port, theirs: theirs.port)
        try await withKVClients(ports: [ours.port, theirs.port]) { clients in
            var script = KVScript(seed: seed)
            var mismatches: [String] = []
            var responses = 0, errors = Set<String>(), withKeyValues = 0
            if ProcessInfo.processInfo.environment["DIFF_SELF_CHECK"] != nil {
                // Demonstrates the comparison can fail: one extra write on our side only.
                _ = await KVOperation.put({ var p = Etcdserverpb_PutRequest(); p.key = Data("a".utf8); return p }()).run(on: clients[0])
            }
            for step in 0..<300 {
                let operation = script.next()
                let ourResult = await operation.run(on: clients[0])
                let theirResult = await operation.run(on: clients[1])
                if ourResult != theirResult {
                    mismatches.append("step \(step) \(operation)\n  ours:  \(ourResult)\n  etcd:  \(theirResult)")
                    if mismatches.count >= 5 { break }
                }
                script.observe(theirResult)
                switch theirResult {
                case let .response(text): responses += 1; if text.contains("kvs {") || text.contains("prev_kv") { withKeyValues += 1 }
                case let .error(_, message): errors.insert(message)
                }
            }
            #expect(mismatches.isEmpty, "seed \(seed):\n\(mismatches.joined(separator: "\n"))")

            // The same history must hash the same: HashKV at the current
            // revision and at an earlier one that is not compacted.
            for revision in [0, script.latestRevision - 3] as [Int64] {
                var request = Etcdserverpb_HashKVRequest()
                request.revision = revision
                let hashes = try await [ports.ours, ports.theirs].asyncMap { port in
                    try await withMaintenanceClient(port: port) { try await $0.hashKV(request) }
                }
                #expect(hashes[0].hash == hashes[1].hash, "hashKV(\(revision)): ours \(hashes[0]) etcd \(hashes[1])")
                #expect(hashes[0].compactRevision == hashes[1].compactRevision)
                #expect(hashes[0].header.revision == hashes[1].header.revision)
            }
            // The script must exercise real data and etcd's error paths, or equality means little.
            #expect(responses > 150 && withKeyValues > 50, "\(responses) responses, \(withKeyValues) with key-values")
            #expect(errors.count >= 2, "errors seen: \(errors)")
        }
    }
}

/// Runs `body` with one KV client per port.
func withKVClients(ports: [Int], _ body: ([Etcdserverpb_KV.Client<HTTP2ClientTransport.Posix>]) async throws -> Void) async throws {
    try await withGRPCClients(ports: ports) { clients in try await body(clients.map { Etcdserverpb_KV.Client(wrapping: $0) }) }
}

/// Runs `body` with one gRPC client per port (plaintext, loopback).
func withGRPCClients(ports: [Int], _ body: ([GRPCClient<HTTP2ClientTransport.Posix>]) async throws -> Void) async throws {
    let grpcClients = try ports.map { port -> GRPCClient<HTTP2ClientTransport.Posix> in
        var config = HTTP2ClientTransport.Posix.Config.defaults
        config.channelDebuggingCallbacks.onCreateTCPConnection = { HTTP2PingResponder.install(on: $0, expectsClientPreface: false) }
        return GRPCClient(transport: try HTTP2ClientTransport.Posix(
            target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext, config: config))
    }
    try await withThrowingTaskGroup { group in
        for client in grpcClients { group.addTask { try await client.runConnections() } }
        defer { grpcClients.forEach { $0.beginGracefulShutdown() } }
        try await body(grpcClients)
    }
}

/// Runs `body` with a Maintenance client on `port`.
func withMaintenanceClient<T: Sendable>(port: Int, _ body: (Etcdserverpb_Maintenance.Client<HTTP2ClientTransport.Posix>) async throws -> T) async throws -> T {
    let client = GRPCClient(transport: try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext))
    return try await withThrowingTaskGroup { group in
        group.addTask { try await client.runConnections() }
        defer { client.beginGracefulShutdown() }
        return try await body(Etcdserverpb_Maintenance.Client(wrapping: client))
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for element in self { out.append(try await transform(element)) }
        return out
    }
}

/// One outcome, comparable across servers.
enum Outcome: Equatable, CustomStringConvertible {
    case response(String)
    case error(RPCError.Code, String)

    var description: String {
        switch self {
        case let .response(text): return text
        case let .error(code, message): return "error \(code): \(message)"
        }
    }

    var revision: Int64? {
        guard case let .response(text) = self, let range = text.range(of: "revision: ") else { return nil }
        return Int64(text[range.upperBound...].prefix { $0.isNumber })
    }
}

enum KVOperation: CustomStringConvertible {
    case put(Etcdserverpb_PutRequest)
    case range(Etcdserverpb_RangeRequest)
    case delete(Etcdserverpb_DeleteRangeRequest)
    case txn(Etcdserverpb_TxnRequest)
    case compact(Etcdserverpb_CompactionRequest)

    var description: String {
        switch self {
        case let .put(r): return "put " + r.textFormatString().replacingOccurrences(of: "\n", with: " ")
        case let .range(r): return "range " + r.textFormatString().replacingOccurrences(of: "\n", with: " ")
        case let .delete(r): return "delete " + r.textFormatString().replacingOccurrences(of: "\n", with: " ")
        case let .txn(r): return "txn " + r.textFormatString().replacingOccurrences(of: "\n", with: " ")
        case let .compact(r): return "compact " + r.textFormatString().replacingOccurrences(of: "\n", with: " ")
        }
    }

    func run(on kv: Etcdserverpb_KV.Client<HTTP2ClientTransport.Posix>) async -> Outcome {
        do {
            switch self {
            case let .put(r): var m = try await kv.put(r); blank(&m.header); return .response(m.textFormatString())
            case let .range(r): var m = try await kv.range(r); blank(&m.header); return .response(m.textFormatString())
            case let .delete(r): var m = try await kv.deleteRange(r); blank(&m.header); return .response(m.textFormatString())
            case let .txn(r):
                var m = try await kv.txn(r)
                blank(&m)
                return .response(m.textFormatString())
            case let .compact(r): var m = try await kv.compact(r); blank(&m.header); return .response(m.textFormatString())
            }
        } catch let error as RPCError {
            return .error(error.code, error.message)
        } catch {
            return .error(.unknown, "\(error)")
        }
    }
}

private func blank(_ header: inout Etcdserverpb_ResponseHeader) {
    header.clusterID = 0
    header.memberID = 0
    header.raftTerm = 0
}

private func blank(_ txn: inout Etcdserverpb_TxnResponse) {
    blank(&txn.header)
    for i in txn.responses.indices {
        switch txn.responses[i].response {
        case var .responseRange(r)?: blank(&r.header); txn.responses[i].response = .responseRange(r)
        case var .responsePut(r)?: blank(&r.header); txn.responses[i].response = .responsePut(r)
        case var .responseDeleteRange(r)?: blank(&r.header); txn.responses[i].response = .responseDeleteRange(r)
        case var .responseTxn(r)?: blank(&r); txn.responses[i].response = .responseTxn(r)
        case nil: break
        }
    }
}

/// A seeded generator of KV requests over a small key space, so keys collide,
/// ranges overlap and compares go both ways.
struct KVScript {
    private var state: UInt64
    private var revision: Int64 = 1

    init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }

    var latestRevision: Int64 { revision }

    mutating func observe(_ outcome: Outcome) {
        if let revision = outcome.revision { self.revision = max(self.revision, revision) }
    }

    private mutating func random(_ n: Int) -> Int {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return Int(state % UInt64(n))
    }

    private mutating func key() -> Data { Data((["a", "ab", "abc", "b", "ba", "c", "\u{00}", "z\u{FF}"][random(8)]).utf8) }

    private mutating func rangeEnd(for key: Data) -> Data {
        switch random(5) {
        case 0: return Data([0])                       // from key
        case 1:                                          // prefix
            var end = key
            if let last = end.indices.last, end[last] < 0xFF { end[last] += 1; return end }
            return Data([0])
        case 2: return Data("b".utf8)
        default: return Data()                           // single key
        }
    }

    private mutating func rangeRequest() -> Etcdserverpb_RangeRequest {
        var r = Etcdserverpb_RangeRequest()
        r.key = key()
        r.rangeEnd = rangeEnd(for: r.key)
        if random(3) == 0 { r.limit = Int64(random(4)) }
        if random(4) == 0 { r.revision = Int64(random(Int(revision) + 3)) }
        if random(3) == 0 {
            r.sortOrder = [.none, .ascend, .descend][random(3)]
            r.sortTarget = [.key, .version, .create, .mod, .value][random(5)]
        }
        r.keysOnly = random(6) == 0
        r.countOnly = random(8) == 0
        if random(8) == 0 { r.minModRevision = Int64(random(Int(revision) + 1)) }
        if random(8) == 0 { r.maxModRevision = Int64(random(Int(revision) + 1)) }
        if random(8) == 0 { r.minCreateRevision = Int64(random(Int(revision) + 1)) }
        if random(8) == 0 { r.maxCreateRevision = Int64(random(Int(revision) + 1)) }
        return r
    }

    private mutating func putRequest() -> Etcdserverpb_PutRequest {
        var r = Etcdserverpb_PutRequest()
        r.key = key()
        r.value = Data("v\(random(5))".utf8)
        r.prevKv = random(2) == 0
        if random(10) == 0 { r.ignoreValue = true; r.value = Data() }
        return r
    }

    private mutating func deleteRequest() -> Etcdserverpb_DeleteRangeRequest {
        var r = Etcdserverpb_DeleteRangeRequest()
        r.key = key()
        r.rangeEnd = rangeEnd(for: r.key)
        r.prevKv = random(2) == 0
        return r
    }

    private mutating func requestOp() -> Etcdserverpb_RequestOp {
        var op = Etcdserverpb_RequestOp()
        switch random(3) {
        case 0: op.requestRange = rangeRequest()
        case 1: op.requestPut = putRequest()
        default: op.requestDeleteRange = deleteRequest()
        }
        return op
    }

    mutating func next() -> KVOperation {
        switch random(20) {
        case 0..<6: return .put(putRequest())
        case 6..<11: return .range(rangeRequest())
        case 11..<13: return .delete(deleteRequest())
        case 13..<19:
            var txn = Etcdserverpb_TxnRequest()
            for _ in 0..<random(3) {
                var compare = Etcdserverpb_Compare()
                compare.key = key()
                compare.result = [.equal, .greater, .less, .notEqual][random(4)]
                switch random(4) {
                case 0: compare.target = .version; compare.version = Int64(random(3))
                case 1: compare.target = .create; compare.createRevision = Int64(random(Int(revision) + 1))
                case 2: compare.target = .mod; compare.modRevision = Int64(random(Int(revision) + 1))
                default: compare.target = .value; compare.value = Data("v\(random(5))".utf8)
                }
                if random(5) == 0 { compare.rangeEnd = rangeEnd(for: compare.key) }
                txn.compare.append(compare)
            }
            txn.success = (0..<random(3)).map { _ in requestOp() }
            txn.failure = (0..<random(3)).map { _ in requestOp() }
            return .txn(txn)
        default:
            var compaction = Etcdserverpb_CompactionRequest()
            compaction.revision = Int64(random(Int(revision) + 2))
            compaction.physical = random(2) == 0
            return .compact(compaction)
        }
    }
}

/// The real etcd 3.4 on free loopback ports with a temporary data dir.
final class RealEtcdProcess {
    let process = Process()
    let port: Int
    let dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("real-\(UUID().uuidString)").path

    /// Fails (the test that asked) when Debian's etcd-server is not installed.
    /// `clientScheme` and `clientFlags`: how it is probed for readiness
    /// (its TLS flags come in `extraArguments`).
    init(extraArguments: [String] = [], clientScheme: String = "http", clientFlags: [String] = []) throws {
        guard FileManager.default.isExecutableFile(atPath: DifferentialTests.realEtcd) else {
            throw EtcdProcess.ProcessError.missing("\(DifferentialTests.realEtcd) (Debian package etcd-server; scripts/test.sh installs it)")
        }
        port = try EtcdProcess.freePort()
        let peerPort = try EtcdProcess.freePort()
        process.executableURL = URL(fileURLWithPath: DifferentialTests.realEtcd)
        process.arguments = ["--data-dir", dataDir,
                             "--listen-client-urls", "\(clientScheme)://127.0.0.1:\(port)",
                             "--advertise-client-urls", "\(clientScheme)://127.0.0.1:\(port)",
                             "--listen-peer-urls", "http://127.0.0.1:\(peerPort)", "--initial-advertise-peer-urls", "http://127.0.0.1:\(peerPort)",
                             "--initial-cluster", "default=http://127.0.0.1:\(peerPort)"] + extraArguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            let probe = try EtcdProcess.run("/usr/bin/etcdctl",
                                            ["--endpoints=\(clientScheme)://127.0.0.1:\(port)", "--dial-timeout=1s"] + clientFlags + ["endpoint", "health"],
                                            environment: ["ETCDCTL_API": "3"], input: nil)
            if probe.status == 0 { return }
            Thread.sleep(forTimeInterval: 0.2)
        }
        terminate()
        throw EtcdProcess.ProcessError.notReady
    }

    func terminate() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: dataDir)
    }
}
