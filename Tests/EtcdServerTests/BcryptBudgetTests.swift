import Auth
@testable import EtcdServer
import EtcdProto
import Foundation
import Testing

/// Authenticate's per-client bcrypt budget.
@Suite struct BcryptBudgetTests {
    @Test func aClientSpendsItsBudgetAndGetsItBackOverTime() throws {
        let budget = BcryptBudget()
        var now = Duration.seconds(100)
        // Comparisons of 0.5 s each: the 2 s budget admits four, then refuses.
        var admitted = 0
        for _ in 0..<10 {
            guard let ticket = try? budget.admit("10.0.0.1", now: now) else { break }
            budget.charge(ticket, seconds: 0.5, now: now)
            admitted += 1
        }
        #expect(admitted == 4)
        #expect(throws: EtcdError.tooManyRequests) { try budget.admit("10.0.0.1", now: now) }
        // Another address, and calls without one, are not affected.
        #expect(throws: Never.self) { try budget.admit("10.0.0.2", now: now) }
        #expect(throws: Never.self) { try budget.admit(nil, now: now) }
        // Refilled at half a second per second: one more after a second.
        now += .seconds(1)
        let ticket = try budget.admit("10.0.0.1", now: now)
        budget.charge(ticket, seconds: 0.5, now: now)
        #expect(throws: EtcdError.tooManyRequests) { try budget.admit("10.0.0.1", now: now) }
        now += .seconds(60)
        #expect(budget.balance("10.0.0.1", now: now) == BcryptBudget.capacity)
    }

    @Test func theTableOfClientsIsBounded() throws {
        let budget = BcryptBudget()
        let now = Duration.seconds(1)
        for i in 0..<(BcryptBudget.maxClients + 500) {
            let ticket = try budget.admit("c\(i)", now: now)
            budget.charge(ticket, seconds: 0.1, now: now)
        }
        // Every address got in, the first ones were forgotten (full budget again).
        #expect(budget.balance("c0", now: now) <= BcryptBudget.capacity)
        #expect(budget.balance("c\(BcryptBudget.maxClients + 499)", now: now) < BcryptBudget.capacity)
    }

    /// A member at bcrypt cost 10: one address flooding Authenticate with a
    /// wrong password runs out of budget ("too many requests"); another
    /// address still gets its real answer.
    @Test func aFloodingClientIsRefusedAndOthersAreNot() async throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = MemberAuthTests.config(dir)
        config.bcryptCost = 10
        let member = try Member(config: config)
        try await MemberAuthTests.setUp(member)
        let refused = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<6 {
                group.addTask {
                    for _ in 0..<60 {
                        do {
                            _ = try await member.authenticate(MemberAuthTests.authenticate("alice", "wrong"), client: "10.0.0.1")
                        } catch let error as EtcdError where error == .tooManyRequests {
                            return true
                        } catch {}
                    }
                    return false
                }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(refused == 6, "every flooding task was refused in the end")
        await #expect(throws: EtcdError(AuthError.authFailed)) {
            try await member.authenticate(MemberAuthTests.authenticate("alice", "wrong"), client: "10.0.0.2")
        }
        #expect(try await member.authenticate(MemberAuthTests.authenticate("alice", "alicepw"), client: "10.0.0.2").token.isEmpty == false)
        await member.stopAndWait()
    }
}
