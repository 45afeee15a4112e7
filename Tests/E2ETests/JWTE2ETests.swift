import EtcdGRPC
import EtcdProto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Testing

/// `--auth-token jwt,...` against the real etcd 3.4 with the same keys:
/// the Go etcdctl sees the same answers, and a token either one signs is
/// accepted by the other (same claims, same revision rule).
@Suite(.serialized) struct JWTE2ETests {
    static let steps: [(user: String?, arguments: [String], input: String?)] = [
        (nil, ["user", "add", "root:rootpw"], nil),
        (nil, ["auth", "enable"], nil),
        ("root:rootpw", ["put", "k1", "v1"], nil),
        ("root:rootpw", ["get", "k1"], nil),
        ("root:wrong", ["get", "k1"], nil),
        (nil, ["get", "k1"], nil),
        ("root:rootpw", ["role", "add", "reader"], nil),
        ("root:rootpw", ["role", "grant-permission", "reader", "read", "k", "l"], nil),
        ("root:rootpw", ["user", "add", "alice:alicepw"], nil),
        ("root:rootpw", ["user", "grant-role", "alice", "reader"], nil),
        ("alice:alicepw", ["get", "k1"], nil),
        ("alice:alicepw", ["put", "k1", "nope"], nil),
        ("alice:alicepw", ["get", "z"], nil),
    ]

    static func makeRSAKeys(in dir: String) throws -> (publicKey: String, privateKey: String) {
        let privateKey = dir + "/jwt.pem", publicKey = dir + "/jwt.pub.pem"
        for arguments in [["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", privateKey],
                          ["pkey", "-in", privateKey, "-pubout", "-out", publicKey]] {
            let result = try EtcdProcess.run("/usr/bin/openssl", arguments, environment: [:], input: nil)
            #expect(result.status == 0, "openssl \(arguments): \(result.err)")
        }
        return (publicKey, privateKey)
    }

    @Test func jwtTokensMatchRealEtcdAndInteroperate() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("jwt-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let keys = try Self.makeRSAKeys(in: dir)
        let setting = "jwt,pub-key=\(keys.publicKey),priv-key=\(keys.privateKey),sign-method=RS256,ttl=10m"
        let ours = try EtcdProcess(extraArguments: ["--auth-token", setting, "--bcrypt-cost", "4"])
        defer { ours.terminate() }
        let theirs = try RealEtcdProcess(extraArguments: ["--auth-token", setting, "--bcrypt-cost", "4"])
        defer { theirs.terminate() }

        var mismatches: [String] = []
        var outputs: [String] = []
        for (index, step) in Self.steps.enumerated() {
            let results = try [ours.port, theirs.port].map { AuthE2ETests.normalized(try AuthE2ETests.run("/usr/bin/etcdctl", port: $0, step)) }
            outputs.append(results[1])
            if results[0] != results[1] { mismatches.append("step \(index) \(step.arguments):\n  ours: \(results[0])\n  etcd: \(results[1])") }
        }
        #expect(mismatches.isEmpty, "\(mismatches.joined(separator: "\n"))")
        #expect(outputs[3].contains("v1") && outputs[10].contains("v1"))
        #expect(outputs[11].contains("permission denied"))

        try await withGRPCClients(ports: [ours.port, theirs.port]) { clients in
            func token(_ client: GRPCClient<HTTP2ClientTransport.Posix>, _ user: String, _ password: String) async throws -> String {
                var request = Etcdserverpb_AuthenticateRequest()
                request.name = user
                request.password = password
                return try await Etcdserverpb_Auth.Client(wrapping: client).authenticate(request).token
            }
            func get(_ client: GRPCClient<HTTP2ClientTransport.Posix>, _ key: String, token: String) async throws -> String? {
                var request = Etcdserverpb_RangeRequest()
                request.key = Data(key.utf8)
                let response = try await Etcdserverpb_KV.Client(wrapping: client).range(request, metadata: ["token": "\(token)"])
                return response.kvs.first.map { String(decoding: $0.value, as: UTF8.self) }
            }
            let ourToken = try await token(clients[0], "alice", "alicepw")
            let theirToken = try await token(clients[1], "alice", "alicepw")
            #expect(ourToken.split(separator: ".").count == 3 && theirToken.split(separator: ".").count == 3)
            // Each accepts the other's token (same key, same auth revision).
            #expect(try await get(clients[0], "k1", token: theirToken) == "v1")
            #expect(try await get(clients[1], "k1", token: ourToken) == "v1")

            // A token signed with another key: refused by both alike.
            let other = try Self.makeRSAKeys(in: (dir + "/other").withDirectory())
            let forger = try EtcdProcess(extraArguments: ["--auth-token", "jwt,priv-key=\(other.privateKey),sign-method=RS256", "--bcrypt-cost", "4"])
            defer { forger.terminate() }
            for step in Self.steps.prefix(3) { _ = try AuthE2ETests.run("/usr/bin/etcdctl", port: forger.port, step) }
            try await withGRPCClients(ports: [forger.port]) { forged in
                let forgedToken = try await token(forged[0], "root", "rootpw")
                for client in clients {
                    await #expect { _ = try await get(client, "k1", token: forgedToken) } throws: { error in
                        (error as? RPCError).map { $0.code == .unauthenticated && $0.message == "etcdserver: invalid auth token" } ?? false
                    }
                }
            }

            // A permission change makes every token older than the store: both refuse it alike.
            for port in [ours.port, theirs.port] {
                _ = try AuthE2ETests.run("/usr/bin/etcdctl", port: port, ("root:rootpw", ["role", "add", "extra"], nil))
            }
            for (client, stale) in zip(clients, [ourToken, theirToken]) {
                await #expect { _ = try await get(client, "k1", token: stale) } throws: { error in
                    (error as? RPCError).map { $0.code == .invalidArgument && $0.message == "etcdserver: revision of auth store is old" } ?? false
                }
            }
        }
    }

    /// Bad JWT settings refuse the start, naming the problem.
    @Test func badJWTSettingsRefuseTheStart() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("jwt-bad-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let keys = try Self.makeRSAKeys(in: dir)
        let cases: [(String, String)] = [
            ("jwt,sign-method=RS256", "auth: missing key data"),
            ("jwt,priv-key=\(dir)/none.pem,sign-method=RS256", "open \(dir)/none.pem: no such file or directory"),
            ("jwt,priv-key=\(keys.privateKey),sign-method=XX256", "auth: invalid auth options"),
            ("jwt,priv-key=\(keys.privateKey),sign-method=RS256,tll=5m", "unknown JWT option \"tll\""),
            ("jwt,priv-key=\(keys.privateKey),sign-method=RS256,ttl", "auth: invalid auth options"),
        ]
        for (setting, message) in cases {
            let result = try EtcdProcess.run(EtcdProcess.binary, ["--data-dir", dir + "/data-\(UUID().uuidString)", "--auth-token", setting],
                                             environment: [:], input: nil)
            #expect(result.status != 0, "\(setting)")
            #expect(result.err.contains(message), "\(setting): \(result.err)")
        }
    }
}

private extension String {
    func withDirectory() throws -> String {
        try FileManager.default.createDirectory(atPath: self, withIntermediateDirectories: true)
        return self
    }
}
