import SwiftASN1

/// The serial numbers an X.509 certificate revocation list (RFC 5280 §5)
/// revokes, read as etcd reads `--client-crl-file` / `--peer-crl-file`: the
/// list's entries only (etcd checks neither its signature nor its dates).
/// PEM (`-----BEGIN X509 CRL-----`) or DER.
public struct RevocationList: Sendable, Equatable {
    /// Serial numbers without leading zero bytes (as Go's big.Int.Bytes()).
    public let revokedSerials: Set<[UInt8]>

    public init(revokedSerials: Set<[UInt8]>) {
        self.revokedSerials = revokedSerials
    }

    public init(fileBytes: [UInt8]) throws(TLSSetupError) {
        var der = fileBytes
        if let text = String(validating: fileBytes, as: UTF8.self), text.contains("-----BEGIN") {
            do { der = try PEMDocument(pemString: text).derBytes } catch {
                throw TLSSetupError("x509: malformed crl (\(error))")
            }
        }
        do { self.init(revokedSerials: try Self.parse(der)) } catch let error as TLSSetupError { throw error } catch {
            throw TLSSetupError("x509: malformed crl (\(error))")
        }
    }

    public func isRevoked(serial: some Collection<UInt8>) -> Bool {
        revokedSerials.contains(Self.normalized(serial))
    }

    static func normalized(_ serial: some Collection<UInt8>) -> [UInt8] {
        Array(serial.drop(while: { $0 == 0 }))
    }

    /// CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm, signature }
    /// TBSCertList ::= SEQUENCE { version INTEGER OPTIONAL, signature AlgorithmIdentifier,
    ///   issuer Name, thisUpdate Time, nextUpdate Time OPTIONAL,
    ///   revokedCertificates SEQUENCE OF SEQUENCE { userCertificate INTEGER, revocationDate Time,
    ///   crlEntryExtensions OPTIONAL } OPTIONAL, crlExtensions [0] EXPLICIT OPTIONAL }
    static func parse(_ der: [UInt8]) throws -> Set<[UInt8]> {
        let root = try DER.parse(der)
        guard root.identifier == .sequence, case .constructed(let top) = root.content,
              let tbs = top.first(where: { _ in true }), tbs.identifier == .sequence,
              case .constructed(let fields) = tbs.content
        else { throw TLSSetupError("x509: malformed crl (not a CertificateList)") }
        // After the optional version come two SEQUENCEs (algorithm, issuer)
        // and one or two times; the revoked list is the next SEQUENCE, if any.
        var sequencesSeen = 0
        var serials: Set<[UInt8]> = []
        for field in fields {
            guard field.identifier == .sequence else { continue }
            sequencesSeen += 1
            guard sequencesSeen == 3 else { continue }
            guard case .constructed(let entries) = field.content else { break }
            for entry in entries {
                guard entry.identifier == .sequence, case .constructed(let parts) = entry.content,
                      let serial = parts.first(where: { _ in true }), serial.identifier == .integer,
                      case .primitive(let bytes) = serial.content
                else { throw TLSSetupError("x509: malformed crl (bad revoked certificate entry)") }
                serials.insert(normalized(bytes))
            }
        }
        return serials
    }
}
