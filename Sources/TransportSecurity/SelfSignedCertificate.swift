#if canImport(Glibc)
import Glibc
#endif
import Crypto
import Foundation
import Logging
import SwiftASN1
import X509

/// `--auto-tls` / `--peer-auto-tls`: a self-signed certificate for the
/// listen URLs' hosts, made once and kept in the data dir
/// (`fixtures/client`, `fixtures/peer`) as `cert.pem` and `key.pem`, as
/// etcd keeps them; reused when both files exist.
public enum SelfSignedCertificate {
    public enum Usage: Sendable {
        /// Server authentication (the client listener).
        case server
        /// Server and client authentication (peers dial each other with it).
        case serverAndClient
    }

    public static func ensure(directory: String, hosts: [String], validityYears: Int, usage: Usage,
                              logger: Logger) throws(TLSSetupError) -> (certFile: String, keyFile: String) {
        let certFile = directory + "/cert.pem"
        let keyFile = directory + "/key.pem"
        if access(certFile, F_OK) == 0 && access(keyFile, F_OK) == 0 { return (certFile, keyFile) }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw TLSSetupError("cannot create cert directory \(directory): \(error.localizedDescription)")
        }
        let pem: (certificate: String, key: String)
        do { pem = try make(hosts: hosts, validityYears: validityYears, usage: usage) } catch {
            throw TLSSetupError("cannot generate x509 certificate: \(error)")
        }
        try write(pem.certificate, to: certFile, mode: 0o644)
        logger.info("created cert file", metadata: ["path": "\(certFile)"])
        try write(pem.key, to: keyFile, mode: 0o600)
        logger.info("created key file", metadata: ["path": "\(keyFile)"])
        return (certFile, keyFile)
    }

    /// A P-256 key and a certificate signed by it: organization "etcd", a
    /// random 128-bit serial, the hosts as IP or DNS subject alternative names.
    static func make(hosts: [String], validityYears: Int, usage: Usage) throws -> (certificate: String, key: String) {
        let key = P256.Signing.PrivateKey()
        let certificateKey = Certificate.PrivateKey(key)
        let name = try DistinguishedName { OrganizationName("etcd") }
        var names: [GeneralName] = []
        for host in hosts {
            let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
            if let ip = IPAddressBytes.parse(bare) {
                names.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(ip))))
            } else if !names.contains(.dnsName(bare)) {
                names.append(.dnsName(bare))
            }
        }
        let usages: [ExtendedKeyUsage.Usage] = usage == .server ? [.serverAuth] : [.serverAuth, .clientAuth]
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
            try ExtendedKeyUsage(usages)
            SubjectAlternativeNames(names)
        }
        var serial = [UInt8](repeating: 0, count: 16)
        var generator = SystemRandomNumberGenerator()
        for index in serial.indices { serial[index] = generator.next() }
        serial[0] &= 0x7f
        let now = Date()
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(bytes: serial), publicKey: certificateKey.publicKey,
            notValidBefore: now.addingTimeInterval(-60), notValidAfter: now.addingTimeInterval(Double(max(validityYears, 1)) * 365 * 86_400),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions, issuerPrivateKey: certificateKey)
        return (try certificate.serializeAsPEM().pemString, key.pemRepresentation)
    }

    private static func write(_ text: String, to path: String, mode: mode_t) throws(TLSSetupError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw TLSSetupError("open \(path): \(String(cString: strerror(errno)).lowercased())") }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count, fsync(fd) == 0 else {
            throw TLSSetupError("write \(path): \(String(cString: strerror(errno)).lowercased())")
        }
    }
}
