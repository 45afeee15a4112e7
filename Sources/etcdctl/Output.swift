import EtcdClient
import EtcdProto
import SwiftProtobuf
import Foundation

// MARK: - Go-style JSON (encoding/json of etcd's Go structs)

/// A JSON value written the way Go's encoding/json writes it.
indirect enum GoJSON {
    case object([(String, GoJSON)])
    case array([GoJSON])
    case string(String)
    case bytes(Data)
    case int(Int64)
    case uint(UInt64)
    case bool(Bool)
    case null

    var text: String {
        switch self {
        case let .object(fields): return "{" + fields.map { goJSONString($0.0) + ":" + $0.1.text }.joined(separator: ",") + "}"
        case let .array(items): return "[" + items.map(\.text).joined(separator: ",") + "]"
        case let .string(s): return goJSONString(s)
        case let .bytes(d): return "\"" + d.base64EncodedString() + "\""
        case let .int(v): return String(v)
        case let .uint(v): return String(v)
        case let .bool(b): return b ? "true" : "false"
        case .null: return "null"
        }
    }
}

/// Builds an object, dropping `omitempty` zero values.
struct JSONObject {
    var fields: [(String, GoJSON)] = []
    mutating func int(_ k: String, _ v: Int64, omit: Bool = true) { if !omit || v != 0 { fields.append((k, .int(v))) } }
    mutating func uint(_ k: String, _ v: UInt64, omit: Bool = true) { if !omit || v != 0 { fields.append((k, .uint(v))) } }
    mutating func bool(_ k: String, _ v: Bool, omit: Bool = true) { if !omit || v { fields.append((k, .bool(v))) } }
    mutating func string(_ k: String, _ v: String, omit: Bool = true) { if !omit || !v.isEmpty { fields.append((k, .string(v))) } }
    mutating func bytes(_ k: String, _ v: Data) { if !v.isEmpty { fields.append((k, .bytes(v))) } }
    mutating func strings(_ k: String, _ v: [String]) { if !v.isEmpty { fields.append((k, .array(v.map { .string($0) }))) } }
    mutating func value(_ k: String, _ v: GoJSON?) { if let v { fields.append((k, v)) } }
    mutating func array(_ k: String, _ v: [GoJSON]) { if !v.isEmpty { fields.append((k, .array(v))) } }
    var json: GoJSON { .object(fields) }
}


enum JSONOf {
    static func header(_ h: ResponseHeader) -> GoJSON {
        var o = JSONObject()
        o.uint("cluster_id", h.clusterID)
        o.uint("member_id", h.memberID)
        o.int("revision", h.revision)
        o.uint("raft_term", h.raftTerm)
        return o.json
    }
    /// A `*pb.ResponseHeader` embedded in a clientv3 struct: its fields are promoted.
    static func embeddedHeader(_ h: ResponseHeader, into o: inout JSONObject) {
        o.uint("cluster_id", h.clusterID)
        o.uint("member_id", h.memberID)
        o.int("revision", h.revision)
        o.uint("raft_term", h.raftTerm)
    }
    static func kv(_ kv: KeyValue) -> GoJSON {
        var o = JSONObject()
        o.bytes("key", kv.key)
        o.int("create_revision", kv.createRevision)
        o.int("mod_revision", kv.modRevision)
        o.int("version", kv.version)
        o.bytes("value", kv.value)
        o.int("lease", kv.lease)
        return o.json
    }
    static func range(_ r: RangeResponse) -> GoJSON {
        var o = JSONObject()
        o.value("header", r.hasHeader ? header(r.header) : nil)
        o.array("kvs", r.kvs.map(kv))
        o.bool("more", r.more)
        o.int("count", r.count)
        return o.json
    }
    static func put(_ r: PutResponse) -> GoJSON {
        var o = JSONObject()
        o.value("header", r.hasHeader ? header(r.header) : nil)
        o.value("prev_kv", r.hasPrevKv ? kv(r.prevKv) : nil)
        return o.json
    }
    static func delete(_ r: DeleteResponse) -> GoJSON {
        var o = JSONObject()
        o.value("header", r.hasHeader ? header(r.header) : nil)
        o.int("deleted", r.deleted)
        o.array("prev_kvs", r.prevKvs.map(kv))
        return o.json
    }
    static func txn(_ r: TxnResponse) -> GoJSON {
        var o = JSONObject()
        o.value("header", r.hasHeader ? header(r.header) : nil)
        o.bool("succeeded", r.succeeded)
        o.array("responses", r.responses.map { op in
            let inner: GoJSON
            switch op.response {
            case let .responseRange(x)?: inner = .object([("ResponseRange", range(x))])
            case let .responsePut(x)?: inner = .object([("ResponsePut", put(x))])
            case let .responseDeleteRange(x)?: inner = .object([("ResponseDeleteRange", delete(x))])
            case let .responseTxn(x)?: inner = .object([("ResponseTxn", txn(x))])
            case nil: return .object([("Response", .null)])
            }
            return .object([("Response", inner)])
        })
        return o.json
    }
    static func event(_ e: Event) -> GoJSON {
        var o = JSONObject()
        o.int("type", Int64(e.type.rawValue))
        o.value("kv", e.hasKv ? kv(e.kv) : nil)
        o.value("prev_kv", e.hasPrevKv ? kv(e.prevKv) : nil)
        return o.json
    }
    static func watch(_ r: WatchResponse) -> GoJSON {
        .object([("Header", header(r.header)), ("Events", r.events.isEmpty ? .null : .array(r.events.map(event))),
                 ("CompactRevision", .int(r.compactRevision)), ("Canceled", .bool(r.canceled)), ("Created", .bool(r.created))])
    }
    static func member(_ m: Member) -> GoJSON {
        var o = JSONObject()
        o.uint("ID", m.id)
        o.string("name", m.name)
        o.strings("peerURLs", m.peerUrls)
        o.strings("clientURLs", m.clientUrls)
        o.bool("isLearner", m.isLearner)
        return o.json
    }
    static func members(header h: ResponseHeader, member: Member? = nil, members: [Member]) -> GoJSON {
        var o = JSONObject()
        o.value("header", header(h))
        o.value("member", member.map(Self.member))
        o.array("members", members.map(Self.member))
        return o.json
    }
    static func headerOnly(_ h: ResponseHeader, has: Bool = true) -> GoJSON {
        var o = JSONObject()
        o.value("header", has ? header(h) : nil)
        return o.json
    }
    static func status(_ s: StatusResponse) -> GoJSON {
        var o = JSONObject()
        o.value("header", header(s.header))
        o.string("version", s.version)
        o.int("dbSize", s.dbSize)
        o.uint("leader", s.leader)
        o.uint("raftIndex", s.raftIndex)
        o.uint("raftTerm", s.raftTerm)
        o.uint("raftAppliedIndex", s.raftAppliedIndex)
        o.strings("errors", s.errors)
        o.int("dbSizeInUse", s.dbSizeInUse)
        o.bool("isLearner", s.isLearner)
        return o.json
    }
}

// MARK: - Formats

enum OutputFormat: String { case simple, json, fields, table, protobuf }

func unsupported(_ format: OutputFormat) -> Exit {
    fail(ExitCode.badFeature, "\(format.rawValue) not supported as output format")
}

/// Prints responses like etcdctl's printers.
struct Printer: Sendable {
    var format: OutputFormat
    var hex: Bool
    var valueOnly = false
    /// `--print-k8s`: values in Kubernetes' protobuf envelope are decoded (simple format only).
    var k8s = false

    func printJSON(_ j: GoJSON) { Out.print(j.text) }

    func text(_ data: Data) -> String {
        if hex { return data.map { String(format: "\\x%02x", $0) }.joined() }
        return String(decoding: data, as: UTF8.self)
    }

    func printKV(_ kv: KeyValue) {
        if !valueOnly { Out.print(text(kv.key)) }
        if k8s, let object = K8sObject(kv.value) {
            Out.print(object.lines.joined(separator: "\n"))
        } else {
            Out.print(text(kv.value))
        }
    }

    func protobuf(_ message: some SwiftProtobuf.Message) throws {
        let data: Data = try message.serializedData()
        Out.write(data)
    }

    // fields helpers
    func fieldsHeader(_ h: ResponseHeader) {
        Out.print("\"ClusterID\" : \(h.clusterID)")
        Out.print("\"MemberID\" : \(h.memberID)")
        Out.print("\"Revision\" : \(h.revision)")
        Out.print("\"RaftTerm\" : \(h.raftTerm)")
    }
    func fieldsKV(_ prefix: String, _ kv: KeyValue) {
        Out.print("\"\(prefix)Key\" : \(goQuoteBytes(kv.key))")
        Out.print("\"\(prefix)CreateRevision\" : \(kv.createRevision)")
        Out.print("\"\(prefix)ModRevision\" : \(kv.modRevision)")
        Out.print("\"\(prefix)Version\" : \(kv.version)")
        Out.print("\"\(prefix)Value\" : \(goQuoteBytes(kv.value))")
        Out.print("\"\(prefix)Lease\" : \(kv.lease)")
    }

    func get(_ r: RangeResponse) throws {
        switch format {
        case .simple: r.kvs.forEach(printKV)
        case .json: printJSON(JSONOf.range(r))
        case .protobuf: try protobuf(r)
        case .fields:
            fieldsHeader(r.header)
            for kv in r.kvs { fieldsKV("", kv) }
            Out.print("\"More\" : \(r.more)")
            Out.print("\"Count\" : \(r.count)")
        case .table: throw unsupported(format)
        }
    }

    func put(_ r: PutResponse) throws {
        switch format {
        case .simple:
            Out.print("OK")
            if r.hasPrevKv { printKV(r.prevKv) }
        case .json: printJSON(JSONOf.put(r))
        case .protobuf: try protobuf(r)
        case .fields:
            fieldsHeader(r.header)
            if r.hasPrevKv { fieldsKV("Prev", r.prevKv) }
        case .table: throw unsupported(format)
        }
    }

    func del(_ r: DeleteResponse) throws {
        switch format {
        case .simple:
            Out.print("\(r.deleted)")
            r.prevKvs.forEach(printKV)
        case .json: printJSON(JSONOf.delete(r))
        case .protobuf: try protobuf(r)
        case .fields:
            fieldsHeader(r.header)
            Out.print("\"Deleted\" : \(r.deleted)")
            for kv in r.prevKvs { fieldsKV("Prev", kv) }
        case .table: throw unsupported(format)
        }
    }

    func txn(_ r: TxnResponse) throws {
        switch format {
        case .simple:
            Out.print(r.succeeded ? "SUCCESS" : "FAILURE")
            for op in r.responses {
                Out.print("")
                switch op.response {
                case let .responseDeleteRange(x)?: try del(x)
                case let .responsePut(x)?: try put(x)
                case let .responseRange(x)?: try get(x)
                default: Out.print("unexpected response \(op)")
                }
            }
        case .json: printJSON(JSONOf.txn(r))
        case .protobuf: try protobuf(r)
        case .fields:
            fieldsHeader(r.header)
            Out.print("\"Succeeded\" : \(r.succeeded)")
            for op in r.responses {
                switch op.response {
                case let .responseDeleteRange(x)?: try del(x)
                case let .responsePut(x)?: try put(x)
                case let .responseRange(x)?: try get(x)
                default: Out.print("\"Unknown\" : \(goQuote("\(op)"))")
                }
            }
        case .table: throw unsupported(format)
        }
    }

    func watch(_ r: WatchResponse) throws {
        switch format {
        case .simple:
            for e in r.events {
                Out.print(e.type == .put ? "PUT" : "DELETE")
                if e.hasPrevKv { printKV(e.prevKv) }
                printKV(e.kv)
            }
        case .json: printJSON(JSONOf.watch(r))
        case .fields:
            fieldsHeader(r.header)
            for e in r.events {
                Out.print("\"Type\" : \(e.type == .put ? "PUT" : "DELETE")")
                if e.hasPrevKv { fieldsKV("Prev", e.prevKv) }
                fieldsKV("", e.kv)
            }
        case .protobuf, .table: throw unsupported(format)
        }
    }
}

/// The subset of SwiftProtobuf.Message the printer needs.


/// Go's `time.Duration.String()`.
func goDurationString(_ d: Duration) -> String {
    let (s, atto) = d.components
    var ns = s * 1_000_000_000 + atto / 1_000_000_000
    if ns == 0 { return "0s" }
    let negative = ns < 0
    if negative { ns = -ns }
    func frac(_ v: Int64, _ digits: Int) -> String {
        let p = Int64(pow(10.0, Double(digits)))
        let whole = v / p
        var f = String(v % p)
        f = String(repeating: "0", count: digits - f.count) + f
        while f.hasSuffix("0") { f.removeLast() }
        return f.isEmpty ? "\(whole)" : "\(whole).\(f)"
    }
    var out: String
    if ns < 1_000 { out = "\(ns)ns" }
    else if ns < 1_000_000 { out = frac(ns, 3) + "µs" }
    else if ns < 1_000_000_000 { out = frac(ns, 6) + "ms" }
    else {
        let hours = ns / 3_600_000_000_000
        let minutes = (ns / 60_000_000_000) % 60
        let secondsPart = ns % 60_000_000_000
        out = ""
        if hours > 0 { out += "\(hours)h" }
        if hours > 0 || minutes > 0 { out += "\(minutes)m" }
        out += frac(secondsPart, 9) + "s"
    }
    return negative ? "-" + out : out
}
