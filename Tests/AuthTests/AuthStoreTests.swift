import Backend
import EtcdProto
import Foundation
import Testing

@testable import Auth

@Suite struct AuthStoreTests {
    @Test func enableNeedsRootWithTheRootRole() throws {
        let f = try Fixture()
        #expect(throws: AuthError.rootUserNotExist) { try f.store.enable(in: f.backend) }
        try f.store.addUser("root", hashedPassword: Data("h".utf8), noPassword: false, in: f.backend)
        #expect(throws: AuthError.rootRoleNotExist) { try f.store.enable(in: f.backend) }
        // The root role may be granted before it exists, as in etcd.
        try f.store.grantRole("root", to: "root", in: f.backend)
        #expect(f.store.revision == 2)
        try f.store.enable(in: f.backend)
        #expect(f.store.isEnabled)
        // Enabling bumps the revision, as etcd 3.4.22+ does.
        #expect(f.store.revision == 3)
        // Enabling again is fine and changes nothing.
        let revision = f.store.revision
        try f.store.enable(in: f.backend)
        #expect(f.store.revision == revision)
    }

    @Test func everyChangeBumpsTheRevisionAndFailuresDoNot() throws {
        let f = try Fixture()
        #expect(f.store.revision == 0)
        try f.store.addRole("r", in: f.backend)
        #expect(f.store.revision == 1)
        #expect(throws: AuthError.roleAlreadyExist) { try f.store.addRole("r", in: f.backend) }
        #expect(f.store.revision == 1)
        try f.store.grantPermission(permission(.read, "a"), to: "r", in: f.backend)
        #expect(f.store.revision == 2)
        try f.store.addUser("u", hashedPassword: Data("h".utf8), noPassword: false, in: f.backend)
        try f.store.grantRole("r", to: "u", in: f.backend)
        #expect(f.store.revision == 4)
        // Granting a role twice is ignored, without a bump.
        try f.store.grantRole("r", to: "u", in: f.backend)
        #expect(f.store.revision == 4)
    }

    @Test func errorsAreEtcds() throws {
        let f = try Fixture()
        #expect(throws: AuthError.userEmpty) { try f.store.addUser("", hashedPassword: Data(), noPassword: true, in: f.backend) }
        #expect(throws: AuthError.roleEmpty) { try f.store.addRole("", in: f.backend) }
        #expect(throws: AuthError.userNotFound) { try f.store.deleteUser("nobody", in: f.backend) }
        #expect(throws: AuthError.userNotFound) { try f.store.grantRole("r", to: "nobody", in: f.backend) }
        try f.store.addUser("u", hashedPassword: Data("h".utf8), noPassword: false, in: f.backend)
        #expect(throws: AuthError.userAlreadyExist) { try f.store.addUser("u", hashedPassword: Data(), noPassword: true, in: f.backend) }
        #expect(throws: AuthError.roleNotFound) { try f.store.grantRole("r", to: "u", in: f.backend) }
        #expect(throws: AuthError.roleNotGranted) { try f.store.revokeRole("r", from: "u", in: f.backend) }
        #expect(throws: AuthError.roleNotFound) { try f.store.deleteRole("r", in: f.backend) }
        try f.store.addRole("r", in: f.backend)
        #expect(throws: AuthError.permissionNotGranted) {
            try f.store.revokePermission(key: Data("a".utf8), rangeEnd: Data(), from: "r", in: f.backend)
        }
        try f.enableWithRoot()
        #expect(throws: AuthError.invalidManagement) { try f.store.deleteUser("root", in: f.backend) }
        #expect(throws: AuthError.invalidManagement) { try f.store.deleteRole("root", in: f.backend) }
        #expect(throws: AuthError.invalidManagement) { try f.store.revokeRole("root", from: "root", in: f.backend) }
    }

    @Test func checksFollowEtcdsRules() throws {
        let f = try Fixture()
        // Disabled: everything passes, even without a user.
        try f.store.check(nil, .write, key: b("x"), rangeEnd: [])
        try f.store.checkAdmin(nil)

        try f.store.addRole("reader", in: f.backend)
        try f.store.grantPermission(permission(.read, "foo/", "foo0"), to: "reader", in: f.backend)
        try f.store.grantPermission(permission(.readwrite, "mine"), to: "reader", in: f.backend)
        try f.store.addUser("alice", hashedPassword: Data("h".utf8), noPassword: false, in: f.backend)
        try f.store.grantRole("reader", to: "alice", in: f.backend)
        try f.enableWithRoot()

        let alice = f.info("alice")
        try f.store.check(alice, .read, key: b("foo/a"), rangeEnd: [])
        try f.store.check(alice, .read, key: b("foo/"), rangeEnd: b("foo0"))
        #expect(throws: AuthError.permissionDenied) { try f.store.check(alice, .write, key: b("foo/a"), rangeEnd: []) }
        #expect(throws: AuthError.permissionDenied) { try f.store.check(alice, .read, key: b("bar"), rangeEnd: []) }
        try f.store.check(alice, .write, key: b("mine"), rangeEnd: [])
        #expect(throws: AuthError.permissionDenied) { try f.store.checkAdmin(alice) }

        // No user: "user name is empty"; an unknown user: denied.
        #expect(throws: AuthError.userEmpty) { try f.store.check(nil, .read, key: b("foo/a"), rangeEnd: []) }
        #expect(throws: AuthError.userEmpty) { try f.store.checkAdmin(nil) }
        #expect(throws: AuthError.permissionDenied) { try f.store.check(f.info("ghost"), .read, key: b("foo/a"), rangeEnd: []) }
        #expect(throws: AuthError.userNotFound) { try f.store.checkAdmin(f.info("ghost")) }

        // Root passes everything.
        try f.store.check(f.info("root"), .write, key: b("anything"), rangeEnd: [0])
        try f.store.checkAdmin(f.info("root"))

        // A change makes identities resolved before it stale.
        try f.store.revokePermission(key: Data("mine".utf8), rangeEnd: Data(), from: "reader", in: f.backend)
        #expect(throws: AuthError.oldRevision) { try f.store.check(alice, .read, key: b("foo/a"), rangeEnd: []) }
        #expect(throws: AuthError.permissionDenied) { try f.store.check(f.info("alice"), .write, key: b("mine"), rangeEnd: []) }
    }

    @Test func deletingARoleRevokesItFromEveryUser() throws {
        let f = try Fixture()
        try f.store.addRole("r", in: f.backend)
        try f.store.grantPermission(permission(.write, "k"), to: "r", in: f.backend)
        for name in ["u1", "u2"] {
            try f.store.addUser(name, hashedPassword: Data(), noPassword: true, in: f.backend)
            try f.store.grantRole("r", to: name, in: f.backend)
        }
        try f.enableWithRoot()
        try f.store.check(f.info("u1"), .write, key: b("k"), rangeEnd: [])
        try f.store.deleteRole("r", in: f.backend)
        #expect(f.store.user("u1")?.roles == [])
        #expect(f.store.user("u2")?.roles == [])
        #expect(throws: AuthError.permissionDenied) { try f.store.check(f.info("u1"), .write, key: b("k"), rangeEnd: []) }
    }

    @Test func permissionsStaySortedAndAGrantOnTheSameRangeUpdatesIt() throws {
        let f = try Fixture()
        try f.store.addRole("r", in: f.backend)
        try f.store.grantPermission(permission(.read, "m"), to: "r", in: f.backend)
        try f.store.grantPermission(permission(.read, "a", "c"), to: "r", in: f.backend)
        try f.store.grantPermission(permission(.read, "z"), to: "r", in: f.backend)
        try f.store.grantPermission(permission(.write, "a", "c"), to: "r", in: f.backend)
        let perms = try #require(f.store.role("r")).keyPermission
        #expect(perms.map { String(decoding: $0.key, as: UTF8.self) } == ["a", "m", "z"])
        #expect(perms[0].permType == .write)
    }

    @Test func stateIsStoredInEtcdsBucketsAndEncodings() throws {
        let f = try Fixture()
        try f.store.addRole("r", in: f.backend)
        try f.store.grantPermission(permission(.readwrite, "k", "l"), to: "r", in: f.backend)
        try f.store.addUser("u", hashedPassword: Data("hash".utf8), noPassword: false, in: f.backend)
        try f.store.grantRole("r", to: "u", in: f.backend)
        try f.enableWithRoot()
        try f.backend.forceCommit()
        try f.backend.read { tx in
            #expect(try tx.get(.auth, b("authEnabled")) == [1])
            #expect(try tx.get(.auth, b("authRevision")) == BigEndian.bytes(f.store.revision))
            let user = try Authpb_User(serializedBytes: try #require(try tx.get(.authUsers, b("u"))))
            #expect(user.name == Data("u".utf8))
            #expect(user.password == Data("hash".utf8))
            #expect(user.roles == ["r"])
            let role = try Authpb_Role(serializedBytes: try #require(try tx.get(.authRoles, b("r"))))
            #expect(role.keyPermission == [permission(.readwrite, "k", "l")])
        }
        // And it all comes back after a restart.
        let revision = f.store.revision
        let g = try f.restarted()
        #expect(g.store.isEnabled)
        #expect(g.store.revision == revision)
        #expect(g.store.userNames() == ["root", "u"])
        #expect(g.store.roleNames() == ["r"])
        try g.store.check(g.info("u"), .write, key: b("k1"), rangeEnd: [])
        #expect(throws: AuthError.permissionDenied) { try g.store.check(g.info("u"), .write, key: b("l"), rangeEnd: []) }
        try g.store.disable(in: g.backend)
        let h = try g.restarted()
        #expect(!h.store.isEnabled)
    }

    @Test func limitsAreEnforced() throws {
        var limits = AuthLimits()
        limits.maxUsers = 2
        limits.maxRoles = 1
        limits.maxPermissionsPerRole = 1
        limits.maxNameBytes = 8
        let f = try Fixture(limits: limits)
        try f.store.addUser("a", hashedPassword: Data(), noPassword: true, in: f.backend)
        try f.store.addUser("b", hashedPassword: Data(), noPassword: true, in: f.backend)
        #expect(throws: AuthError.self) { try f.store.addUser("c", hashedPassword: Data(), noPassword: true, in: f.backend) }
        try f.store.addRole("r", in: f.backend)
        #expect(throws: AuthError.self) { try f.store.addRole("s", in: f.backend) }
        #expect(throws: AuthError.self) { try f.store.addRole("averyveryverylongname", in: f.backend) }
        try f.store.grantPermission(permission(.read, "a"), to: "r", in: f.backend)
        #expect(throws: AuthError.self) { try f.store.grantPermission(permission(.read, "b"), to: "r", in: f.backend) }
        #expect(f.store.userNames() == ["a", "b"])
    }

    @Test func passwordHashesNeedAUserWithAPassword() throws {
        let f = try Fixture()
        try f.store.addUser("nopw", hashedPassword: Data(), noPassword: true, in: f.backend)
        #expect(throws: AuthError.authNotEnabled) { try f.store.passwordHash(of: "nopw") }
        try f.enableWithRoot()
        #expect(throws: AuthError.noPasswordUser) { try f.store.passwordHash(of: "nopw") }
        #expect(throws: AuthError.authFailed) { try f.store.passwordHash(of: "ghost") }
        #expect(try f.store.passwordHash(of: "root").hash == Data("h".utf8))
    }
}
