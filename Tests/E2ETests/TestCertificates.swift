import Foundation
import Testing

/// Certificates for the TLS tests, made with `openssl` (Debian's) in a
/// temporary directory: a CA, a second unrelated CA, server and client
/// certificates signed by either, and CRLs.
final class TestCertificates {
    let directory: String

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("certs-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try """
        [server]
        subjectAltName=IP:127.0.0.1,DNS:localhost
        extendedKeyUsage=serverAuth,clientAuth
        [client]
        extendedKeyUsage=clientAuth
        [ca]
        default_ca=local
        [local]
        database=\(directory)/index.txt
        default_md=sha256
        default_crl_days=30
        """.write(toFile: directory + "/openssl.cnf", atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: directory + "/index.txt", contents: nil)
        try makeCA("ca")
        try makeCA("other-ca")
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    func path(_ name: String) -> String { directory + "/" + name }
    func cert(_ name: String) -> String { path(name + ".pem") }
    func key(_ name: String) -> String { path(name + "-key.pem") }

    private func makeCA(_ name: String) throws {
        try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-keyout", key(name), "-out", cert(name), "-days", "30", "-subj", "/CN=\(name)"])
    }

    /// A certificate `name` with Common Name `commonName`, signed by `ca`;
    /// `kind` "server" (IP 127.0.0.1 and localhost, both usages) or "client".
    @discardableResult
    func make(_ name: String, commonName: String, kind: String = "server", ca: String = "ca") throws -> String {
        try openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-keyout", key(name), "-out", path(name + ".csr"), "-subj", "/CN=\(commonName)"])
        try openssl(["x509", "-req", "-in", path(name + ".csr"), "-CA", cert(ca), "-CAkey", key(ca), "-set_serial",
                     String(Int.random(in: 1_000_000...9_000_000_000)), "-out", cert(name), "-days", "30",
                     "-extfile", path("openssl.cnf"), "-extensions", kind])
        return try serial(of: cert(name))
    }

    /// A CRL of `ca` revoking `names`' certificates.
    func revocationList(revoking names: [String], ca: String = "ca") throws -> String {
        for name in names {
            try openssl(["ca", "-config", path("openssl.cnf"), "-keyfile", key(ca), "-cert", cert(ca), "-revoke", cert(name)])
        }
        let out = path("crl.pem")
        try openssl(["ca", "-config", path("openssl.cnf"), "-keyfile", key(ca), "-cert", cert(ca), "-gencrl", "-out", out])
        return out
    }

    /// The certificate's serial number, as `openssl x509 -serial` prints it.
    func serial(of file: String) throws -> String {
        let out = try openssl(["x509", "-in", file, "-noout", "-serial"])
        return out.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "serial=", with: "")
    }

    /// The serial of the certificate a TLS server at `port` presents now.
    func servedSerial(port: Int) throws -> String {
        let served = try openssl(["s_client", "-connect", "127.0.0.1:\(port)", "-CAfile", cert("ca"),
                                  "-cert", cert("client"), "-key", key("client")], allowFailure: true)
        guard let begin = served.range(of: "-----BEGIN CERTIFICATE-----"),
              let end = served.range(of: "-----END CERTIFICATE-----") else { return "" }
        let file = path("served-\(UUID().uuidString).pem")
        try String(served[begin.lowerBound..<end.upperBound]).write(toFile: file, atomically: true, encoding: .utf8)
        return try serial(of: file)
    }

    /// Runs openssl (stdin empty); throws with its stderr when it fails.
    @discardableResult
    func openssl(_ arguments: [String], allowFailure: Bool = false) throws -> String {
        let result = try EtcdProcess.run("/usr/bin/openssl", arguments, environment: [:], input: "")
        if result.status != 0 && !allowFailure {
            throw EtcdProcess.ProcessError.timedOut(["openssl \(arguments.joined(separator: " ")): \(result.err)"])
        }
        return result.out + result.err
    }
}
