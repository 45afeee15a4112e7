import Foundation
import Testing

@testable import Auth

/// JWT tokens with keys `openssl` makes, as an operator would.
@Suite struct JWTTokensTests {
    /// Writes a key pair for `method` (PEM files) into `dir`; returns (public, private) paths.
    static func makeKeys(_ method: String, in dir: String, name: String = "key") throws -> (String, String) {
        let privatePath = dir + "/\(name).pem", publicPath = dir + "/\(name).pub.pem"
        let generate: [String]
        switch method.prefix(2) {
        case "RS", "PS": generate = ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", privatePath]
        case "ES":
            let curve = ["ES256": "P-256", "ES384": "P-384", "ES512": "P-521"][method]!
            generate = ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:\(curve)", "-out", privatePath]
        default: generate = ["genpkey", "-algorithm", "ED25519", "-out", privatePath]
        }
        try openssl(generate)
        try openssl(["pkey", "-in", privatePath, "-pubout", "-out", publicPath])
        return (publicPath, privatePath)
    }

    static func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "openssl \(arguments)")
    }

    @Test(arguments: ["RS256", "PS384", "ES256", "ES384", "EdDSA"])
    func signsAndChecksTokens(method: String) async throws {
        let dir = TemporaryDirectory()
        let (publicKey, privateKey) = try Self.makeKeys(method, in: dir.path)
        let tokens = try JWTTokens(options: JWTOptions(signMethod: method, publicKeyPath: publicKey, privateKeyPath: privateKey, ttl: .seconds(60)))
        try await tokens.prepare()
        let token = try await tokens.sign(username: "alice", revision: 7)
        #expect(token.split(separator: ".").count == 3)
        let claims = try #require(tokens.verify(token))
        #expect(claims.username == "alice" && claims.revision == 7)

        // A member with only the public key checks the same token, and cannot sign.
        let verifier = try JWTTokens(options: JWTOptions(signMethod: method, publicKeyPath: publicKey))
        try await verifier.prepare()
        #expect(verifier.verifyOnly)
        #expect(verifier.verify(token)?.username == "alice")
        await #expect(throws: AuthError.verifyOnly) { try await verifier.sign(username: "alice", revision: 7) }

        // Expired (the clock past its ttl), tampered with, or garbage: refused.
        #expect(verifier.verify(token, now: Date().addingTimeInterval(120)) == nil)
        var parts = token.split(separator: ".").map(String.init)
        parts[1] = Data(#"{"username":"root","revision":7,"exp":9999999999}"#.utf8).base64EncodedString()
            .replacingOccurrences(of: "=", with: "").replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        #expect(verifier.verify(parts.joined(separator: ".")) == nil)
        #expect(verifier.verify("abcdefghijklmnop.12") == nil)
        #expect(verifier.verify("") == nil)
    }

    @Test func aTokenSignedByAnotherKeyOrMethodIsRefused() async throws {
        let dir = TemporaryDirectory()
        let (publicKey, privateKey) = try Self.makeKeys("RS256", in: dir.path)
        let (_, otherPrivate) = try Self.makeKeys("RS256", in: dir.path, name: "other")
        let (_, ecPrivate) = try Self.makeKeys("ES256", in: dir.path, name: "ec")
        let ours = try JWTTokens(options: JWTOptions(signMethod: "RS256", publicKeyPath: publicKey, privateKeyPath: privateKey))
        try await ours.prepare()
        let other = try JWTTokens(options: JWTOptions(signMethod: "RS256", privateKeyPath: otherPrivate))
        let ec = try JWTTokens(options: JWTOptions(signMethod: "ES256", privateKeyPath: ecPrivate))
        #expect(ours.verify(try await other.sign(username: "root", revision: 1)) == nil)
        #expect(ours.verify(try await ec.sign(username: "root", revision: 1)) == nil)
        // The same key under PS256 is another method: refused too.
        let pss = try JWTTokens(options: JWTOptions(signMethod: "PS256", privateKeyPath: privateKey))
        #expect(ours.verify(try await pss.sign(username: "root", revision: 1)) == nil)
        #expect(ours.verify(try await ours.sign(username: "root", revision: 1)) != nil)
    }

    @Test func badKeySettingsRefuseTheStart() async throws {
        let dir = TemporaryDirectory()
        let (publicKey, privateKey) = try Self.makeKeys("ES256", in: dir.path)
        let (otherPublic, _) = try Self.makeKeys("ES256", in: dir.path, name: "other")
        #expect(throws: AuthError.missingKey) { try JWTTokens(options: JWTOptions(signMethod: "ES256")) }
        #expect(throws: AuthError.invalidAuthMethod) { try JWTTokens(options: JWTOptions(signMethod: "XS256", privateKeyPath: privateKey)) }
        #expect(throws: AuthError.invalidKey("open \(dir.path)/none.pem: no such file or directory")) {
            try JWTTokens(options: JWTOptions(signMethod: "ES256", privateKeyPath: dir.path + "/none.pem"))
        }
        // An EC key for an RSA method does not parse.
        #expect(throws: (any Error).self) { try JWTTokens(options: JWTOptions(signMethod: "RS256", privateKeyPath: privateKey)) }
        // A public key that is not the private key's: found when the keys are prepared.
        let mismatched = try JWTTokens(options: JWTOptions(signMethod: "ES256", publicKeyPath: otherPublic, privateKeyPath: privateKey))
        await #expect(throws: AuthError.keyMismatch) { try await mismatched.prepare() }
        let matched = try JWTTokens(options: JWTOptions(signMethod: "ES256", publicKeyPath: publicKey, privateKeyPath: privateKey))
        try await matched.prepare()
    }
}
