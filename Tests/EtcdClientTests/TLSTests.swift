import EtcdClient
import Foundation
import Testing

/// A CA, a server certificate (SAN 127.0.0.1 and localhost) and a client
/// certificate made with the `openssl` CLI in a temp dir; plus a client
/// certificate from another CA that the server must refuse.
struct TestCertificates {
    let dir: String
    var ca: String { "\(dir)/ca.crt" }
    var serverCert: String { "\(dir)/server.crt" }
    var serverKey: String { "\(dir)/server.key" }
    var clientCert: String { "\(dir)/client.crt" }
    var clientKey: String { "\(dir)/client.key" }
    var strangerCert: String { "\(dir)/stranger.crt" }
    var strangerKey: String { "\(dir)/stranger.key" }

    static let openssl = "/usr/bin/openssl"

    static func make() throws -> TestCertificates {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("etcd-tls-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let certs = TestCertificates(dir: dir)
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try certs.run(["req", "-x509"] + ec + ["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=etcd-test-ca"])
        try certs.run(["req", "-x509"] + ec + ["-keyout", "other-ca.key", "-out", "other-ca.crt", "-days", "2", "-subj", "/CN=other-ca"])
        try certs.sign("server", ca: "ca", ext: "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
        try certs.sign("client", ca: "ca", ext: "extendedKeyUsage=clientAuth\n")
        try certs.sign("stranger", ca: "other-ca", ext: "extendedKeyUsage=clientAuth\n")
        try certs.sign("named", ca: "ca", ext: "subjectAltName=DNS:etcd.test\nextendedKeyUsage=serverAuth\n")
        return certs
    }

    private func sign(_ name: String, ca: String, ext: String) throws {
        try Data(ext.utf8).write(to: URL(fileURLWithPath: "\(dir)/\(name).ext"))
        try run(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", "\(name).key", "-out", "\(name).csr", "-subj", "/CN=\(name)"])
        try run(["x509", "-req", "-in", "\(name).csr", "-CA", "\(ca).crt", "-CAkey", "\(ca).key", "-CAcreateserial",
                 "-out", "\(name).crt", "-days", "2", "-extfile", "\(name).ext"])
    }

    private func run(_ args: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.openssl)
        p.arguments = args
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw TestError("openssl \(args.joined(separator: " ")) failed: \(p.terminationStatus)") }
    }

    func remove() { try? FileManager.default.removeItem(atPath: dir) }
}

/// Our etcdctl next to the test binary.
let ourEtcdctl: String = {
    let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    let candidates = [dir.appendingPathComponent("etcdctl").path,
                      dir.deletingLastPathComponent().appendingPathComponent("etcdctl").path,
                      FileManager.default.currentDirectoryPath + "/.build/debug/etcdctl"]
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
}()

extension RealEtcd {
    /// The real etcd serving https with the test certificates (mutual TLS when `mutual`).
    static func startTLS(_ certs: TestCertificates, mutual: Bool) async throws -> RealEtcd {
        try await start { etcd in
            etcd.tls = (certs.serverCert, certs.serverKey, mutual ? certs.ca : nil)
            etcd.probeArguments = ["--cacert", certs.ca] + (mutual ? ["--cert", certs.clientCert, "--key", certs.clientKey] : [])
        }
    }
}

@Suite struct TLSTests {
    static func options(_ tls: EtcdTLSOptions?) -> EtcdClientOptions {
        EtcdClientOptions(dialTimeout: .seconds(3), commandTimeout: .seconds(5), tls: tls)
    }

    /// Runs `body` and returns how it failed, with how long it took.
    static func failure(_ body: () async throws -> Void) async -> (error: EtcdClientError?, seconds: Double) {
        let start = ContinuousClock.now
        var caught: EtcdClientError?
        do { try await body() } catch { caught = EtcdClientError(error) }
        let took = ContinuousClock.now - start
        return (caught, Double(took.components.seconds) + Double(took.components.attoseconds) / 1e18)
    }

    static func isHandshakeFailure(_ e: EtcdClientError?) -> Bool {
        if case .tlsHandshakeFailed? = e { return true }
        return false
    }

    @Test func serverTLSNeedsTheRightCA() async throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        let etcd = try await RealEtcd.startTLS(certs, mutual: false)
        defer { etcd.cleanup() }

        // The right CA: an https endpoint, and a bare host:port (TLS because a CA is given).
        for endpoint in [etcd.clientURL, etcd.endpoint] {
            let client = try EtcdClient(endpoints: [endpoint], options: Self.options(EtcdTLSOptions(caFile: certs.ca)))
            defer { client.close() }
            try await client.put("tls/\(endpoint.hasPrefix("https") ? "url" : "bare")", "secret")
        }
        let reader = try EtcdClient(endpoints: [etcd.clientURL], options: Self.options(EtcdTLSOptions(caFile: certs.ca)))
        defer { reader.close() }
        #expect(try await reader.get("tls/", options: .prefix).kvs.map { $0.value.string } == ["secret", "secret"])

        // No CA (system roots): the handshake fails, at once and saying so.
        let untrusted = try EtcdClient(endpoints: [etcd.clientURL], options: Self.options(nil))
        defer { untrusted.close() }
        let noCA = await Self.failure { _ = try await untrusted.get("tls/url") }
        #expect(Self.isHandshakeFailure(noCA.error), "\(String(describing: noCA.error))")
        #expect(noCA.error?.description.contains("certificate verify failed") == true, "\(String(describing: noCA.error))")
        #expect(noCA.seconds < 2.5, "took \(noCA.seconds) s")

        // Another CA's bundle is no better.
        let wrongCA = try EtcdClient(endpoints: [etcd.clientURL], options: Self.options(EtcdTLSOptions(caFile: "\(certs.dir)/other-ca.crt")))
        defer { wrongCA.close() }
        #expect(Self.isHandshakeFailure(await Self.failure { _ = try await wrongCA.get("tls/url") }.error))

        // Skipping verification works without any CA.
        let skipping = try EtcdClient(endpoints: [etcd.clientURL], options: Self.options(EtcdTLSOptions(insecureSkipVerify: true)))
        defer { skipping.close() }
        #expect(try await skipping.get("tls/url").kvs.first?.value.string == "secret")

        // A DNS name of the certificate works too (localhost resolves to loopback).
        let named = try EtcdClient(endpoints: ["https://localhost:\(etcd.clientPort)"], options: Self.options(EtcdTLSOptions(caFile: certs.ca)))
        defer { named.close() }
        #expect(try await named.get("tls/url").count == 1)

        // Plaintext to a TLS port fails within the dial timeout.
        let plain = try EtcdClient(endpoints: ["http://\(etcd.endpoint)"], options: EtcdClientOptions(dialTimeout: .seconds(1), commandTimeout: .seconds(3)))
        defer { plain.close() }
        let plaintext = await Self.failure { _ = try await plain.get("tls/url") }
        #expect(plaintext.error != nil && plaintext.seconds < 3.5, "\(String(describing: plaintext.error)) after \(plaintext.seconds) s")
    }

    /// A certificate for a DNS name only: reached by IP address, the name to check is the server name option.
    @Test func serverNameIsTheNameChecked() async throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        let etcd = try await RealEtcd.start { etcd in
            etcd.tls = ("\(certs.dir)/named.crt", "\(certs.dir)/named.key", nil)
            etcd.probeArguments = ["--cacert", certs.ca, "--insecure-skip-tls-verify"]
        }
        defer { etcd.cleanup() }
        let named = try EtcdClient(endpoints: [etcd.clientURL], options: Self.options(EtcdTLSOptions(caFile: certs.ca, serverName: "etcd.test")))
        defer { named.close() }
        try await named.put("named", "yes")
        for name in [nil, "other.test"] {
            let client = try EtcdClient(endpoints: [etcd.clientURL], options: Self.options(EtcdTLSOptions(caFile: certs.ca, serverName: name)))
            defer { client.close() }
            let mismatch = await Self.failure { _ = try await client.get("named") }
            #expect(Self.isHandshakeFailure(mismatch.error), "\(String(describing: mismatch.error))")
            #expect(mismatch.error?.description.contains("not valid for this host name") == true, "\(String(describing: mismatch.error))")
        }
    }

    @Test func mutualTLSNeedsAClientCertificateFromTheTrustedCA() async throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        let etcd = try await RealEtcd.startTLS(certs, mutual: true)
        defer { etcd.cleanup() }

        let mutual = EtcdTLSOptions(caFile: certs.ca, certFile: certs.clientCert, keyFile: certs.clientKey)
        let client = try EtcdClient(endpoints: [etcd.clientURL], options: Self.options(mutual))
        defer { client.close() }
        try await client.put("mtls", "ok")
        #expect(try await client.get("mtls").kvs.first?.value.string == "ok")
        // A watch stream over the same TLS connection.
        let watch = try await client.watch("mtls")
        try await client.put("mtls", "again")
        let event = try await withTimeout(5, "watch over mTLS") {
            for try await response in watch { if let e = response.events.first { return e.kv.value.string } }
            return ""
        }
        watch.cancel()
        #expect(event == "again")

        // Without a client certificate the server refuses the handshake.
        let anonymous = try EtcdClient(endpoints: [etcd.clientURL], options: Self.options(EtcdTLSOptions(caFile: certs.ca)))
        defer { anonymous.close() }
        let refused = await Self.failure { _ = try await anonymous.get("mtls") }
        #expect(Self.isHandshakeFailure(refused.error), "\(String(describing: refused.error))")
        #expect(refused.seconds < 2.5, "took \(refused.seconds) s")

        // A client certificate from a CA the server does not trust.
        let stranger = try EtcdClient(endpoints: [etcd.clientURL], options: Self.options(
            EtcdTLSOptions(caFile: certs.ca, certFile: certs.strangerCert, keyFile: certs.strangerKey)))
        defer { stranger.close() }
        #expect(Self.isHandshakeFailure(await Self.failure { _ = try await stranger.get("mtls") }.error))

        // Skipping server verification still presents the client certificate.
        let skipping = try EtcdClient(endpoints: [etcd.clientURL], options: Self.options(
            EtcdTLSOptions(certFile: certs.clientCert, keyFile: certs.clientKey, insecureSkipVerify: true)))
        defer { skipping.close() }
        #expect(try await skipping.get("mtls").kvs.first?.value.string == "again")
    }

    @Test func unusableTLSFilesFailWhenTheClientIsCreated() throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        func creationError(_ tls: EtcdTLSOptions) -> String? {
            do {
                let client = try EtcdClient(endpoints: ["https://127.0.0.1:1"], options: Self.options(tls))
                client.close()
                return nil
            } catch {
                guard case let .tlsConfiguration(message) = EtcdClientError(error) else { return "not a TLS configuration error: \(error)" }
                return message
            }
        }
        #expect(creationError(EtcdTLSOptions(caFile: "\(certs.dir)/missing.crt")) == "open \(certs.dir)/missing.crt: no such file or directory")
        #expect(creationError(EtcdTLSOptions(certFile: certs.clientCert)) == "KeyFile and CertFile must both be present[key: , cert: \(certs.clientCert)]")
        #expect(creationError(EtcdTLSOptions(keyFile: certs.clientKey)) == "KeyFile and CertFile must both be present[key: \(certs.clientKey), cert: ]")
        #expect(creationError(EtcdTLSOptions(caFile: certs.clientKey)) == "\(certs.clientKey): no PEM certificate found")
        #expect(creationError(EtcdTLSOptions(certFile: certs.clientCert, keyFile: certs.clientCert)) == "\(certs.clientCert): no PEM private key found")
        #expect(creationError(EtcdTLSOptions(caFile: certs.ca, certFile: certs.clientCert, keyFile: certs.clientKey)) == nil)
    }

    /// make-mirror from a plaintext source into a mutual-TLS destination with
    /// auth: --dest-cacert, --dest-cert, --dest-key, --dest-user.
    @Test func makeMirrorIntoAMutualTLSDestinationWithAuth() async throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        let source = try await RealEtcd.start()
        defer { source.cleanup() }
        let destination = try await RealEtcd.startTLS(certs, mutual: true)
        defer { destination.cleanup() }
        let files = ["--cacert=\(certs.ca)", "--cert=\(certs.clientCert)", "--key=\(certs.clientKey)"]
        for args in [["user", "add", "root:rootpw"], ["user", "grant-role", "root", "root"], ["auth", "enable"]] {
            let r = try await offload { try runProcess(RealEtcd.goEtcdctl, ["--endpoints=\(destination.clientURL)"] + files + args) }
            #expect(r.status == 0, "\(args): \(r)")
        }
        let src = try source.client()
        defer { src.close() }
        // TLS to a plaintext server fails at once, saying so.
        let tlsToPlain = try EtcdClient(endpoints: [source.endpoint], options: Self.options(EtcdTLSOptions(caFile: certs.ca)))
        defer { tlsToPlain.close() }
        let wrongProtocol = await Self.failure { _ = try await tlsToPlain.get("app/one") }
        #expect(Self.isHandshakeFailure(wrongProtocol.error) && wrongProtocol.error?.description.contains("a plaintext endpoint?") == true,
                "\(String(describing: wrongProtocol.error))")
        try await src.put("app/one", "1")
        try await src.put("app/two", "2")
        let destFlags = ["--dest-cacert=\(certs.ca)", "--dest-cert=\(certs.clientCert)", "--dest-key=\(certs.clientKey)", "--dest-user=root:rootpw"]
        // Runs until killed: 3 s are plenty for the base copy.
        let mirror = try await offload {
            try runProcess(ourEtcdctl, ["--endpoints=\(source.endpoint)", "make-mirror", "--prefix=app/", "--dest-prefix=copy/"] + destFlags + [destination.clientURL], timeout: 3)
        }
        #expect(mirror.err.isEmpty, "\(mirror)")
        let check = try await offload {
            try runProcess(RealEtcd.goEtcdctl, ["--endpoints=\(destination.clientURL)", "--user=root:rootpw"] + files + ["get", "copy/", "--prefix"])
        }
        #expect(check.out == "copy/one\n1\ncopy/two\n2\n", "\(check)")
        // Without the client certificate the destination refuses the mirror at once.
        let refused = try await offload {
            try runProcess(ourEtcdctl, ["--endpoints=\(source.endpoint)", "make-mirror", "--dest-cacert=\(certs.ca)", "--dest-user=root:rootpw", destination.clientURL], timeout: 10)
        }
        #expect(refused.status == 2 && refused.err.contains("authentication handshake failed"), "\(refused)")
    }

    /// Our etcdctl and the Go one against the same mutual-TLS server.
    @Test func etcdctlOverTLSMatchesGoEtcdctl() async throws {
        #expect(FileManager.default.isExecutableFile(atPath: ourEtcdctl), "build etcdctl first: \(ourEtcdctl)")
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        let etcd = try await RealEtcd.startTLS(certs, mutual: true)
        defer { etcd.cleanup() }
        let url = "--endpoints=\(etcd.clientURL)"
        let full = ["--cacert=\(certs.ca)", "--cert=\(certs.clientCert)", "--key=\(certs.clientKey)"]
        let fast = ["--dial-timeout=1s", "--command-timeout=1s"]
        func both(_ args: [String]) async throws -> (ours: (status: Int32, out: String, err: String), go: (status: Int32, out: String, err: String)) {
            let ours = try await offload { try runProcess(ourEtcdctl, args, timeout: 15) }
            let go = try await offload { try runProcess(RealEtcd.goEtcdctl, args, timeout: 15) }
            return (ours, go)
        }
        func masked(_ s: String) -> String {
            s.replacing(/"ts":"[^"]*"/, with: "TS").replacing(/client-[0-9a-f-]{36}/, with: "UUID")
        }

        // Writes and reads work with the right files; both print the same.
        let put = try await both([url] + full + ["put", "k", "v"])
        #expect(put.ours.status == 0 && put.ours.out == "OK\n" && put.go.out == "OK\n", "\(put)")
        let get = try await both([url] + full + ["get", "k", "-w", "json"])
        #expect(get.ours.status == 0 && get.ours.out == get.go.out, "\(get)")
        // Without --cacert the server is not trusted; without a client certificate it refuses us.
        for args in [["--cert=\(certs.clientCert)", "--key=\(certs.clientKey)"], ["--cacert=\(certs.ca)"]] {
            let r = try await both([url] + fast + args + ["get", "k"])
            #expect(r.ours.status == 1 && r.go.status == 1, "\(r)")
            #expect(r.ours.out.isEmpty && r.go.out.isEmpty)
            #expect(r.ours.err.hasSuffix("Error: context deadline exceeded\n") && r.go.err.hasSuffix("Error: context deadline exceeded\n"), "\(r)")
            #expect(r.ours.err.contains("transport: authentication handshake failed"), "\(r.ours.err)")
        }
        // --insecure-skip-tls-verify only counts once TLS is on (a file given, or --insecure-transport=false), as in etcd.
        let skipAlone = try await both([url] + fast + ["--insecure-skip-tls-verify", "--cert=\(certs.clientCert)", "--key=\(certs.clientKey)", "get", "k", "--print-value-only"])
        #expect(skipAlone.ours.status == 0 && skipAlone.ours.out == "v\n" && skipAlone.go.out == "v\n", "\(skipAlone)")
        // Unusable files: the same message and exit code before any dial.
        for args in [["--cert=\(certs.clientCert)"], ["--cacert=\(certs.dir)/missing.crt"]] {
            let r = try await both([url] + fast + args + ["get", "k"])
            #expect(r.ours.status == 128 && r.go.status == 128, "\(r)")
            #expect(r.ours.err == r.go.err, "\(r)")
        }
    }
}
