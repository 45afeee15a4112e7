import Foundation
import NIOSSL
import Testing
@testable import TransportSecurity

/// Certificates made with Debian's openssl in a temporary directory.
final class Certs {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ts-\(UUID().uuidString)").path

    init() throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try """
        [leaf]
        subjectAltName=IP:127.0.0.1,DNS:node.example.com
        [ca]
        default_ca=local
        [local]
        database=\(dir)/index.txt
        default_md=sha256
        default_crl_days=30
        """.write(toFile: dir + "/openssl.cnf", atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: dir + "/index.txt", contents: nil)
        try run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir + "/ca-key.pem",
                 "-out", dir + "/ca.pem", "-days", "2", "-subj", "/CN=unit-ca"])
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    func make(_ name: String, cn: String) throws {
        try run(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "\(dir)/\(name)-key.pem",
                 "-out", "\(dir)/\(name).csr", "-subj", "/CN=\(cn)"])
        try run(["x509", "-req", "-in", "\(dir)/\(name).csr", "-CA", dir + "/ca.pem", "-CAkey", dir + "/ca-key.pem",
                 "-set_serial", String(Int.random(in: 1000...1_000_000_000)), "-out", "\(dir)/\(name).pem", "-days", "2",
                 "-extfile", dir + "/openssl.cnf", "-extensions", "leaf"])
    }

    func crl(revoking name: String) throws -> String {
        let ca = ["-config", dir + "/openssl.cnf", "-keyfile", dir + "/ca-key.pem", "-cert", dir + "/ca.pem"]
        try run(["ca"] + ca + ["-revoke", "\(dir)/\(name).pem"])
        try run(["ca"] + ca + ["-gencrl", "-out", dir + "/crl.pem"])
        return dir + "/crl.pem"
    }

    func certificate(_ name: String) throws -> NIOSSLCertificate {
        try NIOSSLCertificate.fromPEMFile("\(dir)/\(name).pem")[0]
    }

    func run(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw TLSSetupError("openssl \(arguments) failed") }
    }
}

@Suite struct TransportSecurityTests {
    func settings(_ certs: Certs, _ name: String = "server") -> TLSSettings {
        var settings = TLSSettings()
        settings.certFile = "\(certs.dir)/\(name).pem"
        settings.keyFile = "\(certs.dir)/\(name)-key.pem"
        settings.trustedCAFile = certs.dir + "/ca.pem"
        return settings
    }

    @Test func revocationListNamesTheRevokedSerials() throws {
        let certs = try Certs()
        try certs.make("server", cn: "server")
        try certs.make("gone", cn: "gone")
        let crlFile = try certs.crl(revoking: "gone")
        let list = try RevocationList(fileBytes: Array(try Data(contentsOf: URL(fileURLWithPath: crlFile))))
        #expect(list.revokedSerials.count == 1)
        var withCRL = settings(certs)
        withCRL.crlFile = crlFile
        let credentials = try TLSCredentials(settings: withCRL)
        #expect(credentials.refusal(of: try certs.certificate("gone"))?.contains("revoked") == true)
        #expect(credentials.refusal(of: try certs.certificate("server")) == nil)
        // Not a CRL: an error, never a crash.
        for garbage in [[UInt8](), [0x30, 0x82, 0xff], Array("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n".utf8)] {
            #expect(throws: TLSSetupError.self) { try RevocationList(fileBytes: garbage) }
        }
    }

    @Test func allowedCommonNameAndHostname() throws {
        let certs = try Certs()
        try certs.make("server", cn: "etcd-peer")
        try certs.make("other", cn: "someone")
        var byCN = settings(certs)
        byCN.allowedCN = "etcd-peer"
        let cn = try TLSCredentials(settings: byCN)
        #expect(cn.refusal(of: try certs.certificate("server")) == nil)
        #expect(cn.refusal(of: try certs.certificate("other"))?.contains("client certificate authentication failed") == true)
        #expect(TLSCredentials.commonName(of: try certs.certificate("other")) == "someone")
        for (hostname, allowed) in [("node.example.com", true), ("NODE.example.com", true), ("127.0.0.1", true), ("127.0.0.2", false), ("example.com", false)] {
            var byHost = settings(certs)
            byHost.allowedHostname = hostname
            #expect((try TLSCredentials(settings: byHost).refusal(of: try certs.certificate("other")) == nil) == allowed, "\(hostname)")
        }
        // The peer listener's SAN check: the certificate must name the address the member connects from.
        var peer = settings(certs)
        peer.checksClientAddress = true
        let credentials = try TLSCredentials(settings: peer)
        #expect(credentials.refusal(of: try certs.certificate("other"), remoteHost: "127.0.0.1") == nil)
        #expect(credentials.refusal(of: try certs.certificate("other"), remoteHost: "10.1.2.3") != nil)
    }

    @Test func changedFilesAreReadAgainAndABadOneKeepsTheLastGood() throws {
        let certs = try Certs()
        try certs.make("a", cn: "a")
        try certs.make("b", cn: "b")
        var live = TLSSettings()
        live.certFile = certs.dir + "/live.pem"
        live.keyFile = certs.dir + "/live-key.pem"
        try FileManager.default.copyItem(atPath: certs.dir + "/a.pem", toPath: live.certFile)
        try FileManager.default.copyItem(atPath: certs.dir + "/a-key.pem", toPath: live.keyFile)
        let credentials = try TLSCredentials(settings: live)
        let first = credentials.serverContext()
        #expect(credentials.serverContext() === first, "unchanged files: the same context")
        #expect(credentials.reloadCount == 0)
        // A half-rotated pair (new certificate, old key) does not match: kept.
        try FileManager.default.removeItem(atPath: live.certFile)
        try FileManager.default.copyItem(atPath: certs.dir + "/b.pem", toPath: live.certFile)
        #expect(credentials.serverContext() === first)
        #expect(credentials.reloadCount == 0)
        // The key follows: the new pair is used.
        try FileManager.default.removeItem(atPath: live.keyFile)
        try FileManager.default.copyItem(atPath: certs.dir + "/b-key.pem", toPath: live.keyFile)
        #expect(credentials.serverContext() !== first)
        #expect(credentials.reloadCount == 1)
        // A deleted file: the last good context stays.
        let second = credentials.serverContext()
        try FileManager.default.removeItem(atPath: live.certFile)
        #expect(credentials.serverContext() === second)
    }

    @Test func settingsAreCheckedAsEtcdChecksThem() throws {
        #expect(throws: TLSSetupError("unexpected TLS cipher suite \"TLS_NULL\"")) { try CipherSuites.cipherString(["TLS_NULL"]) }
        #expect(try CipherSuites.cipherString(["TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"]) == "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256")
        #expect(try TLSProtocolVersion.parse("") == nil)
        #expect(throws: TLSSetupError.self) { try TLSProtocolVersion.parse("tls1.2") }
        var missing = TLSSettings()
        missing.certFile = "/nonexistent/c.pem"
        missing.keyFile = "/nonexistent/k.pem"
        #expect(throws: TLSSetupError("open /nonexistent/c.pem: no such file or directory")) { try TLSCredentials(settings: missing) }
    }

    @Test func autoTLSMakesAReusableSelfSignedCertificate() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("auto-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var auto = TLSSettings()
        auto.autoTLS = true
        let credentials = try TLSCredentials(settings: auto, autoTLSDirectory: dir, hosts: ["127.0.0.1", "localhost"], extendedUsage: .serverAndClient)
        #expect(credentials.isSelfSigned)
        let certificate = try NIOSSLCertificate.fromPEMFile(dir + "/cert.pem")[0]
        var byHost = TLSSettings()
        byHost.certFile = dir + "/cert.pem"
        byHost.keyFile = dir + "/key.pem"
        byHost.allowedHostname = "localhost"
        #expect(try TLSCredentials(settings: byHost).refusal(of: certificate) == nil)
        let attributes = try FileManager.default.attributesOfItem(atPath: dir + "/key.pem")
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        // Reused, not remade.
        let before = try Data(contentsOf: URL(fileURLWithPath: dir + "/cert.pem"))
        _ = try TLSCredentials(settings: auto, autoTLSDirectory: dir, hosts: ["127.0.0.1"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/cert.pem")) == before)
    }
}
