import Foundation
import JWTKit
import Locks

/// etcd's `--auth-token jwt,...` options: the signing method, the key files
/// and the tokens' lifetime (etcd's default five minutes).
public struct JWTOptions: Sendable, Equatable {
    public var signMethod: String
    public var publicKeyPath: String?
    public var privateKeyPath: String?
    public var ttl: Duration

    public static let defaultTTL = Duration.seconds(300)
    /// The option names etcd knows; others are ignored with a warning.
    public static let knownOptions: Set<String> = ["sign-method", "pub-key", "priv-key", "ttl"]
    public static let methods: Set<String> = [
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512",
    ]

    public init(signMethod: String, publicKeyPath: String? = nil, privateKeyPath: String? = nil, ttl: Duration = defaultTTL) {
        self.signMethod = signMethod
        self.publicKeyPath = publicKeyPath
        self.privateKeyPath = privateKeyPath
        self.ttl = ttl
    }
}

/// JWT auth tokens as etcd makes them: claims `username`, `revision` (the
/// auth store's revision when the token was made) and `exp`, signed with
/// the configured method and key. Signing and checking are jwt-kit's; the
/// keys are read and checked when the member starts (a missing, unreadable
/// or mismatched key refuses the start, as in etcd). With only a public
/// key the member checks tokens other members signed and refuses to sign
/// ("auth: token signing attempted with verify-only key").
///
/// A token names its user at its revision: once the auth store changes,
/// its requests fail with "revision of auth store is old" and the client
/// authenticates again, as with etcd. Verified tokens are remembered (at
/// most `cacheLimit`) until they expire, so a request costs one signature
/// check per token, not per call.
public final class JWTTokens: Sendable {
    public let options: JWTOptions
    public let verifyOnly: Bool
    private let keys = JWTKeyCollection()
    private let addKey: KeyAdder
    /// The verifying algorithm, fetched from `keys` once (`prepare()`).
    private let algorithm = Mutex<(any JWTAlgorithm)?>(nil)
    private let verified = Mutex<[String: Claims]>([:])
    static let cacheLimit = 4096

    struct Claims: JWTPayload, Equatable {
        var username: String
        var revision: UInt64
        var exp: ExpirationClaim

        func verify(using algorithm: some JWTAlgorithm) async throws {
            try exp.verifyNotExpired()
        }
    }

    /// Reads and checks the keys (errors carry etcd's messages).
    public init(options: JWTOptions) throws(AuthError) {
        self.options = options
        guard JWTOptions.methods.contains(options.signMethod) else { throw .invalidAuthMethod }
        let publicPEM = try Self.read(options.publicKeyPath)
        let privatePEM = try Self.read(options.privateKeyPath)
        do {
            addKey = try Self.keyAdder(options.signMethod, publicPEM: publicPEM, privatePEM: privatePEM)
        } catch let error as AuthError {
            throw error
        } catch {
            throw .invalidKey("\(error)")
        }
        verifyOnly = privatePEM == nil
    }

    /// Fetches the verifying algorithm; until then no token checks out.
    /// Also checks that a given public and private key belong together.
    public func prepare() async throws(AuthError) {
        guard algorithm.withLock({ $0 == nil }) else { return }
        do {
            await addKey(keys)
            let found = try await keys.getKey()
            if !verifyOnly, let publicPEM = try Self.read(options.publicKeyPath) {
                let publicOnly = JWTKeyCollection()
                try await Self.keyAdder(options.signMethod, publicPEM: publicPEM, privatePEM: nil)(publicOnly)
                let probe = Array("etcd key pair check".utf8)
                guard try await publicOnly.getKey().verify(found.sign(probe), signs: probe) else { throw AuthError.keyMismatch }
            }
            algorithm.withLock { $0 = found }
        } catch let error as AuthError {
            throw error
        } catch {
            throw .invalidKey("\(error)")
        }
    }

    /// A token for `username` at auth revision `revision`, valid for the ttl.
    public func sign(username: String, revision: UInt64, now: Date = Date()) async throws(AuthError) -> String {
        guard !verifyOnly else { throw .verifyOnly }
        try await prepare()
        let claims = Claims(username: username, revision: revision, exp: ExpirationClaim(value: now + Double(options.ttl.components.seconds)))
        let token: String
        do { token = try await keys.sign(claims) } catch { throw .invalidKey("\(error)") }
        remember(token, claims)
        return token
    }

    /// The user and revision a token names, when its signature (with the
    /// configured method) checks out and it has not expired; nil otherwise.
    public func verify(_ token: String, now: Date = Date()) -> (username: String, revision: UInt64)? {
        if let known = verified.withLock({ $0[token] }) {
            guard known.exp.value > now else {
                verified.withLock { $0[token] = nil }
                return nil
            }
            return (known.username, known.revision)
        }
        guard let algorithm = algorithm.withLock({ $0 }) else { return nil }
        let bytes = Array(token.utf8)
        guard let parsed = try? DefaultJWTParser().parse(bytes, as: Claims.self),
              parsed.header.alg == options.signMethod,
              let lastDot = bytes.lastIndex(of: UInt8(ascii: ".")),
              (try? algorithm.verify(parsed.signature, signs: bytes[..<lastDot])) == true,
              parsed.payload.exp.value > now else { return nil }
        remember(token, parsed.payload)
        return (parsed.payload.username, parsed.payload.revision)
    }

    private func remember(_ token: String, _ claims: Claims) {
        verified.withLock { cache in
            if cache.count >= Self.cacheLimit { cache.removeAll(keepingCapacity: true) }
            cache[token] = claims
        }
    }

    // MARK: - Keys

    private static func read(_ path: String?) throws(AuthError) -> String? {
        guard let path, !path.isEmpty else { return nil }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .invalidKey("open \(path): no such file or directory")
        }
        return String(decoding: data, as: UTF8.self)
    }

    typealias KeyAdder = @Sendable (JWTKeyCollection) async -> Void

    /// Parses the key for `method` (the private key when given: it signs
    /// and checks; else the public one: checks only) into what adds it to
    /// a key collection.
    private static func keyAdder(_ method: String, publicPEM: String?, privatePEM: String?) throws -> KeyAdder {
        guard publicPEM != nil || privatePEM != nil else { throw AuthError.missingKey }
        let digest: DigestAlgorithm = method.hasSuffix("384") ? .sha384 : method.hasSuffix("512") ? .sha512 : .sha256
        switch method.prefix(2) {
        case "RS", "PS":
            let pss = method.hasPrefix("PS")
            if let privatePEM {
                let key = try Insecure.RSA.PrivateKey(pem: privatePEM)
                return { keys in
                    if pss { await keys.add(pss: key, digestAlgorithm: digest) } else { await keys.add(rsa: key, digestAlgorithm: digest) }
                }
            }
            let key = try Insecure.RSA.PublicKey(pem: publicPEM!)
            return { keys in
                if pss { await keys.add(pss: key, digestAlgorithm: digest) } else { await keys.add(rsa: key, digestAlgorithm: digest) }
            }
        case "ES":
            switch method {
            case "ES256":
                let key: any ECDSAKey = try privatePEM.map { try ES256PrivateKey(pem: $0) } ?? ES256PublicKey(pem: publicPEM!)
                return { await $0.add(ecdsa: key) }
            case "ES384":
                let key: any ECDSAKey = try privatePEM.map { try ES384PrivateKey(pem: $0) } ?? ES384PublicKey(pem: publicPEM!)
                return { await $0.add(ecdsa: key) }
            default:
                let key: any ECDSAKey = try privatePEM.map { try ES512PrivateKey(pem: $0) } ?? ES512PublicKey(pem: publicPEM!)
                return { await $0.add(ecdsa: key) }
            }
        case "Ed":
            let key: any EdDSAKey = try privatePEM.map { try EdDSA.PrivateKey(pem: $0) } ?? EdDSA.PublicKey(pem: publicPEM!)
            return { await $0.add(eddsa: key) }
        default:
            // HMAC: the "private key" file holds the shared secret, as in etcd.
            guard let secret = privatePEM else { throw AuthError.missingKey }
            return { await $0.add(hmac: HMACKey(from: Array(secret.utf8)), digestAlgorithm: digest) }
        }
    }
}
