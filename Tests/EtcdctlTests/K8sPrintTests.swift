import EtcdClient
import Foundation
import Testing

/// Hand-built protobuf, for values in Kubernetes' storage envelope.
enum Proto {
    static func varint(_ v: UInt64) -> Data {
        var v = v
        var out = Data()
        while v >= 0x80 { out.append(UInt8(v & 0x7f) | 0x80); v >>= 7 }
        out.append(UInt8(v))
        return out
    }
    static func int(_ field: UInt64, _ v: UInt64) -> Data { varint(field << 3) + varint(v) }
    static func bytes(_ field: UInt64, _ d: Data) -> Data { varint(field << 3 | 2) + varint(UInt64(d.count)) + d }
    static func string(_ field: UInt64, _ s: String) -> Data { bytes(field, Data(s.utf8)) }
    static func fixed32(_ field: UInt64, _ v: UInt32) -> Data { varint(field << 3 | 5) + withUnsafeBytes(of: v.littleEndian) { Data($0) } }
    static func fixed64(_ field: UInt64, _ v: UInt64) -> Data { varint(field << 3 | 1) + withUnsafeBytes(of: v.littleEndian) { Data($0) } }

    /// "k8s\0" + runtime.Unknown{typeMeta{apiVersion, kind}, raw, contentEncoding, contentType}.
    static func envelope(apiVersion: String, kind: String, raw: Data, contentType: String = "") -> Data {
        var unknown = bytes(1, string(1, apiVersion) + string(2, kind)) + bytes(2, raw)
        if !contentType.isEmpty { unknown += string(4, contentType) }
        return Data("k8s\0".utf8) + unknown
    }
}

@Suite(.serialized) struct K8sPrintTests {
    /// A Pod: ObjectMeta (name, namespace, uid, creationTimestamp), a spec with one container, a status.
    static let pod: Data = {
        let meta = Proto.string(1, "nginx") + Proto.string(3, "default") + Proto.string(5, "abc-123") + Proto.bytes(8, Proto.int(1, 1_700_000_000))
        let spec = Proto.bytes(2, Proto.string(1, "web") + Proto.string(2, "nginx:1.25")) + Proto.int(4, 30)
        let status = Proto.string(1, "Running")
        return Proto.envelope(apiVersion: "v1", kind: "Pod", raw: Proto.bytes(1, meta) + Proto.bytes(2, spec) + Proto.bytes(3, status))
    }()

    static let podLines = """
        apiVersion: v1
        kind: Pod
        name: default/nginx
        raw:
          1 {
            1: "nginx"
            3: "default"
            5: "abc-123"
            8 {
              1: 1700000000
            }
          }
          2 {
            2 {
              1: "web"
              2: "nginx:1.25"
            }
            4: 30
          }
          3 {
            1: "Running"
          }

        """

    @Test func getDecodesEnvelopesAndLeavesOtherValuesAlone() async throws {
        let server = try await offload { try TwinEtcd() }
        defer { server.cleanup() }
        let client = try EtcdClient(endpoints: [server.endpoint])
        defer { client.close() }
        // A cluster-scoped object with scalars of every wire type, bytes that are no message, and a content type.
        let odd = Proto.envelope(apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRole",
                                 raw: Proto.bytes(1, Proto.string(1, "admin")) + Proto.int(2, UInt64(bitPattern: -1))
                                    + Proto.fixed32(3, 0xdeadbeef) + Proto.fixed64(4, 1) + Proto.bytes(5, Data([0xff, 0x00, 0x07])),
                                 contentType: "application/vnd.kubernetes.protobuf")
        try await client.put("/registry/pods/default/nginx", Self.pod)
        try await client.put("/registry/clusterroles/admin", odd)
        try await client.put("/registry/plain", "just text")
        try await client.put("/registry/truncated", Data("k8s\0".utf8) + Data([0x0a, 0x7f, 0x01]))

        let endpoint = server.endpoint
        let run: @Sendable ([String]) throws -> (status: Int32, out: String, err: String) = { args in try runTool(ourEtcdctl, ["--endpoints=\(endpoint)"] + args) }
        let pod = try await offload { try run(["get", "/registry/pods/default/nginx", "--print-k8s"]) }
        #expect(pod.status == 0 && pod.out == "/registry/pods/default/nginx\n" + Self.podLines, "\(pod)")

        let valueOnly = try await offload { try run(["get", "/registry/pods/default/nginx", "--print-k8s", "--print-value-only"]) }
        #expect(valueOnly.out == Self.podLines, "\(valueOnly)")

        let role = try await offload { try run(["get", "/registry/clusterroles/admin", "--print-k8s"]) }
        #expect(role.out == """
            /registry/clusterroles/admin
            apiVersion: rbac.authorization.k8s.io/v1
            kind: ClusterRole
            name: admin
            contentType: application/vnd.kubernetes.protobuf
            raw:
              1 {
                1: "admin"
              }
              2: 18446744073709551615 (-1)
              3: 0xdeadbeef
              4: 0x0000000000000001
              5: "\\xff\\x00\\a"

            """, "\(role)")

        // Values that are not (well-formed) envelopes print as without the flag.
        for key in ["/registry/plain", "/registry/truncated"] {
            let with = try await offload { try run(["get", key, "--print-k8s"]) }
            let without = try await offload { try run(["get", key]) }
            #expect(with.status == 0 && with.out == without.out, "\(with)")
        }
        let plain = try await offload { try run(["get", "/registry/plain", "--print-k8s"]) }
        #expect(plain.out == "/registry/plain\njust text\n")

        // Envelopes with random bytes behind the magic never crash the printer.
        var generator = SeededGenerator(seed: 42)
        for i in 0..<40 {
            let length = Int.random(in: 0..<64, using: &generator)
            let tail = Data((0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) })
            // Half of them start like a runtime.Unknown (field 1, length-delimited) to get past the first tag.
            try await client.put("/fuzz/\(i)", Data("k8s\0".utf8) + (i % 2 == 0 ? Data([0x0a, UInt8(length / 2)]) : Data()) + tail)
        }
        let fuzz = try await offload { try run(["get", "/fuzz/", "--prefix", "--print-k8s"]) }
        #expect(fuzz.status == 0 && fuzz.err.isEmpty && fuzz.out.components(separatedBy: "/fuzz/").count == 41, "\(fuzz)")

        // Only for the simple format, like --print-value-only; hidden from the usage text like an etcd flag would not be.
        let json = try await offload { try run(["get", "/registry/plain", "--print-k8s", "-w", "json"]) }
        #expect(json.status == 128 && json.err == "Error: print-k8s is only for `--write-out=simple`\n", "\(json)")
        let help = try await offload { try run(["get", "--help"]) }
        #expect(help.status == 0 && !help.out.contains("print-k8s"))
    }

    @Test func watchDecodesEnvelopes() async throws {
        let server = try await offload { try TwinEtcd() }
        defer { server.cleanup() }
        let client = try EtcdClient(endpoints: [server.endpoint])
        defer { client.close() }
        try await client.put("/registry/pods/default/nginx", Self.pod)
        try await client.put("/registry/pods/default/nginx", "not protobuf")
        // From revision 2: both puts, then the watch is stopped by the time limit.
        let watch = try await offload {
            try runTool(ourEtcdctl, ["--endpoints=\(server.endpoint)", "watch", "/registry/pods/", "--prefix", "--rev=2", "--print-k8s"], timeout: 2)
        }
        #expect(watch.out == "PUT\n/registry/pods/default/nginx\n" + Self.podLines + "PUT\n/registry/pods/default/nginx\nnot protobuf\n", "\(watch)")
    }
}

/// SplitMix64: reproducible random bytes.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
