#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Locks
import Logging
import NIOCore
import NIOSSL
import X509

/// The certificates and keys of one side (client or peer), loaded from
/// files, with the TLS contexts built from them.
///
/// Certificates are re-read when their files change, as etcd re-reads them
/// at each handshake: every new connection looks at the files' identity and
/// modification time (one `stat` each) and rebuilds its context when one
/// changed. A file that has become unreadable or does not match keeps the
/// last good context in use and logs the error once per change; connections
/// already open are never touched.
public final class TLSCredentials: Sendable {
    public let settings: TLSSettings
    /// `--auto-tls`: our own self-signed certificate, which peers do not verify.
    public let isSelfSigned: Bool
    private let logger: Logger
    private let state: Mutex<State>

    private struct State {
        var stamps: [FileStamp]
        var server: NIOSSLContext
        var client: NIOSSLContext
        var revoked: RevocationList?
        /// The stamps of a reload that failed (logged once).
        var failedStamps: [FileStamp]?
        var reloads = 0
    }

    /// Loads and checks every file; throws etcd's message naming the file and
    /// the problem. `autoTLSDirectory` and `hosts` are used only with `--auto-tls`
    /// (or `--peer-auto-tls`) and no certificate files.
    public init(settings: TLSSettings, autoTLSDirectory: String? = nil, hosts: [String] = [], extendedUsage: SelfSignedCertificate.Usage = .server,
                logger: Logger = Logger(label: "etcd")) throws(TLSSetupError) {
        try settings.validate()
        var settings = settings
        var selfSigned = false
        if settings.certFile.isEmpty && settings.keyFile.isEmpty && settings.autoTLS {
            guard let directory = autoTLSDirectory else { throw TLSSetupError("auto TLS needs a data directory") }
            let files = try SelfSignedCertificate.ensure(directory: directory, hosts: hosts, validityYears: settings.selfSignedValidityYears,
                                                          usage: extendedUsage, logger: logger)
            settings.certFile = files.certFile
            settings.keyFile = files.keyFile
            selfSigned = true
        } else if settings.autoTLS {
            logger.warning("ignoring auto TLS since certs given")
        }
        guard !settings.certFile.isEmpty, !settings.keyFile.isEmpty else {
            throw TLSSetupError("KeyFile and CertFile must both be present[key: \(settings.keyFile), cert: \(settings.certFile)]")
        }
        self.settings = settings
        self.isSelfSigned = selfSigned
        self.logger = logger
        let loaded = try Self.load(settings, selfSigned: selfSigned)
        state = Mutex(State(stamps: Self.stamps(settings), server: loaded.server, client: loaded.client, revoked: loaded.revoked))
    }

    /// The context for a connection accepted now (reloaded if a file changed).
    public func serverContext() -> NIOSSLContext { current().server }

    /// The context for a connection we dial now.
    public func clientContext() -> NIOSSLContext { current().client }

    /// How many times the files were re-read after a change (for tests).
    public var reloadCount: Int { state.withLock { $0.reloads } }

    private func current() -> (server: NIOSSLContext, client: NIOSSLContext, revoked: RevocationList?) {
        let stamps = Self.stamps(settings)
        let (cached, stale) = state.withLock { state in
            ((state.server, state.client, state.revoked), state.stamps != stamps && state.failedStamps != stamps)
        }
        guard stale else { return cached }
        do {
            let loaded = try Self.load(settings, selfSigned: isSelfSigned)
            state.withLock { state in
                state.stamps = stamps
                state.server = loaded.server
                state.client = loaded.client
                state.revoked = loaded.revoked
                state.failedStamps = nil
                state.reloads += 1
            }
            logger.info("reloaded TLS certificate files", metadata: ["cert-file": "\(settings.certFile)", "key-file": "\(settings.keyFile)"])
            return (loaded.server, loaded.client, loaded.revoked)
        } catch {
            state.withLock { $0.failedStamps = stamps }
            logger.warning("failed to reload TLS certificate files; keeping the last good ones",
                           metadata: ["cert-file": "\(settings.certFile)", "key-file": "\(settings.keyFile)", "error": "\(error)"])
            return cached
        }
    }

    // MARK: checks after the handshake

    /// Whether `refusal(of:remoteHost:)` may look names up in DNS (and so
    /// must not run on an event loop).
    var checksMayBlock: Bool { settings.checksClientAddress }

    /// etcd's checks of a verified peer certificate: the allowed CN or
    /// hostname, the CRL, and on peer listeners that the certificate names
    /// the address the member connects from (`remoteHost`, an IP literal).
    /// Returns the refusal's reason, or nil.
    public func refusal(of certificate: NIOSSLCertificate?, remoteHost: String? = nil) -> String? {
        let revoked = current().revoked
        let checkAddress = settings.checksClientAddress && remoteHost != nil
        guard !settings.allowedCN.isEmpty || !settings.allowedHostname.isEmpty || revoked != nil || checkAddress else { return nil }
        guard let certificate else {
            // No certificate: only possible when none is required, and then
            // etcd's checks have nothing to look at either.
            return settings.allowedCN.isEmpty && settings.allowedHostname.isEmpty ? nil : "client certificate authentication failed"
        }
        let parsed: Certificate
        do { parsed = try Certificate(derEncoded: certificate.toDERBytes()) } catch {
            return "cannot parse the peer certificate: \(error)"
        }
        if let revoked, revoked.isRevoked(serial: parsed.serialNumber.bytes) {
            let hex = RevocationList.normalized(parsed.serialNumber.bytes).map { String(format2: $0) }.joined()
            return "transport: certificate serial \(hex) revoked"
        }
        if !settings.allowedCN.isEmpty, Self.commonName(of: parsed) != settings.allowedCN {
            return "client certificate authentication failed (CommonName \"\(Self.commonName(of: parsed) ?? "")\" is not \"\(settings.allowedCN)\")"
        }
        if !settings.allowedHostname.isEmpty, !Self.matches(parsed, hostname: settings.allowedHostname) {
            return "client certificate authentication failed (not valid for \(settings.allowedHostname))"
        }
        if checkAddress, let remoteHost, let reason = Self.addressRefusal(parsed, remoteHost: remoteHost) { return reason }
        return nil
    }

    /// etcd's SAN check on peer listeners: a certificate with IP or DNS
    /// names must name the connecting address, by IP or by a DNS name that
    /// resolves to it. A certificate without names passes, as in etcd.
    static func addressRefusal(_ certificate: Certificate, remoteHost: String) -> String? {
        let names = ((try? certificate.extensions.subjectAlternativeNames) ?? nil) ?? SubjectAlternativeNames()
        var ips: [[UInt8]] = []
        var dnsNames: [String] = []
        for name in names {
            switch name {
            case .ipAddress(let octets): ips.append(Array(octets.bytes))
            case .dnsName(let dns): dnsNames.append(dns)
            default: continue
            }
        }
        if ips.isEmpty && dnsNames.isEmpty { return nil }
        guard let remote = IPAddressBytes.parse(remoteHost) else { return "tls: cannot parse remote address \(remoteHost)" }
        if ips.contains(remote) { return nil }
        for dns in dnsNames where IPAddressBytes.resolve(dns).contains(remote) { return nil }
        if dnsNames.isEmpty { return "x509: certificate is valid for \(ips.compactMap(IPAddressBytes.text).joined(separator: ", ")), not \(remoteHost)" }
        return "tls: \"\(remoteHost)\" does not match any of DNSNames \(dnsNames)"
    }

    /// The certificate's subject Common Name (the identity etcd's auth uses).
    public static func commonName(of certificate: NIOSSLCertificate) -> String? {
        guard let bytes = try? certificate.toDERBytes(), let parsed = try? Certificate(derEncoded: bytes) else { return nil }
        return commonName(of: parsed)
    }

    static func commonName(of certificate: Certificate) -> String? {
        for rdn in certificate.subject {
            for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                return String(attribute.value)
            }
        }
        return nil
    }

    /// Go's `VerifyHostname`: an IP against the IP SANs; a name against the
    /// DNS SANs (one leading `*.` wildcard label), case-insensitively.
    static func matches(_ certificate: Certificate, hostname: String) -> Bool {
        let names = (try? certificate.extensions.subjectAlternativeNames) ?? nil
        let wantedIP = IPAddressBytes.parse(hostname)
        for name in names ?? SubjectAlternativeNames() {
            switch name {
            case .ipAddress(let octets):
                if let wantedIP, Array(octets.bytes) == wantedIP { return true }
            case .dnsName(let pattern):
                guard wantedIP == nil else { continue }
                let host = hostname.lowercased()
                let pattern = pattern.lowercased()
                if pattern == host { return true }
                if pattern.hasPrefix("*."), let dot = host.firstIndex(of: "."), host[dot...] == pattern.dropFirst() { return true }
            default:
                continue
            }
        }
        return false
    }

    // MARK: loading

    private struct Loaded {
        var server: NIOSSLContext
        var client: NIOSSLContext
        var revoked: RevocationList?
    }

    private static func load(_ settings: TLSSettings, selfSigned: Bool) throws(TLSSetupError) -> Loaded {
        let identity = try KeyPair.load(certFile: settings.certFile, keyFile: settings.keyFile)
        let dialIdentity = settings.clientCertFile.isEmpty
            ? identity : try KeyPair.load(certFile: settings.clientCertFile, keyFile: settings.clientKeyFile)
        var roots: [NIOSSLCertificate]?
        if !settings.trustedCAFile.isEmpty {
            let bytes = try FileBytes.read(settings.trustedCAFile)
            guard let certificates = try? NIOSSLCertificate.fromPEMBytes(bytes), !certificates.isEmpty else {
                throw TLSSetupError("failed to load trusted CA file \(settings.trustedCAFile): no PEM certificates found")
            }
            roots = certificates
        }
        let revoked = settings.crlFile.isEmpty ? nil : try RevocationList(fileBytes: FileBytes.read(settings.crlFile))
        let ciphers = try CipherSuites.cipherString(settings.cipherSuites)

        func common(_ configuration: inout TLSConfiguration) {
            configuration.minimumTLSVersion = settings.minVersion.nio
            configuration.maximumTLSVersion = settings.maxVersion?.nio
            configuration.cipherSuites = ciphers
        }
        var server = TLSConfiguration.makeServerConfiguration(
            certificateChain: identity.chain.map { .certificate($0) }, privateKey: .privateKey(identity.key))
        common(&server)
        // gRPC and HTTP/1.1 (the JSON gateway, health) share client ports.
        server.applicationProtocols = ["h2", "http/1.1"]
        if settings.requiresClientCertificate {
            server.certificateVerification = .noHostnameVerification
            server.trustRoots = roots.map { .certificates($0) } ?? .default
            server.sendCANameList = roots != nil
        }
        var client = TLSConfiguration.makeClientConfiguration()
        common(&client)
        client.certificateChain = dialIdentity.chain.map { .certificate($0) }
        client.privateKey = .privateKey(dialIdentity.key)
        client.applicationProtocols = ["h2"]
        if selfSigned {
            // etcd's self-signed certificates are not verified by their dialers.
            client.certificateVerification = .none
        } else {
            client.trustRoots = roots.map { .certificates($0) } ?? .default
        }
        do {
            return Loaded(server: try NIOSSLContext(configuration: server), client: try NIOSSLContext(configuration: client), revoked: revoked)
        } catch {
            throw TLSSetupError("cannot use \(settings.certFile) and \(settings.keyFile): \(error)")
        }
    }

    private static func stamps(_ settings: TLSSettings) -> [FileStamp] {
        [settings.certFile, settings.keyFile, settings.clientCertFile, settings.clientKeyFile, settings.trustedCAFile, settings.crlFile]
            .map(FileStamp.init(path:))
    }
}

/// A certificate chain and its private key, checked to belong together.
struct KeyPair {
    var chain: [NIOSSLCertificate]
    var key: NIOSSLPrivateKey

    static func load(certFile: String, keyFile: String) throws(TLSSetupError) -> KeyPair {
        let certBytes = try FileBytes.read(certFile)
        let keyBytes = try FileBytes.read(keyFile)
        guard let chain = try? NIOSSLCertificate.fromPEMBytes(certBytes), let leaf = chain.first else {
            throw TLSSetupError("tls: failed to find any PEM data in certificate input (\(certFile))")
        }
        guard let key = try? NIOSSLPrivateKey(bytes: keyBytes, format: .pem) else {
            throw TLSSetupError("tls: failed to find any PEM data in key input (\(keyFile))")
        }
        // Go's tls.X509KeyPair check: the key's public half is the leaf's.
        guard let leafDER = try? leaf.toDERBytes(), let parsedLeaf = try? Certificate(derEncoded: leafDER),
              let text = String(validating: keyBytes, as: UTF8.self), let parsedKey = try? Certificate.PrivateKey(pemEncoded: text)
        else {
            throw TLSSetupError("tls: cannot parse the certificate \(certFile) or the key \(keyFile)")
        }
        guard parsedKey.publicKey == parsedLeaf.publicKey else {
            throw TLSSetupError("tls: private key does not match public key (\(certFile), \(keyFile))")
        }
        return KeyPair(chain: chain, key: key)
    }
}

/// A file read whole, with Go's `open PATH: REASON` errors.
enum FileBytes {
    static let limit = 16 << 20

    static func read(_ path: String) throws(TLSSetupError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw TLSSetupError("open \(path): \(String(cString: strerror(errno)).lowercased())") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw TLSSetupError("read \(path): \(String(cString: strerror(errno)).lowercased())")
            }
            if count == 0 { break }
            bytes += chunk[..<count]
            guard bytes.count <= limit else { throw TLSSetupError("read \(path): file larger than \(limit) bytes") }
        }
        return bytes
    }
}

/// What tells a changed file from an unchanged one: its identity, size and
/// modification time (nanoseconds). A missing file has its own stamp.
struct FileStamp: Equatable {
    var device: UInt64 = 0
    var inode: UInt64 = 0
    var size: Int64 = -1
    var seconds: Int = 0
    var nanoseconds: Int = 0

    init(path: String) {
        guard !path.isEmpty else { return }
        var info = stat()
        guard stat(path, &info) == 0 else { return }
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        size = Int64(info.st_size)
        seconds = Int(info.st_mtim.tv_sec)
        nanoseconds = Int(info.st_mtim.tv_nsec)
    }
}

/// An IPv4 or IPv6 literal as bytes (nil for a name).
enum IPAddressBytes {
    /// The addresses `name` resolves to (blocking: never on an event loop).
    static func resolve(_ name: String) -> [[UInt8]] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(name, nil, &hints, &list) == 0, let first = list else { return [] }
        defer { freeaddrinfo(first) }
        var result: [[UInt8]] = []
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let current = entry {
            if let address = current.pointee.ai_addr {
                if current.pointee.ai_family == AF_INET {
                    address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { v4 in
                        result.append(withUnsafeBytes(of: v4.pointee.sin_addr) { Array($0) })
                    }
                } else if current.pointee.ai_family == AF_INET6 {
                    address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { v6 in
                        result.append(withUnsafeBytes(of: v6.pointee.sin6_addr) { Array($0) })
                    }
                }
            }
            entry = current.pointee.ai_next
        }
        return result
    }

    static func text(_ bytes: [UInt8]) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        let ok = bytes.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &buffer, socklen_t(buffer.count)) != nil }
        guard ok, let end = buffer.firstIndex(of: 0) else { return nil }
        return String(decoding: buffer[..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func parse(_ text: String) -> [UInt8]? {
        var host = text
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 { return withUnsafeBytes(of: v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, host, &v6) == 1 { return withUnsafeBytes(of: v6) { Array($0) } }
        return nil
    }
}

extension String {
    /// Two lower-case hex digits.
    init(format2 byte: UInt8) {
        let digits = Array("0123456789abcdef")
        self = String([digits[Int(byte >> 4)], digits[Int(byte & 0xf)]])
    }
}
