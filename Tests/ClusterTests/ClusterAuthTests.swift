import Auth
import EtcdProto
@testable import EtcdServer
import Foundation
import Testing

/// Auth across members: changes applied everywhere, a member far behind
/// gets the auth store with the snapshot, every member enforces the same
/// permissions and knows the tokens any member handed out.
@Suite struct ClusterAuthTests {
    static func put(_ member: Member, _ key: String, as info: AuthInfo?) async throws -> Etcdserverpb_PutResponse {
        try await withCheckedThrowingContinuation { continuation in
            member.put(putRequest(key, "v"), as: info) { continuation.resume(with: $0) }
        }
    }

    static func authenticate(_ member: Member, _ name: String, _ password: String) async throws -> String {
        var request = Etcdserverpb_AuthenticateRequest()
        request.name = name
        request.password = password
        return try await member.authenticate(request).token
    }

    @Test func aLaggingMemberGetsTheAuthStoreThroughASnapshotAndEveryMemberEnforcesIt() async throws {
        try await TestCluster.with(size: 3, configure: { config in
            config.snapshotCount = 50
            config.snapshotCatchUpEntries = 10
            config.bcryptCost = 4
        }) { cluster in
            var leader = try await cluster.waitForLeader()
            let lagging = (leader + 1) % 3
            await cluster.stopMember(lagging)
            leader = try await cluster.waitForLeader()
            let writer = try #require(cluster.members[leader])

            try await cluster.retrying {
                var add = Etcdserverpb_AuthUserAddRequest()
                add.name = "root"
                add.password = "rootpw"
                _ = try await writer.userAdd(add, as: nil)
            }
            var grantRoot = Etcdserverpb_AuthUserGrantRoleRequest()
            grantRoot.user = "root"
            grantRoot.role = "root"
            _ = try await cluster.retrying { try await writer.userGrantRole(grantRoot, as: nil) }
            var role = Etcdserverpb_AuthRoleAddRequest()
            role.name = "writer"
            _ = try await cluster.retrying { try await writer.roleAdd(role, as: nil) }
            var grant = Etcdserverpb_AuthRoleGrantPermissionRequest()
            grant.name = "writer"
            grant.perm.permType = .readwrite
            grant.perm.key = Data("k".utf8)
            grant.perm.rangeEnd = Data("l".utf8)
            _ = try await cluster.retrying { try await writer.roleGrantPermission(grant, as: nil) }
            var alice = Etcdserverpb_AuthUserAddRequest()
            alice.name = "alice"
            alice.password = "alicepw"
            _ = try await cluster.retrying { try await writer.userAdd(alice, as: nil) }
            var grantAlice = Etcdserverpb_AuthUserGrantRoleRequest()
            grantAlice.user = "alice"
            grantAlice.role = "writer"
            _ = try await cluster.retrying { try await writer.userGrantRole(grantAlice, as: nil) }
            _ = try await cluster.retrying { try await writer.authEnable(as: nil) }

            let rootToken = try await cluster.retrying { try await Self.authenticate(writer, "root", "rootpw") }
            let root = try writer.authInfo(token: rootToken, commonName: nil)
            // Enough entries that the lagging member can only catch up from a snapshot.
            for i in 0..<300 { _ = try await cluster.retrying { try await Self.put(writer, "s\(i)", as: root) } }

            try await cluster.startMember(lagging)
            _ = try await cluster.converged(timeout: .seconds(30))
            let caughtUp = try #require(cluster.members[lagging])
            let snapFiles = try FileManager.default.contentsOfDirectory(atPath: cluster.configs[lagging].snapDir)
            #expect(snapFiles.contains { $0.hasSuffix(".snap") })
            #expect(caughtUp.auth.isEnabled)
            #expect(caughtUp.auth.userNames() == ["alice", "root"])
            #expect(caughtUp.auth.revision == writer.auth.revision)

            // A token handed out by the caught-up member works everywhere once applied.
            let aliceToken = try await cluster.retrying { try await Self.authenticate(caughtUp, "alice", "alicepw") }
            _ = try await cluster.converged(timeout: .seconds(30))
            for member in cluster.running {
                let info = try member.authInfo(token: aliceToken, commonName: nil)
                #expect(info?.username == "alice")
                _ = try await cluster.retrying { try await Self.put(member, "k-\(member.memberID)", as: info) }
                await #expect(throws: EtcdError(AuthError.permissionDenied)) { try await Self.put(member, "x", as: info) }
                await #expect(throws: EtcdError(AuthError.userEmpty)) { try await Self.put(member, "k1", as: nil) }
            }

            // And it all survives the lagging member's restart.
            await cluster.stopMember(lagging)
            try await cluster.startMember(lagging)
            let restarted = try #require(cluster.members[lagging])
            #expect(restarted.auth.isEnabled)
            #expect(restarted.auth.role("writer")?.keyPermission.count == 1)
            #expect(throws: EtcdError(AuthError.invalidToken)) { try restarted.authInfo(token: aliceToken, commonName: nil) }
        }
    }
}
