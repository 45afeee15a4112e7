import Foundation
import Testing

/// TLS on the client port, driven by Debian's Go etcdctl (etcd 3.4) and
/// compared with the real etcd 3.4 configured alike.
@Suite(.serialized) struct TLSE2ETests {
    /// Our etcd serving `https://` with `certs`' server certificate, plus `extra` flags.
    static func server(_ certs: TestCertificates, extra: [String] = [], clientCert: String = "client", logFile: String? = nil) throws -> EtcdProcess {
        let port = try EtcdProcess.freePort()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tls-\(UUID().uuidString)").path
        let url = "https://127.0.0.1:\(port)"
        return try EtcdProcess(
            arguments: ["--data-dir", dir, "--listen-client-urls", url, "--advertise-client-urls", url,
                        "--listen-peer-urls", "http://127.0.0.1:\(try EtcdProcess.freePort())",
                        "--cert-file", certs.cert("server"), "--key-file", certs.key("server")] + extra,
            port: port, dataDir: dir, ownsDataDir: true, scheme: "https",
            clientFlags: clientFlags(certs, clientCert), logFile: logFile)
    }

    static func clientFlags(_ certs: TestCertificates, _ name: String) -> [String] {
        ["--cacert", certs.cert("ca"), "--cert", certs.cert(name), "--key", certs.key(name)]
    }

    static func certificates() throws -> TestCertificates {
        let certs = try TestCertificates()
        try certs.make("server", commonName: "server")
        try certs.make("client", commonName: "root", kind: "client")
        try certs.make("stranger", commonName: "root", kind: "client", ca: "other-ca")
        return certs
    }

    static let mutual = ["--client-cert-auth"]

    @Test func goEtcdctlWorksOverMutualTLS() throws {
        let certs = try Self.certificates()
        let server = try Self.server(certs, extra: Self.mutual + ["--trusted-ca-file", certs.cert("ca")])
        defer { server.terminate() }
        #expect(try server.etcdctl(["put", "k", "v"]).out == "OK\n")
        #expect(try server.etcdctl(["get", "k", "--print-value-only"]).out == "v\n")
        let members = try server.etcdctl(["member", "list"])
        #expect(members.status == 0 && members.out.contains("https://127.0.0.1:\(server.port)"), "\(members)")
        let status = try server.etcdctl(["endpoint", "status"])
        #expect(status.status == 0 && status.out.contains("3.6.0"), "\(status)")
        let grant = try server.etcdctl(["lease", "grant", "60"])
        let lease = try #require(grant.out.firstMatch(of: /lease ([0-9a-f]+) granted/)).1
        #expect(try server.etcdctl(["lease", "keep-alive", "--once", String(lease)]).out.contains("keepalived with TTL"))
        // A watch over TLS sees puts made on other TLS connections: one from
        // its history (from revision 1, so no race with its creation) and
        // one made while it is open.
        #expect(try server.etcdctl(["put", "w", "earlier"]).status == 0)
        let watch = try BackgroundEtcdctl(server: server, arguments: ["watch", "w", "--rev=1"])
        defer { watch.stop() }
        #expect(try watch.waitForOutput(containing: "earlier"))
        #expect(try server.etcdctl(["put", "w", "seen"]).status == 0)
        #expect(try watch.waitForOutput(containing: "seen"))
    }

    /// What the Go etcdctl prints (last stderr line) and its exit status
    /// when the handshake is refused, for ours and the real etcd 3.4 with
    /// the same certificates and flags.
    @Test func refusalsMatchTheRealEtcd() throws {
        let certs = try Self.certificates()
        let flags = Self.mutual + ["--trusted-ca-file", certs.cert("ca"), "--cert-file", certs.cert("server"), "--key-file", certs.key("server")]
        let ours = try Self.server(certs, extra: Self.mutual + ["--trusted-ca-file", certs.cert("ca")])
        defer { ours.terminate() }
        let theirs = try RealEtcdProcess(extraArguments: flags, clientScheme: "https", clientFlags: Self.clientFlags(certs, "client"))
        defer { theirs.terminate() }
        let cases: [(name: String, scheme: String, flags: [String])] = [
            ("no client certificate", "https", ["--cacert", certs.cert("ca")]),
            ("a client certificate from another CA", "https", Self.clientFlags(certs, "stranger")),
            ("a client that trusts another CA", "https", ["--cacert", certs.cert("other-ca"), "--cert", certs.cert("client"), "--key", certs.key("client")]),
            ("a plaintext client", "http", []),
            ("a good client", "https", Self.clientFlags(certs, "client")),
        ]
        for (name, scheme, flags) in cases {
            var results: [(status: Int32, out: String, err: String)] = []
            for port in [ours.port, theirs.port] {
                let result = try EtcdProcess.run("/usr/bin/etcdctl", ["--endpoints=\(scheme)://127.0.0.1:\(port)", "--dial-timeout=1s",
                                                                      "--command-timeout=3s"] + flags + ["get", "k"],
                                                 environment: ["ETCDCTL_API": "3"], input: nil)
                results.append((result.status, result.out, result.err.split(separator: "\n").last.map(String.init) ?? ""))
            }
            #expect(results[0].status == results[1].status, "\(name): exit \(results[0].status) vs \(results[1].status)")
            #expect(results[0].err == results[1].err, "\(name): \(results[0].err) vs \(results[1].err)")
            #expect(results[0].out == results[1].out, "\(name)")
            #expect((results[0].status == 0) == (name == "a good client"), "\(name): \(results[0])")
        }
    }

    /// `http://` and `https://` listed together: each URL serves what it
    /// names, and an address listed with both schemes serves both on its one port.
    @Test func mixedListenersServeBoth() throws {
        let certs = try Self.certificates()
        let (plain, secure, shared) = (try EtcdProcess.freePort(), try EtcdProcess.freePort(), try EtcdProcess.freePort())
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tls-\(UUID().uuidString)").path
        let urls = ["http://127.0.0.1:\(plain)", "https://127.0.0.1:\(secure)", "http://127.0.0.1:\(shared)", "https://127.0.0.1:\(shared)"]
        let server = try EtcdProcess(
            arguments: ["--data-dir", dir, "--listen-client-urls", urls.joined(separator: ","), "--advertise-client-urls", urls[1],
                        "--listen-peer-urls", "http://127.0.0.1:\(try EtcdProcess.freePort())",
                        "--cert-file", certs.cert("server"), "--key-file", certs.key("server")],
            port: secure, dataDir: dir, ownsDataDir: true, scheme: "https", clientFlags: ["--cacert", certs.cert("ca")],
            logFile: certs.path("mixed.log"))
        defer { server.terminate() }
        #expect(try server.etcdctl(["put", "mixed", "yes"]).status == 0)
        for url in urls {
            let flags = url.hasPrefix("https") ? ["--cacert", certs.cert("ca")] : []
            let got = try EtcdProcess.run("/usr/bin/etcdctl", ["--endpoints=\(url)", "--dial-timeout=2s"] + flags + ["get", "mixed", "--print-value-only"],
                                          environment: ["ETCDCTL_API": "3"], input: nil)
            #expect(got.out == "yes\n", "\(url): \(got)")
        }
        // The TLS-only port refuses plaintext, the plaintext-only port TLS.
        for (url, flags) in [("http://127.0.0.1:\(secure)", [String]()), ("https://127.0.0.1:\(plain)", ["--cacert", certs.cert("ca")])] {
            let got = try EtcdProcess.run("/usr/bin/etcdctl", ["--endpoints=\(url)", "--dial-timeout=1s", "--command-timeout=2s"] + flags + ["get", "mixed"],
                                          environment: ["ETCDCTL_API": "3"], input: nil)
            #expect(got.status != 0, "\(url)")
        }
        // Each wrong-protocol client was closed with a log line naming the listener.
        let log = try String(contentsOfFile: certs.path("mixed.log"), encoding: .utf8)
        #expect(log.contains("rejected a plaintext client on the TLS listener 127.0.0.1:\(secure)"), "\(log)")
        #expect(log.contains("rejected a TLS client on the plaintext listener 127.0.0.1:\(plain)"), "\(log)")
    }

    @Test func minimumVersionAndRevocationListRefuseClients() throws {
        let certs = try Self.certificates()
        try certs.make("revoked", commonName: "root", kind: "client")
        let crl = try certs.revocationList(revoking: ["revoked"])
        let server = try Self.server(certs, extra: Self.mutual + ["--trusted-ca-file", certs.cert("ca"), "--client-crl-file", crl,
                                                                  "--tls-min-version", "TLS1.3"])
        defer { server.terminate() }
        // TLS 1.2 is refused at the handshake, TLS 1.3 is served.
        let old = try certs.openssl(["s_client", "-connect", "127.0.0.1:\(server.port)", "-tls1_2", "-CAfile", certs.cert("ca"),
                                     "-cert", certs.cert("client"), "-key", certs.key("client")], allowFailure: true)
        #expect(old.contains("Cipher is (NONE)") && old.contains("alert protocol version"), "\(old)")
        let new = try certs.openssl(["s_client", "-connect", "127.0.0.1:\(server.port)", "-tls1_3", "-CAfile", certs.cert("ca"),
                                     "-cert", certs.cert("client"), "-key", certs.key("client")], allowFailure: true)
        #expect(new.contains("TLSv1.3"), "\(new)")
        // The revoked certificate is refused; the good one works.
        #expect(try server.etcdctl(["put", "k", "v"]).status == 0)
        let revoked = try EtcdProcess.run("/usr/bin/etcdctl", ["--endpoints=https://127.0.0.1:\(server.port)", "--dial-timeout=1s", "--command-timeout=2s"]
                                              + Self.clientFlags(certs, "revoked") + ["get", "k"], environment: ["ETCDCTL_API": "3"], input: nil)
        #expect(revoked.status != 0)
        #expect(revoked.err.contains("context deadline exceeded"), "\(revoked.err)")
    }

    /// New certificate files are served to new connections without a
    /// restart; a connection opened before keeps working.
    @Test func certificatesRotateWithoutRestart() throws {
        let certs = try Self.certificates()
        let firstSerial = try certs.serial(of: certs.cert("server"))
        // The files the server reads, copies of the first certificate.
        let (certFile, keyFile) = (certs.path("live.pem"), certs.path("live-key.pem"))
        try FileManager.default.copyItem(atPath: certs.cert("server"), toPath: certFile)
        try FileManager.default.copyItem(atPath: certs.key("server"), toPath: keyFile)
        let port = try EtcdProcess.freePort()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tls-\(UUID().uuidString)").path
        let url = "https://127.0.0.1:\(port)"
        let server = try EtcdProcess(
            arguments: ["--data-dir", dir, "--listen-client-urls", url, "--advertise-client-urls", url,
                        "--listen-peer-urls", "http://127.0.0.1:\(try EtcdProcess.freePort())", "--cert-file", certFile, "--key-file", keyFile],
            port: port, dataDir: dir, ownsDataDir: true, scheme: "https", clientFlags: ["--cacert", certs.cert("ca")])
        defer { server.terminate() }
        #expect(try certs.servedSerial(port: port) == firstSerial)
        #expect(try server.etcdctl(["put", "rotation", "before"]).status == 0)
        let watch = try BackgroundEtcdctl(server: server, arguments: ["watch", "rotation", "--rev=1"])
        defer { watch.stop() }
        #expect(try watch.waitForOutput(containing: "before"))

        // Rotate: write the new pair beside, then rename over (as tools do).
        let secondSerial = try certs.make("server2", commonName: "server")
        #expect(secondSerial != firstSerial)
        try FileManager.default.copyItem(atPath: certs.key("server2"), toPath: keyFile + ".new")
        try FileManager.default.copyItem(atPath: certs.cert("server2"), toPath: certFile + ".new")
        #expect(rename(keyFile + ".new", keyFile) == 0 && rename(certFile + ".new", certFile) == 0)
        #expect(try certs.servedSerial(port: port) == secondSerial)
        #expect(try server.etcdctl(["put", "rotation", "after"]).status == 0)
        #expect(try watch.waitForOutput(containing: "after"), "the connection opened before the rotation keeps working")

        // A broken file keeps the last good certificate in use.
        try "not a certificate".write(toFile: certFile, atomically: true, encoding: .utf8)
        #expect(try certs.servedSerial(port: port) == secondSerial)
        #expect(try server.etcdctl(["get", "rotation", "--print-value-only"]).out == "after\n")
    }

    /// Files and flags that cannot work stop the start, with etcd's message
    /// naming the file or value.
    @Test func badCertificateSettingsStopTheStart() throws {
        let certs = try Self.certificates()
        try certs.make("other", commonName: "other")
        let https = "https://127.0.0.1:\(try EtcdProcess.freePort())"
        let base = ["--listen-client-urls", https, "--advertise-client-urls", https, "--listen-peer-urls", "http://127.0.0.1:\(try EtcdProcess.freePort())"]
        let cases: [(arguments: [String], message: String)] = [
            (["--cert-file", "/nonexistent/server.pem", "--key-file", certs.key("server")], "open /nonexistent/server.pem: no such file or directory"),
            ([], "TLS key/cert (--cert-file, --key-file) must be provided for client url \(https) with HTTPS scheme"),
            (["--cert-file", certs.cert("server"), "--key-file", certs.key("other")], "tls: private key does not match public key"),
            (["--cert-file", certs.path("openssl.cnf"), "--key-file", certs.key("server")], "tls: failed to find any PEM data in certificate input"),
            (["--cert-file", certs.cert("server"), "--key-file", certs.key("server"), "--cipher-suites", "TLS_NO_SUCH_SUITE"],
             "unexpected TLS cipher suite \"TLS_NO_SUCH_SUITE\""),
            (["--cert-file", certs.cert("server"), "--key-file", certs.key("server"), "--tls-min-version", "TLS1.1"],
             "unexpected TLS version \"TLS1.1\" (must be one of: TLS1.2, TLS1.3)"),
            (["--cert-file", certs.cert("server"), "--key-file", certs.key("server"), "--trusted-ca-file", "/nonexistent/ca.pem"],
             "open /nonexistent/ca.pem: no such file or directory"),
        ]
        for (arguments, message) in cases {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tls-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let result = try EtcdProcess.run(EtcdProcess.binary, ["--data-dir", dir] + base + arguments, environment: [:], input: nil)
            #expect(result.status != 0, "\(arguments)")
            #expect(result.err.contains(message), "\(arguments): \(result.err)")
            #expect(!FileManager.default.fileExists(atPath: dir + "/member"), "\(arguments): the data dir was touched")
        }
    }

    /// With auth on and `--client-cert-auth`, a client presenting a verified
    /// certificate and no token acts as the user its Common Name names:
    /// the same answers as the real etcd 3.4 for root, a read-only user and
    /// a name that is no user.
    @Test func certificateCommonNameIsTheUserAsInEtcd() throws {
        let certs = try Self.certificates()
        try certs.make("reader", commonName: "reader", kind: "client")
        try certs.make("nobody", commonName: "nobody", kind: "client")
        let flags = Self.mutual + ["--trusted-ca-file", certs.cert("ca")]
        let ours = try Self.server(certs, extra: flags)
        defer { ours.terminate() }
        let theirs = try RealEtcdProcess(extraArguments: flags + ["--cert-file", certs.cert("server"), "--key-file", certs.key("server")],
                                         clientScheme: "https", clientFlags: Self.clientFlags(certs, "client"))
        defer { theirs.terminate() }
        let setup: [[String]] = [
            ["user", "add", "root:rootpw"], ["user", "grant-role", "root", "root"], ["role", "add", "readers"],
            ["role", "grant-permission", "readers", "read", "k"], ["user", "add", "reader:readerpw"],
            ["user", "grant-role", "reader", "readers"], ["put", "k", "v"], ["auth", "enable"],
        ]
        let steps: [(cert: String, arguments: [String])] = [
            ("client", ["put", "k", "v2"]), ("client", ["get", "k"]), ("reader", ["get", "k"]), ("reader", ["put", "k", "v3"]),
            ("nobody", ["get", "k"]), ("client", ["user", "list"]), ("reader", ["user", "list"]),
        ]
        var transcripts: [[String]] = []
        for port in [ours.port, theirs.port] {
            func run(_ cert: String, _ arguments: [String]) throws -> String {
                let result = try EtcdProcess.run("/usr/bin/etcdctl", ["--endpoints=https://127.0.0.1:\(port)", "--dial-timeout=2s", "--command-timeout=5s"]
                                                     + Self.clientFlags(certs, cert) + arguments, environment: ["ETCDCTL_API": "3"], input: nil)
                return "\(result.status) \(result.out) \(result.err.split(separator: "\n").last.map(String.init) ?? "")"
            }
            for arguments in setup { _ = try run("client", arguments) }
            transcripts.append(try steps.map { try run($0.cert, $0.arguments) })
        }
        for (index, step) in steps.enumerated() {
            #expect(transcripts[0][index] == transcripts[1][index], "\(step): ours \(transcripts[0][index]) vs etcd \(transcripts[1][index])")
        }
        #expect(transcripts[0][3].contains("permission denied"), "\(transcripts[0][3])")
        #expect(transcripts[0][0].hasPrefix("0 OK"), "\(transcripts[0][0])")
    }

    /// The same TLS settings from etcd's config-file block and from `ETCD_*` variables.
    @Test func configFileAndEnvironmentCarryTLS() throws {
        let certs = try Self.certificates()
        let port = try EtcdProcess.freePort()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tls-\(UUID().uuidString)").path
        let file = certs.path("etcd.yaml")
        try """
        data-dir: \(dir)
        listen-client-urls: https://127.0.0.1:\(port)
        advertise-client-urls: https://127.0.0.1:\(port)
        listen-peer-urls: http://127.0.0.1:\(try EtcdProcess.freePort())
        client-transport-security:
          cert-file: \(certs.cert("server"))
          key-file: \(certs.key("server"))
          client-cert-auth: true
          trusted-ca-file: \(certs.cert("ca"))
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let fromFile = try EtcdProcess(arguments: ["--config-file", file], port: port, dataDir: dir, ownsDataDir: true,
                                       scheme: "https", clientFlags: Self.clientFlags(certs, "client"))
        #expect(try fromFile.etcdctl(["put", "from", "file"]).status == 0)
        let anonymous = try EtcdProcess.run("/usr/bin/etcdctl", ["--endpoints=https://127.0.0.1:\(port)", "--dial-timeout=1s", "--command-timeout=2s",
                                                                  "--cacert", certs.cert("ca"), "get", "from"], environment: ["ETCDCTL_API": "3"], input: nil)
        #expect(anonymous.status != 0, "client-cert-auth from the file is in force")
        fromFile.terminate()

        let envPort = try EtcdProcess.freePort()
        let envDir = FileManager.default.temporaryDirectory.appendingPathComponent("tls-\(UUID().uuidString)").path
        let fromEnvironment = try EtcdProcess(
            arguments: ["--data-dir", envDir, "--listen-client-urls", "https://127.0.0.1:\(envPort)", "--advertise-client-urls", "https://127.0.0.1:\(envPort)",
                        "--listen-peer-urls", "http://127.0.0.1:\(try EtcdProcess.freePort())"],
            port: envPort, dataDir: envDir, ownsDataDir: true,
            environment: ["ETCD_CERT_FILE": certs.cert("server"), "ETCD_KEY_FILE": certs.key("server"), "ETCD_CLIENT_CERT_AUTH": "true",
                          "ETCD_TRUSTED_CA_FILE": certs.cert("ca")],
            scheme: "https", clientFlags: Self.clientFlags(certs, "client"))
        defer { fromEnvironment.terminate() }
        #expect(try fromEnvironment.etcdctl(["put", "from", "env"]).status == 0)
        let stranger = try EtcdProcess.run("/usr/bin/etcdctl", ["--endpoints=https://127.0.0.1:\(envPort)", "--dial-timeout=1s", "--command-timeout=2s"]
                                               + Self.clientFlags(certs, "stranger") + ["get", "from"], environment: ["ETCDCTL_API": "3"], input: nil)
        #expect(stranger.status != 0)
    }

    @Test func autoTLSServesASelfSignedCertificate() throws {
        let port = try EtcdProcess.freePort()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tls-\(UUID().uuidString)").path
        let url = "https://127.0.0.1:\(port)"
        let server = try EtcdProcess(
            arguments: ["--data-dir", dir, "--listen-client-urls", url, "--advertise-client-urls", url,
                        "--listen-peer-urls", "http://127.0.0.1:\(try EtcdProcess.freePort())", "--auto-tls"],
            port: port, dataDir: dir, ownsDataDir: true, scheme: "https",
            // The Go etcdctl 3.4 skips verification only with both flags (as against etcd 3.4).
            clientFlags: ["--insecure-transport=false", "--insecure-skip-tls-verify"])
        defer { server.terminate() }
        #expect(try server.etcdctl(["put", "auto", "tls"]).status == 0)
        #expect(FileManager.default.fileExists(atPath: dir + "/fixtures/client/cert.pem"))
        #expect(FileManager.default.fileExists(atPath: dir + "/fixtures/client/key.pem"))
        // Not signed by anyone the client trusts: verification fails without the skip.
        let verified = try EtcdProcess.run("/usr/bin/etcdctl", ["--endpoints=\(url)", "--dial-timeout=1s", "--command-timeout=2s", "get", "auto"],
                                           environment: ["ETCDCTL_API": "3"], input: nil)
        #expect(verified.status != 0)
    }
}

/// A Go etcdctl command that keeps running (a watch): its output as it comes.
final class BackgroundEtcdctl {
    private let process = Process()
    private let output = Pipe()
    private var collected = ""

    init(server: EtcdProcess, arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/etcdctl")
        process.arguments = ["--endpoints=\(server.scheme)://127.0.0.1:\(server.port)", "--dial-timeout=2s"] + server.clientFlags + arguments
        process.environment = ProcessInfo.processInfo.environment.merging(["ETCDCTL_API": "3"]) { $1 }
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    /// Waits (at most 10 s) until the output contains `text`.
    func waitForOutput(containing text: String) throws -> Bool {
        let deadline = Date().addingTimeInterval(10)
        let handle = output.fileHandleForReading
        let fd = handle.fileDescriptor
        while Date() < deadline {
            if collected.contains(text) { return true }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 200) > 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = read(fd, &buffer, buffer.count)
            if count <= 0 { break }
            collected += String(decoding: buffer[..<count], as: UTF8.self)
        }
        return collected.contains(text)
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }
}
