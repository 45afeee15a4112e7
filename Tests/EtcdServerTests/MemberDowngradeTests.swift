@testable import EtcdServer
import EtcdProto
import Foundation
import Testing

/// Maintenance.Downgrade with etcd 3.6's semantics and errors.
@Suite struct MemberDowngradeTests {
    static func request(_ action: Etcdserverpb_DowngradeRequest.DowngradeAction, _ version: String = "") -> Etcdserverpb_DowngradeRequest {
        var request = Etcdserverpb_DowngradeRequest()
        request.action = action
        request.version = version
        return request
    }

    static func waitForClusterVersion(_ member: Member, _ version: String) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while member.clusterVersion != version {
            try #require(ContinuousClock.now < deadline, "cluster version \(member.clusterVersion), waiting for \(version)")
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    @Test func validateEnableAndCancelAsEtcd36() async throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = ServerConfig(name: "m1", dataDir: dir)
        // The version monitor stays away until the restart below.
        config.downgradeCheckTimeMilliseconds = 3_600_000
        var member = try Member(config: config)
        #expect(member.clusterVersion == "3.6.0")

        #expect(try await member.downgrade(Self.request(.validate, "3.5")).version == "3.6")
        #expect(try await member.downgrade(Self.request(.validate, "3.5.2")).version == "3.6")
        await #expect(throws: EtcdError.invalidDowngradeTargetVersion) { try await member.downgrade(Self.request(.validate, "3.4")) }
        await #expect(throws: EtcdError.invalidDowngradeTargetVersion) { try await member.downgrade(Self.request(.validate, "3.6")) }
        await #expect(throws: EtcdError.wrongDowngradeVersionFormat) { try await member.downgrade(Self.request(.validate, "three")) }
        await #expect(throws: EtcdError.wrongDowngradeVersionFormat) { try await member.downgrade(Self.request(.enable, "")) }
        await #expect(throws: EtcdError.noInflightDowngrade) { try await member.downgrade(Self.request(.cancel)) }
        #expect(!member.downgradeInfo().enabled)

        // Enabled: the job is recorded and a second one is refused.
        #expect(try await member.downgrade(Self.request(.enable, "3.5")).version == "3.6")
        #expect(member.downgradeInfo().enabled && member.downgradeInfo().targetVersion == "3.5.0")
        await #expect(throws: EtcdError.downgradeInProcess) { try await member.downgrade(Self.request(.validate, "3.5")) }

        // The job survives a restart; the leader's monitor then lowers the
        // cluster version to the target (after which 3.5 is no longer the
        // allowed target, and etcd checks that first).
        await member.stopAndWait()
        config.downgradeCheckTimeMilliseconds = 50
        member = try Member(config: config)
        defer { member.stop() }
        #expect(member.downgradeInfo().enabled)
        try await Self.waitForClusterVersion(member, "3.5.0")
        await #expect(throws: EtcdError.invalidDowngradeTargetVersion) { try await member.downgrade(Self.request(.validate, "3.5")) }
        // The lowered version survives a restart too; the monitor stays
        // away while the cancel answers with it.
        await member.stopAndWait()
        config.downgradeCheckTimeMilliseconds = 3_600_000
        member = try Member(config: config)
        #expect(member.clusterVersion == "3.5.0")
        #expect(try await member.downgrade(Self.request(.cancel)).version == "3.5")
        #expect(!member.downgradeInfo().enabled)

        // Cancelled: the monitor raises the version back to ours.
        await member.stopAndWait()
        config.downgradeCheckTimeMilliseconds = 50
        member = try Member(config: config)
        try await Self.waitForClusterVersion(member, "3.6.0")
        #expect(try await member.downgrade(Self.request(.validate, "3.5")).version == "3.6")
    }
}
