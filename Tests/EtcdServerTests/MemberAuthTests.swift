import Auth
@testable import EtcdServer
import EtcdProto
import Foundation
import Locks
import Testing

/// Authentication and RBAC on a real member: the Auth service's changes go
/// through raft and persist, Authenticate hands out simple tokens that die
/// with the process, and every member's apply re-checks a write at the auth
/// revision it was checked at.
@Suite struct MemberAuthTests {
    static func config(_ dir: String) -> ServerConfig {
        var config = ServerConfig(name: "m1", dataDir: dir)
        config.bcryptCost = 4
        return config
    }

    static func userAdd(_ name: String, _ password: String) -> Etcdserverpb_AuthUserAddRequest {
        var request = Etcdserverpb_AuthUserAddRequest()
        request.name = name
        request.password = password
        return request
    }

    static func grant(_ role: String, _ type: Authpb_Permission.TypeEnum, _ key: String, _ rangeEnd: String = "") -> Etcdserverpb_AuthRoleGrantPermissionRequest {
        var request = Etcdserverpb_AuthRoleGrantPermissionRequest()
        request.name = role
        request.perm.permType = type
        request.perm.key = Data(key.utf8)
        request.perm.rangeEnd = Data(rangeEnd.utf8)
        return request
    }

    static func grantRole(_ user: String, _ role: String) -> Etcdserverpb_AuthUserGrantRoleRequest {
        var request = Etcdserverpb_AuthUserGrantRoleRequest()
        request.user = user
        request.role = role
        return request
    }

    static func authenticate(_ name: String, _ password: String) -> Etcdserverpb_AuthenticateRequest {
        var request = Etcdserverpb_AuthenticateRequest()
        request.name = name
        request.password = password
        return request
    }

    /// root (rootpw) with the root role; alice (alicepw) reading and writing
    /// `k*` through role rw; auth enabled.
    static func setUp(_ member: Member) async throws {
        _ = try await member.userAdd(userAdd("root", "rootpw"), as: nil)
        _ = try await member.userGrantRole(grantRole("root", "root"), as: nil)
        var role = Etcdserverpb_AuthRoleAddRequest()
        role.name = "rw"
        _ = try await member.roleAdd(role, as: nil)
        _ = try await member.roleGrantPermission(grant("rw", .readwrite, "k", "l"), as: nil)
        _ = try await member.userAdd(userAdd("alice", "alicepw"), as: nil)
        _ = try await member.userGrantRole(grantRole("alice", "rw"), as: nil)
        _ = try await member.authEnable(as: nil)
    }

    static func put(_ member: Member, _ key: String, as info: AuthInfo?) async throws -> Etcdserverpb_PutResponse {
        try await withCheckedThrowingContinuation { continuation in
            member.put(MemberTests.put(key, "v"), as: info) { continuation.resume(with: $0) }
        }
    }

    @Test func authenticateEnforceAndSurviveARestart() async throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var member = try Member(config: Self.config(dir))
        try await Self.setUp(member)

        await #expect(throws: EtcdError(AuthError.authFailed)) { try await member.authenticate(Self.authenticate("alice", "wrong")) }
        await #expect(throws: EtcdError(AuthError.authFailed)) { try await member.authenticate(Self.authenticate("ghost", "x")) }
        let token = try await member.authenticate(Self.authenticate("alice", "alicepw")).token
        #expect(SimpleTokens.isWellFormed(token))
        let alice = try #require(try member.authInfo(token: token, commonName: nil))
        #expect(alice.username == "alice")
        #expect(throws: EtcdError(AuthError.invalidToken)) { try member.authInfo(token: "bogus.1", commonName: nil) }
        // No identity at all: nothing checked asks for a user.
        #expect(try member.authInfo(token: nil, commonName: nil) == nil)

        _ = try await Self.put(member, "k1", as: alice)
        await #expect(throws: EtcdError(AuthError.permissionDenied)) { try await Self.put(member, "x", as: alice) }
        await #expect(throws: EtcdError(AuthError.userEmpty)) { try await Self.put(member, "k1", as: nil) }
        #expect(throws: EtcdError(AuthError.permissionDenied)) { try member.authorizeAdmin(alice) }
        await #expect(throws: EtcdError(AuthError.permissionDenied)) { try await member.userList(as: alice) }
        var range = Etcdserverpb_RangeRequest()
        range.key = Data("k".utf8)
        range.rangeEnd = Data("l".utf8)
        try member.authorize(range, as: alice)
        range.rangeEnd = Data("m".utf8)
        #expect(throws: EtcdError(AuthError.permissionDenied)) { try member.authorize(range, as: alice) }

        let status = try await member.authStatus()
        #expect(status.enabled)
        let revision = status.authRevision

        // Passwords are stored as bcrypt hashes and never enter the log in clear.
        let stored = try #require(member.auth.user("alice")).password
        #expect(String(decoding: stored, as: UTF8.self).hasPrefix("$2b$04$"))
        member.stop()
        let walBytes = try FileManager.default.subpathsOfDirectory(atPath: dir).compactMap {
            FileManager.default.contents(atPath: dir + "/" + $0)
        }
        #expect(!walBytes.isEmpty)
        #expect(!walBytes.contains { $0.range(of: Data("alicepw".utf8)) != nil })

        member = try Member(config: Self.config(dir))
        defer { member.stop() }
        let restarted = try await member.authStatus()
        #expect(restarted.enabled && restarted.authRevision == revision)
        // Tokens die with the process; the password still works.
        #expect(throws: EtcdError(AuthError.invalidToken)) { try member.authInfo(token: token, commonName: nil) }
        let rootToken = try await member.authenticate(Self.authenticate("root", "rootpw")).token
        let root = try member.authInfo(token: rootToken, commonName: nil)
        #expect(try await member.userList(as: root).users == ["alice", "root"])
        #expect(try await member.roleGet({ var r = Etcdserverpb_AuthRoleGetRequest(); r.role = "rw"; return r }(), as: root).perm.count == 1)

        // Deleting a user or changing a password ends its tokens.
        let aliceToken = try await member.authenticate(Self.authenticate("alice", "alicepw")).token
        var change = Etcdserverpb_AuthUserChangePasswordRequest()
        change.name = "alice"
        change.password = "new"
        _ = try await member.userChangePassword(change, as: root)
        #expect(throws: EtcdError(AuthError.invalidToken)) { try member.authInfo(token: aliceToken, commonName: nil) }
        await #expect(throws: EtcdError(AuthError.authFailed)) { try await member.authenticate(Self.authenticate("alice", "alicepw")) }
        _ = try await member.authenticate(Self.authenticate("alice", "new"))

        // Disabling drops every token and opens everything again.
        _ = try await member.authDisable(as: root)
        #expect(throws: EtcdError(AuthError.invalidToken)) { try member.authInfo(token: rootToken, commonName: nil) }
        _ = try await Self.put(member, "x", as: nil)
        await #expect(throws: EtcdError(AuthError.authNotEnabled)) { try await member.authenticate(Self.authenticate("root", "rootpw")) }
    }

    @Test func changesNeedRootOnceEnabled() async throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let member = try Member(config: Self.config(dir))
        defer { member.stop() }
        var enable = false
        do { _ = try await member.authEnable(as: nil) } catch let error as EtcdError { enable = error == EtcdError(AuthError.rootUserNotExist) }
        #expect(enable)
        try await Self.setUp(member)
        let alice = AuthInfo(username: "alice", revision: member.auth.revision)
        await #expect(throws: EtcdError(AuthError.permissionDenied)) { try await member.userAdd(Self.userAdd("eve", "x"), as: alice) }
        await #expect(throws: EtcdError(AuthError.userEmpty)) { try await member.userAdd(Self.userAdd("eve", "x"), as: nil) }
        await #expect(throws: EtcdError(AuthError.permissionDenied)) { try await member.authDisable(as: alice) }
        let root = AuthInfo(username: "root", revision: member.auth.revision)
        await #expect(throws: EtcdError(AuthError.invalidManagement)) {
            var delete = Etcdserverpb_AuthUserDeleteRequest()
            delete.name = "root"
            return try await member.userDelete(delete, as: root)
        }
        // A user may read itself, and a role it holds.
        var get = Etcdserverpb_AuthUserGetRequest()
        get.name = "alice"
        #expect(try await member.userGet(get, as: alice).roles == ["rw"])
        get.name = "root"
        await #expect(throws: EtcdError(AuthError.permissionDenied)) { try await member.userGet(get, as: alice) }
    }

    /// A write checked at the API before a permission change commits, and
    /// applied after it, fails on apply as etcd's does: the member's loop is
    /// driven by hand so both proposals are queued before either applies.
    @Test func aWriteCheckedBeforeAPermissionChangeIsStaleAtApply() throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var environment = MemberEnvironment()
        environment.manualLoop = true
        let member = try Member(config: Self.config(dir), environment: environment)
        defer { member.stop() }
        func settle() {
            var rounds = 0
            repeat {
                member.step()
                rounds += 1
            } while member.hasPendingInput && rounds < 1000
        }
        settle()
        let results = Mutex<[String: Result<ApplyResult, any Error>]>([:])
        func submit(_ name: String, _ request: Etcdserverpb_InternalRaftRequest, as info: AuthInfo?) {
            member.propose(ProposedRequest(request), auth: info, checking: {}, as: { $0 }) { result in
                results.withLock { $0[name] = result }
            }
        }
        func error(_ name: String) -> EtcdError? {
            guard case .failure(let error as EtcdError)? = results.withLock({ $0[name] }) else { return nil }
            return error
        }
        var setup: [Etcdserverpb_InternalRaftRequest] = []
        for name in ["root", "alice"] {
            var add = Etcdserverpb_InternalRaftRequest()
            add.authUserAdd.name = name
            add.authUserAdd.hashedPassword = String(decoding: Passwords.hash("pw", cost: 4), as: UTF8.self)
            setup.append(add)
        }
        var role = Etcdserverpb_InternalRaftRequest()
        role.authRoleAdd.name = "rw"
        var grant = Etcdserverpb_InternalRaftRequest()
        grant.authRoleGrantPermission = Self.grant("rw", .readwrite, "k")
        var grantRoot = Etcdserverpb_InternalRaftRequest()
        grantRoot.authUserGrantRole = Self.grantRole("root", "root")
        var grantAlice = Etcdserverpb_InternalRaftRequest()
        grantAlice.authUserGrantRole = Self.grantRole("alice", "rw")
        var enable = Etcdserverpb_InternalRaftRequest()
        enable.authEnable = Etcdserverpb_AuthEnableRequest()
        setup += [role, grant, grantRoot, grantAlice, enable]
        for (index, request) in setup.enumerated() {
            submit("setup\(index)", request, as: nil)
            settle()
            #expect(error("setup\(index)") == nil)
        }
        #expect(member.auth.isEnabled)

        let root = AuthInfo(username: "root", revision: member.auth.revision)
        let alice = AuthInfo(username: "alice", revision: member.auth.revision)
        var revoke = Etcdserverpb_InternalRaftRequest()
        revoke.authRoleRevokePermission.role = "rw"
        revoke.authRoleRevokePermission.key = Data("k".utf8)
        submit("revoke", revoke, as: root)
        var put = Etcdserverpb_InternalRaftRequest()
        put.put = MemberTests.put("k", "v")
        // Checked now (alice may still write k) and queued behind the revoke.
        submit("put", put, as: alice)
        settle()
        #expect(error("revoke") == nil)
        #expect(error("put") == EtcdError(.invalidArgument, "etcdserver: revision of auth store is old"))
        #expect(try member.rangeNow(MemberTests.get("k")).kvs.isEmpty)
        // Resolved again, alice is simply denied now.
        submit("again", put, as: AuthInfo(username: "alice", revision: member.auth.revision))
        #expect(error("again") == EtcdError(.permissionDenied, "etcdserver: permission denied"))
        // A write with no user while enabled is refused ("user name is empty").
        submit("anonymous", put, as: nil)
        #expect(error("anonymous") == EtcdError(.invalidArgument, "etcdserver: user name is empty"))
    }
}
