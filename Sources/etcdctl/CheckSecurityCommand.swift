import CLIText
import EtcdClient
import EtcdProto
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import NIOCore
import NIOPosix
import NIOSSL

/// `etcdctl check security` (ours; Go's etcdctl has none): probes the
/// endpoints it is given as an outsider would and prints what it found,
/// each with a severity. Exits 1 when a high-severity finding exists, so
/// it can gate a deploy.
func checkSecurityCommand(_ g: @escaping (Invocation) -> Globals) -> Command {
    let security = Command("security", "Probe the endpoints for common security gaps (plaintext URLs, auth off, open reads, weak root password, open metrics, expiring certificates)") { inv in
        try await runCheckSecurity(g(inv))
    }
    security.flag("expiry-days", .int, "30", "Report certificates that expire within this many days")
    return security
}

struct SecurityFinding: Sendable {
    enum Severity: String, Sendable, Comparable {
        case high = "HIGH", medium = "MEDIUM", low = "LOW", pass = "OK"
        private var rank: Int { [.high: 0, .medium: 1, .low: 2, .pass: 3][self]! }
        static func < (a: Self, b: Self) -> Bool { a.rank < b.rank }
    }

    var severity: Severity
    var check: String
    var target: String
    var detail: String
}

/// Passwords an attacker tries first.
let wellKnownRootPasswords = ["", "root", "password", "etcd", "admin", "changeme", "123456", "secret"]

func runCheckSecurity(_ globals: Globals) async throws {
    let days = Int(globals.flag("expiry-days").int)
    var findings: [SecurityFinding] = []
    let endpoints = globals.endpoints
    let tls = Globals.tlsOptions(cert: globals.flag("cert").string, key: globals.flag("key").string, cacert: globals.flag("cacert").string,
                                 insecureTransport: globals.flag("insecure-transport").bool,
                                 skipVerify: globals.flag("insecure-skip-tls-verify").bool)
    // An outsider: the same CA trust, but no client certificate and no user.
    let anonymousTLS = tls.map { EtcdTLSOptions(caFile: $0.caFile, insecureSkipVerify: $0.insecureSkipVerify) }
    let timeout = globals.commandTimeout

    for endpoint in endpoints {
        let secure = endpoint.hasPrefix("https://")
        if secure {
            findings.append(.init(severity: .pass, check: "client-tls", target: endpoint, detail: "client URL uses TLS"))
            findings.append(await certificateFinding(endpoint, days: days))
            let outsider = try EtcdClient(endpoints: [endpoint], options: EtcdClientOptions(dialTimeout: .seconds(2), commandTimeout: timeout, tls: anonymousTLS))
            defer { outsider.close() }
            if (try? await outsider.status(endpoint: endpoint)) != nil {
                findings.append(.init(severity: .medium, check: "client-cert-auth", target: endpoint,
                                      detail: "a client without a certificate is served (--client-cert-auth is off)"))
            } else {
                findings.append(.init(severity: .pass, check: "client-cert-auth", target: endpoint, detail: "a client certificate is required"))
            }
        } else {
            findings.append(.init(severity: .high, check: "client-tls", target: endpoint,
                                  detail: "client URL is plaintext: data and credentials cross the network unencrypted"))
        }
        findings += await anonymousAccessFindings(endpoint, tls: anonymousTLS, identifiedTLS: tls, timeout: timeout)
        findings += await rootPasswordFindings(endpoint, tls: tls, timeout: timeout)
        if !secure { findings += await httpEndpointFindings(endpoint) }
    }
    if let client = try? globals.makeClient(), let members = try? await client.memberList() {
        defer { client.close() }
        for member in members.members {
            let name = member.name.isEmpty ? String(member.id, radix: 16) : member.name
            for url in member.peerUrls {
                findings.append(url.hasPrefix("https://")
                    ? .init(severity: .pass, check: "peer-tls", target: "\(name) \(url)", detail: "peer URL uses TLS")
                    : .init(severity: .high, check: "peer-tls", target: "\(name) \(url)", detail: "peer URL is plaintext: replication traffic is unencrypted and unauthenticated"))
            }
            for url in member.clientUrls where !endpoints.contains(url) && !url.hasPrefix("https://") {
                findings.append(.init(severity: .high, check: "client-tls", target: "\(name) \(url)", detail: "client URL is plaintext"))
            }
        }
    } else {
        findings.append(.init(severity: .low, check: "peer-tls", target: endpoints.joined(separator: ","), detail: "could not list members to check peer URLs"))
    }
    if let certFile = tls?.certFile, let certificate = try? NIOSSLCertificate.fromPEMFile(certFile).first {
        findings.append(expiryFinding(certificate.notValidAfter, check: "client-certificate", target: certFile, days: days))
    }

    findings.sort { ($0.severity, $0.check, $0.target) < ($1.severity, $1.check, $1.target) }
    let high = findings.filter { $0.severity == .high }.count
    Out.print(renderTable(header: ["severity", "check", "target", "finding"],
                          rows: findings.map { [$0.severity.rawValue, $0.check, $0.target, $0.detail] }), terminator: "")
    Out.print("\(findings.filter { $0.severity != .pass }.count) findings, \(high) high")
    if high > 0 { throw Exit(code: ExitCode.error) }
}

/// One key (any), keys only: what the probes read.
private var probeRange: Etcdserverpb_RangeRequest {
    var range = Etcdserverpb_RangeRequest()
    range.key = Data([0])
    range.rangeEnd = Data([0])
    range.limit = 1
    range.keysOnly = true
    return range
}

/// A read without credentials, and whether auth is enabled.
private func anonymousAccessFindings(_ endpoint: String, tls: EtcdTLSOptions?, identifiedTLS: EtcdTLSOptions?,
                                     timeout: Duration) async -> [SecurityFinding] {
    guard let outsider = try? EtcdClient(endpoints: [endpoint], options: EtcdClientOptions(dialTimeout: .seconds(2), commandTimeout: timeout, tls: tls)) else {
        return []
    }
    defer { outsider.close() }
    var findings: [SecurityFinding] = []
    let read: Result<RangeResponse, EtcdClientError>
    do { read = .success(try await outsider.range(probeRange)) } catch { read = .failure(EtcdClientError(error)) }
    switch read {
    case .success:
        findings.append(.init(severity: .high, check: "anonymous-read", target: endpoint, detail: "a client without credentials can read keys"))
    case .failure:
        findings.append(.init(severity: .pass, check: "anonymous-read", target: endpoint, detail: "a read without credentials is refused"))
    }
    // AuthStatus came with etcd 3.5; before it, the refused read tells.
    // A listener that wants a client certificate refuses the outsider: ask
    // with the certificate given (still without a user).
    let asker = tls == identifiedTLS ? nil
        : try? EtcdClient(endpoints: [endpoint], options: EtcdClientOptions(dialTimeout: .seconds(2), commandTimeout: timeout, tls: identifiedTLS))
    defer { asker?.close() }
    let enabled: Bool?
    if let status = try? await outsider.authStatus() {
        enabled = status.enabled
    } else if let status = try? await asker?.authStatus() {
        enabled = status.enabled
    } else if case .failure(let error) = read {
        enabled = error == .userEmpty || error == .invalidAuthToken ? true : nil
    } else {
        enabled = false
    }
    if let enabled {
        findings.append(enabled
            ? .init(severity: .pass, check: "auth", target: endpoint, detail: "authentication is enabled")
            : .init(severity: .high, check: "auth", target: endpoint, detail: "authentication is disabled: whoever reaches the port reads and writes everything"))
    }
    return findings
}

/// Logs in as root with the passwords an attacker tries first.
private func rootPasswordFindings(_ endpoint: String, tls: EtcdTLSOptions?, timeout: Duration) async -> [SecurityFinding] {
    for password in wellKnownRootPasswords {
        let options = EtcdClientOptions(dialTimeout: .seconds(2), commandTimeout: timeout, username: "root", password: password, tls: tls)
        guard let client = try? EtcdClient(endpoints: [endpoint], options: options) else { return [] }
        defer { client.close() }
        do {
            _ = try await client.range(probeRange)
            // A token exists only when auth is enabled and root logged in.
            if client.authToken != nil {
                let shown = password.isEmpty ? "an empty password" : "the password \"\(password)\""
                return [.init(severity: .high, check: "root-password", target: endpoint, detail: "root logs in with \(shown)")]
            }
            return []  // auth disabled: nothing to log in to
        } catch {
            if EtcdClientError(error) != .authFailed { return [] }
        }
    }
    return [.init(severity: .pass, check: "root-password", target: endpoint,
                  detail: "root does not log in with an empty or well-known password")]
}

/// The HTTP endpoints etcd serves next to gRPC, fetched over plaintext.
private func httpEndpointFindings(_ endpoint: String) async -> [SecurityFinding] {
    let base = endpoint.contains("://") ? endpoint : "http://" + endpoint
    var findings: [SecurityFinding] = []
    for (path, check, severity, detail) in [
        ("/metrics", "metrics", SecurityFinding.Severity.medium, "/metrics is served to anyone (serve it on --listen-metrics-urls at a private address)"),
        ("/debug/pprof/", "pprof", .high, "profiling endpoints are open (--enable-pprof)"),
    ] {
        guard let url = URL(string: base + path) else { continue }
        var request = URLRequest(url: url)
        request.timeoutInterval = 3
        if let (_, response) = try? await URLSession.shared.data(for: request), (response as? HTTPURLResponse)?.statusCode == 200 {
            findings.append(.init(severity: severity, check: check, target: base + path, detail: detail))
        } else {
            findings.append(.init(severity: .pass, check: check, target: base + path, detail: "not served"))
        }
    }
    return findings
}

/// The server certificate an endpoint presents, and how long it has left.
private func certificateFinding(_ endpoint: String, days: Int) async -> SecurityFinding {
    guard let components = URLComponents(string: endpoint), let host = components.host else {
        return .init(severity: .low, check: "server-certificate", target: endpoint, detail: "cannot parse the endpoint")
    }
    let port = components.port ?? 2379
    do {
        let certificate = try await presentedCertificate(host: host, port: port)
        return expiryFinding(certificate.notValidAfter, check: "server-certificate", target: endpoint, days: days)
    } catch {
        return .init(severity: .low, check: "server-certificate", target: endpoint, detail: "could not read the certificate: \(error)")
    }
}

private func expiryFinding(_ notAfter: time_t, check: String, target: String, days: Int) -> SecurityFinding {
    let expiry = Date(timeIntervalSince1970: TimeInterval(notAfter))
    let left = expiry.timeIntervalSinceNow / 86_400
    let date = ISO8601DateFormatter().string(from: expiry)
    if left < 0 { return .init(severity: .high, check: check, target: target, detail: "expired on \(date)") }
    if left < Double(days) { return .init(severity: .medium, check: check, target: target, detail: "expires on \(date), in \(Int(left)) days") }
    return .init(severity: .pass, check: check, target: target, detail: "valid until \(date)")
}

/// Opens a TLS connection only to read the leaf certificate the server
/// presents (nothing is trusted or sent); 3 s at most.
private func presentedCertificate(host: String, port: Int) async throws -> NIOSSLCertificate {
    var configuration = TLSConfiguration.makeClientConfiguration()
    configuration.certificateVerification = .noHostnameVerification
    let context = try NIOSSLContext(configuration: configuration)
    let group = MultiThreadedEventLoopGroup.singleton
    let promise = group.next().makePromise(of: NIOSSLCertificate.self)
    let channel = try await ClientBootstrap(group: group)
        .connectTimeout(.seconds(3))
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                let handler = try NIOSSLClientHandler(context: context, serverHostname: nil) { certificates, verdict in
                    if let leaf = certificates.first { promise.succeed(leaf) } else { promise.fail(NIOSSLError.noCertificateToValidate) }
                    verdict.succeed(.certificateVerified)
                }
                try channel.pipeline.syncOperations.addHandler(handler)
            }
        }
        .connect(host: host, port: port).get()
    defer { channel.close(promise: nil) }
    group.next().scheduleTask(in: .seconds(3)) { promise.fail(ChannelError.connectTimeout(.seconds(3))) }
    return try await promise.futureResult.get()
}
