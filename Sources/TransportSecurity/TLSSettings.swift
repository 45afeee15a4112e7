import NIOSSL

/// One side's TLS settings as etcd's flags name them: the client side
/// (`--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth`,
/// `--client-crl-file`, `--auto-tls`, ...) or the peer side (the same with
/// `--peer-`). Versions and cipher suites are shared by both sides.
public struct TLSSettings: Sendable, Equatable {
    /// The certificate (chain) and key this side serves with.
    public var certFile = ""
    public var keyFile = ""
    /// The certificate and key presented when this member dials out
    /// (`--client-cert-file` / `--peer-client-cert-file`); empty: `certFile`.
    public var clientCertFile = ""
    public var clientKeyFile = ""
    /// CA bundle that client certificates must chain to; as in etcd, setting
    /// it also requires clients to present a certificate.
    public var trustedCAFile = ""
    public var clientCertAuth = false
    /// Revoked serial numbers (DER or PEM X.509 CRL), checked after the handshake.
    public var crlFile = ""
    /// The one Common Name / hostname a connecting certificate must carry
    /// (mutually exclusive, as in etcd).
    public var allowedCN = ""
    public var allowedHostname = ""
    /// Peer listeners: a connecting member's certificate must name the
    /// address it connects from (etcd's SAN check; off with
    /// `--peer-skip-client-san-verification`).
    public var checksClientAddress = false
    /// Generate and use a self-signed certificate (in the data dir).
    public var autoTLS = false
    /// Years a self-signed certificate is valid (`--self-signed-cert-validity`).
    public var selfSignedValidityYears = 1
    /// Go's names (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`); empty: the defaults.
    public var cipherSuites: [String] = []
    public var minVersion: TLSProtocolVersion = .tls12
    public var maxVersion: TLSProtocolVersion?

    public init() {}

    /// No certificate source at all: this side is plaintext only.
    public var isEmpty: Bool { certFile.isEmpty && keyFile.isEmpty && !autoTLS }

    /// Whether a connecting side must present a certificate (etcd: a trusted
    /// CA alone turns it on too).
    public var requiresClientCertificate: Bool { clientCertAuth || !trustedCAFile.isEmpty }
}

/// `--tls-min-version` / `--tls-max-version`.
public enum TLSProtocolVersion: String, Sendable, Comparable {
    case tls12 = "TLS1.2"
    case tls13 = "TLS1.3"

    /// etcd's parse: "TLS1.2", "TLS1.3" or empty (the default).
    public static func parse(_ text: String) throws(TLSSetupError) -> TLSProtocolVersion? {
        if text.isEmpty { return nil }
        guard let version = TLSProtocolVersion(rawValue: text) else {
            throw TLSSetupError("unexpected TLS version \"\(text)\" (must be one of: TLS1.2, TLS1.3)")
        }
        return version
    }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs == .tls12 && rhs == .tls13 }

    var nio: TLSVersion { self == .tls12 ? .tlsv12 : .tlsv13 }
}

/// A TLS setting or file that cannot be used; the text is etcd's message
/// where etcd has one (it names the file and the problem).
public struct TLSSetupError: Error, Sendable, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Cipher suites by Go's names (`crypto/tls`), as `--cipher-suites` takes them.
/// TLS 1.3 suites are not configurable, in Go as in BoringSSL.
public enum CipherSuites {
    /// Go's name → the IANA name BoringSSL's cipher-list syntax accepts.
    static let byGoName: [String: String] = {
        var table: [String: String] = [:]
        for name in [
            "TLS_RSA_WITH_AES_128_CBC_SHA", "TLS_RSA_WITH_AES_256_CBC_SHA",
            "TLS_RSA_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        ] { table[name] = name }
        // Go's older spellings of the ChaCha20 suites.
        table["TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"] = "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
        table["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"] = "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        return table
    }()

    /// Go 1.22+'s default TLS 1.2 suites (etcd 3.6 is built with it): ECDHE
    /// key exchange only, AEAD first.
    static let defaults = [
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    ]

    /// Checks names as etcd does and returns BoringSSL's cipher string.
    public static func cipherString(_ goNames: [String]) throws(TLSSetupError) -> String {
        var names: [String] = []
        for name in goNames {
            guard let iana = byGoName[name] else { throw TLSSetupError("unexpected TLS cipher suite \"\(name)\"") }
            names.append(iana)
        }
        return (names.isEmpty ? defaults : names).joined(separator: ":")
    }
}

extension TLSSettings {
    /// etcd's checks of the version and cipher flags, before any file is read.
    public func validate() throws(TLSSetupError) {
        if let maxVersion, minVersion > maxVersion {
            throw TLSSetupError("min version (\(minVersion.rawValue)) is greater than max version (\(maxVersion.rawValue))")
        }
        if !cipherSuites.isEmpty && minVersion == .tls13 {
            throw TLSSetupError("cipher suites cannot be configured when only TLS1.3 is enabled")
        }
        _ = try CipherSuites.cipherString(cipherSuites)
        if !allowedCN.isEmpty && !allowedHostname.isEmpty {
            throw TLSSetupError("AllowedCN and AllowedHostname are mutually exclusive (cn=\"\(allowedCN)\", hostname=\"\(allowedHostname)\")")
        }
    }
}
