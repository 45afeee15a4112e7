@testable import EtcdServer
import EtcdProto
import Foundation
import Locks
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

        // The member raised NOSPACE through raft (a GET, also through raft,
        // comes after it); disarmed while still over quota, the next put
        // that grows the store raises it again.
        #expect(try await Self.alarms(member) == [Self.noSpace(member)])
        _ = try await member.alarm(Self.alarmRequest(.deactivate, member))
        #expect(try await Self.alarms(member).isEmpty)
        await #expect(throws: EtcdError.noSpace) { try await member.put(MemberTests.put("again", value)) }
        #expect(try await Self.alarms(member) == [Self.noSpace(member)])
    }

    /// A raised NOSPACE alarm makes every member's apply refuse what grows
    /// the store (even when this member's own check would pass), survives
    /// a restart, and lets writes through once disarmed.
    @Test func aNoSpaceAlarmCapsWritesUntilDisarmed() async throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = ServerConfig(name: "m1", dataDir: dir)
        var member = try Member(config: config)
        _ = try await member.put(MemberTests.put("before", "v"))
        let raised = try await member.alarm(Self.alarmRequest(.activate, member))
        #expect(raised.alarms == [Self.noSpace(member)])
        await #expect(throws: EtcdError.noSpace) { try await member.put(MemberTests.put("small", "v")) }
        var grant = Etcdserverpb_LeaseGrantRequest()
        grant.ttl = 60
        await #expect(throws: EtcdError.noSpace) { try await member.leaseGrant(grant) }
        var readOnly = Etcdserverpb_TxnRequest()
        var read = Etcdserverpb_RequestOp()
        read.requestRange = MemberTests.get("before")
        readOnly.success = [read]
        var deleting = Etcdserverpb_TxnRequest()
        var delete = Etcdserverpb_RequestOp()
        delete.requestDeleteRange.key = Data("before".utf8)
        deleting.success = [delete]
        #expect(try await member.txn(deleting).succeeded)
        member.stop()

        member = try Member(config: config)
        defer { member.stop() }
        #expect(try await Self.alarms(member) == [Self.noSpace(member)])
        await #expect(throws: EtcdError.noSpace) { try await member.put(MemberTests.put("small", "v")) }
        _ = try await member.alarm(Self.alarmRequest(.deactivate, member))
        _ = try await member.put(MemberTests.put("small", "v"))
        #expect(try await member.range(MemberTests.get("small")).kvs.count == 1)
    }

    static func alarmRequest(_ action: Etcdserverpb_AlarmRequest.AlarmAction, _ member: Member) -> Etcdserverpb_AlarmRequest {
        var request = Etcdserverpb_AlarmRequest()
        request.action = action
        request.memberID = member.memberID
        request.alarm = .nospace
        return request
    }

    static func noSpace(_ member: Member) -> Etcdserverpb_AlarmMember {
        var alarm = Etcdserverpb_AlarmMember()
        alarm.memberID = member.memberID
        alarm.alarm = .nospace
        return alarm
    }

    static func alarms(_ member: Member) async throws -> [Etcdserverpb_AlarmMember] {
        var get = Etcdserverpb_AlarmRequest()
        get.action = .get
        return try await member.alarm(get).alarms
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

/// --max-learners: etcd's limit on learners at once (default 1).
@Suite struct MaxLearnersTests {
    @Test(arguments: [1, 2])
    func aLearnerPastTheLimitIsRefused(maxLearners: Int) async throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try ServerConfig(settings: [.name: "m1", .dataDir: dir, .maxLearners: String(maxLearners)])
        #expect(config.maxLearners == maxLearners)
        let member = try Member(config: config)
        defer { member.stop() }
        // A learner never counts towards the quorum, so a one-member cluster commits its addition.
        _ = try await member.memberAdd(peerURLs: ["http://127.0.0.1:1"], isLearner: true)
        if maxLearners == 1 {
            #expect(throws: EtcdError.tooManyLearners) { _ = try member.memberAddChange(peerURLs: ["http://127.0.0.1:2"], isLearner: true) }
        } else {
            _ = try member.memberAddChange(peerURLs: ["http://127.0.0.1:2"], isLearner: true)
        }
        #expect(throws: SettingsError.self) { try ServerConfig(settings: [.maxLearners: "0"]) }
    }

    /// The backend's map is reserved at its limit when the member opens, so
    /// no write ever has to grow it — growing waits for every read
    /// transaction, and a snapshot being copied holds one for its whole copy.
    @Test func theBackendMapIsReservedAtItsLimit() async throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = ServerConfig(name: "m1", dataDir: dir)
        config.quotaBackendBytes = 3 << 30
        let member = try Member(config: config)
        #expect(member.backend.mapSize == Bootstrap.backendLimitBytes(quotaBytes: 3 << 30))
        await member.stopAndWait()
    }
}
