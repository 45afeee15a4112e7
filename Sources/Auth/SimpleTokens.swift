import Locks

/// etcd's simple tokens: opaque strings `<16 letters>.<raft index>` that
/// name a user. Every member assigns the same token when it applies the
/// Authenticate entry; a token lives `ttl` past its last use (each use
/// renews it), dies with the member (they are never persisted), when auth
/// is disabled, and when its user is deleted or changes password.
///
/// At most `maxTokens` live; assigning past that drops the token nearest to
/// expiry. Time is the caller's monotonic clock (a `Duration` since any
/// fixed origin), so the table is deterministic under simulation.
public final class SimpleTokens: Sendable {
    struct Entry: Sendable {
        var user: String
        var expires: Duration
    }

    public let ttl: Duration
    public let maxTokens: Int
    private let tokens = Mutex<[String: Entry]>([:])

    public static let prefixLength = 16
    static let letters = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)

    public init(ttl: Duration, maxTokens: Int) {
        self.ttl = ttl
        self.maxTokens = max(1, maxTokens)
    }

    /// A fresh random prefix (the proposer makes it; the index is added at apply).
    public static func makePrefix(using generator: inout some RandomNumberGenerator) -> String {
        String(decoding: (0..<prefixLength).map { _ in letters.randomElement(using: &generator)! }, as: UTF8.self)
    }

    /// The token for `prefix` applied at raft `index`.
    public static func token(prefix: String, index: UInt64) -> String { "\(prefix).\(index)" }

    /// Whether `token` has the simple-token shape (etcd refuses others outright).
    public static func isWellFormed(_ token: String) -> Bool {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 2 && UInt64(parts[1]) != nil
    }

    public func assign(_ token: String, to user: String, now: Duration) {
        tokens.withLock { tokens in
            tokens = tokens.filter { $0.value.expires > now }
            if tokens.count >= maxTokens, let oldest = tokens.min(by: { $0.value.expires < $1.value.expires }) {
                tokens[oldest.key] = nil
            }
            tokens[token] = Entry(user: user, expires: now + ttl)
        }
    }

    /// The user `token` names, renewing it; nil when unknown or expired.
    public func user(for token: String, now: Duration) -> String? {
        tokens.withLock { tokens in
            guard var entry = tokens[token] else { return nil }
            guard entry.expires > now else {
                tokens[token] = nil
                return nil
            }
            entry.expires = now + ttl
            tokens[token] = entry
            return entry.user
        }
    }

    /// Drops every token of `user` (deleted, or its password changed).
    public func invalidate(user: String) {
        tokens.withLock { tokens in tokens = tokens.filter { $0.value.user != user } }
    }

    /// Drops every token (auth disabled).
    public func removeAll() {
        tokens.withLock { $0.removeAll() }
    }

    public var count: Int { tokens.withLock { $0.count } }
}
