import Foundation
import Testing

@testable import Auth

@Suite struct SimpleTokensTests {
    @Test func aTokenLivesItsTTLPastItsLastUse() {
        let tokens = SimpleTokens(ttl: .seconds(10), maxTokens: 10)
        tokens.assign("abc.1", to: "u", now: .seconds(0))
        #expect(tokens.user(for: "abc.1", now: .seconds(9)) == "u")
        // The use at 9 s renewed it until 19 s.
        #expect(tokens.user(for: "abc.1", now: .seconds(18)) == "u")
        #expect(tokens.user(for: "abc.1", now: .seconds(29)) == nil)
        #expect(tokens.count == 0)
    }

    @Test func tokensDieWithTheirUserAndWithDisable() {
        let tokens = SimpleTokens(ttl: .seconds(10), maxTokens: 10)
        tokens.assign("a.1", to: "u", now: .zero)
        tokens.assign("b.2", to: "v", now: .zero)
        tokens.invalidate(user: "u")
        #expect(tokens.user(for: "a.1", now: .zero) == nil)
        #expect(tokens.user(for: "b.2", now: .zero) == "v")
        tokens.removeAll()
        #expect(tokens.user(for: "b.2", now: .zero) == nil)
    }

    @Test func theTableIsBounded() {
        let tokens = SimpleTokens(ttl: .seconds(100), maxTokens: 3)
        for i in 0..<10 { tokens.assign("t.\(i)", to: "u", now: .seconds(Double(i))) }
        #expect(tokens.count == 3)
        // The newest stay; the ones nearest to expiry went first.
        #expect(tokens.user(for: "t.9", now: .seconds(10)) == "u")
        #expect(tokens.user(for: "t.0", now: .seconds(10)) == nil)
    }

    @Test func prefixesAndShapes() {
        var generator = SystemRandomNumberGenerator()
        let prefix = SimpleTokens.makePrefix(using: &generator)
        #expect(prefix.count == 16)
        #expect(prefix.allSatisfy { $0.isLetter && $0.isASCII })
        #expect(SimpleTokens.isWellFormed(SimpleTokens.token(prefix: prefix, index: 42)))
        #expect(!SimpleTokens.isWellFormed("nodot"))
        #expect(!SimpleTokens.isWellFormed("a.b"))
        #expect(!SimpleTokens.isWellFormed("a.1.2"))
    }
}

@Suite struct PasswordsTests {
    @Test func aHashMatchesItsPasswordOnly() {
        let hash = Passwords.hash("s3cret", cost: 4)
        #expect(String(decoding: hash, as: UTF8.self).hasPrefix("$2b$04$"))
        #expect(Passwords.matches("s3cret", hash: hash))
        #expect(!Passwords.matches("s3cret ", hash: hash))
        #expect(!Passwords.matches("", hash: Data()))
    }

    @Test func goBcryptHashesCompare() {
        // A $2a$ hash as Go's golang.org/x/crypto/bcrypt (etcd's) writes them
        // (openwall's crypt_blowfish test vector).
        let hash = Data("$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW".utf8)
        #expect(Passwords.matches("U*U", hash: hash))
        #expect(!Passwords.matches("U*V", hash: hash))
    }

    @Test func costsOutsideBcryptsRangeFallBackToTheDefault() {
        #expect(Passwords.effectiveCost(3) == 10)
        #expect(Passwords.effectiveCost(32) == 10)
        #expect(Passwords.effectiveCost(12) == 12)
    }
}
