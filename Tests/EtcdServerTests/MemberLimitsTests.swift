@testable import EtcdServer
import EtcdProto
import Foundation
import Synchronization
import Testing

/// The member's limits answer with etcd's errors and never stop it: the
/// space quota, --max-txn-ops, the proposal queue.
@Suite struct MemberLimitsTests {
    /// A full store refuses growth with etcd's error and keeps serving
    /// reads and deletes (it used to stop the member on a storage error).
    @Test func aFullStoreRefusesPutsAndKeepsServing() async throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = ServerConfig(name: "m1", dataDir: dir)
        config.quotaBackendBytes = 16 << 20
        let member = try Member(config: config)
        defer { member.stop() }
        let value = String(repeating: "x", count: 512 << 10)
        var written = 0
        var refusal: (any Error)?
        // 16 MiB of quota: at most ~32 such puts fit; 200 bound the loop.
        while written < 200 {
            do {
                _ = try await member.put(MemberTests.put("big\(written)", value))
                written += 1
            } catch {
                refusal = error
                break
            }
        }
        #expect(refusal as? EtcdError == EtcdError.noSpace)
        #expect(written >= 16 && written < 200)
        // Reads, deletes and small reads after them still work.
        #expect(try await member.range(MemberTests.get("big0")).kvs.count == 1)
        var delete = Etcdserverpb_DeleteRangeRequest()
        delete.key = Data("big0".utf8)
        #expect(try await member.deleteRange(delete).deleted == 1)
        #expect(try await member.range(MemberTests.get("big0")).kvs.isEmpty)
        await #expect(throws: EtcdError.noSpace) { try await member.put(MemberTests.put("more", value)) }
        #expect(try await member.range(MemberTests.get("big1")).kvs.count == 1)
    }

    /// --max-txn-ops above the default is honoured at apply too.
    @Test func aTxnUpToMaxTxnOpsIsApplied() async throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = ServerConfig(name: "m1", dataDir: dir)
        config.maxTxnOps = 200
        let member = try Member(config: config)
        defer { member.stop() }
        var txn = Etcdserverpb_TxnRequest()
        txn.success = (0..<200).map { i in
            var op = Etcdserverpb_RequestOp()
            op.requestPut = MemberTests.put("t\(i)", "v")
            return op
        }
        _ = try await member.txn(txn)
        var all = MemberTests.get("t")
        all.rangeEnd = Data("u".utf8)
        #expect(try await member.range(all).count == 200)
        txn.success.append(txn.success[0])
        await #expect(throws: EtcdError.tooManyOps) { _ = try await member.txn(txn) }
    }

    /// A full proposal queue answers etcd's `too many requests`.
    @Test func aFullProposalQueueAnswersTooManyRequests() throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var environment = MemberEnvironment()
        environment.manualLoop = true
        let member = try Member(config: ServerConfig(name: "m1", dataDir: dir), environment: environment)
        defer { member.stop() }
        let refusals = Mutex<[EtcdError]>([])
        // Nobody drives the loop, so every proposal waits in the queue.
        for i in 0...Mailbox.maxQueuedProposals {
            member.put(MemberTests.put("q\(i)", "v")) { result in
                if case .failure(let error as EtcdError) = result { refusals.withLock { $0.append(error) } }
            }
        }
        #expect(refusals.withLock { $0 } == [EtcdError.tooManyRequests])
        #expect(EtcdError.tooManyRequests.code == .resourceExhausted)
    }
}
