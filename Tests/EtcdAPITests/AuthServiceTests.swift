import EtcdAPI
import EtcdGRPC
import EtcdProto
@testable import EtcdServer
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Locks
import Testing

/// The Auth service and enforcement over gRPC: the token travels in the
/// `token` metadata as Go's clientv3 sends it; each entry point answers
/// with etcd's code and message.
@Suite struct AuthServiceTests {
    static func expectError(_ code: RPCError.Code, _ message: String, sourceLocation: SourceLocation = #_sourceLocation,
                            _ body: () async throws -> Void) async {
        do {
            try await body()
            Issue.record("expected \(code) \(message)", sourceLocation: sourceLocation)
        } catch let error as RPCError {
            #expect(error.code == code && error.message == message, "\(error)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected \(error)", sourceLocation: sourceLocation)
        }
    }

    static func put(_ key: String, lease: Int64 = 0) -> Etcdserverpb_PutRequest {
        var request = Etcdserverpb_PutRequest()
        request.key = Data(key.utf8)
        request.value = Data("v".utf8)
        request.lease = lease
        return request
    }

    @Test func tokensInMetadataAndEtcdsErrorsPerEntryPoint() async throws {
        try await withServedMember { member, client in
            let auth = Etcdserverpb_Auth.Client(wrapping: client)
            let kv = Etcdserverpb_KV.Client(wrapping: client)
            // Setup while disabled: anyone may.
            for (name, password) in [("root", "rootpw"), ("alice", "alicepw")] {
                var add = Etcdserverpb_AuthUserAddRequest()
                add.name = name
                add.password = password
                _ = try await auth.userAdd(add)
            }
            var grantRoot = Etcdserverpb_AuthUserGrantRoleRequest()
            grantRoot.user = "root"
            grantRoot.role = "root"
            _ = try await auth.userGrantRole(grantRoot)
            var role = Etcdserverpb_AuthRoleAddRequest()
            role.name = "k"
            _ = try await auth.roleAdd(role)
            var grant = Etcdserverpb_AuthRoleGrantPermissionRequest()
            grant.name = "k"
            grant.perm.permType = .readwrite
            grant.perm.key = Data("k".utf8)
            grant.perm.rangeEnd = Data("l".utf8)
            _ = try await auth.roleGrantPermission(grant)
            var grantAlice = Etcdserverpb_AuthUserGrantRoleRequest()
            grantAlice.user = "alice"
            grantAlice.role = "k"
            _ = try await auth.userGrantRole(grantAlice)
            _ = try await auth.authEnable(Etcdserverpb_AuthEnableRequest())
            let status = try await auth.authStatus(Etcdserverpb_AuthStatusRequest())
            #expect(status.enabled && status.authRevision > 0)

            var login = Etcdserverpb_AuthenticateRequest()
            login.name = "alice"
            login.password = "nope"
            await Self.expectError(.invalidArgument, "etcdserver: authentication failed, invalid user ID or password") {
                _ = try await auth.authenticate(login)
            }
            login.password = "alicepw"
            let alice: Metadata = ["token": .string(try await auth.authenticate(login).token)]
            login.name = "root"
            login.password = "rootpw"
            let root: Metadata = ["token": .string(try await auth.authenticate(login).token)]

            // KV.
            _ = try await kv.put(Self.put("k1"), metadata: alice)
            await Self.expectError(.permissionDenied, "etcdserver: permission denied") { _ = try await kv.put(Self.put("x"), metadata: alice) }
            await Self.expectError(.invalidArgument, "etcdserver: user name is empty") { _ = try await kv.put(Self.put("k1")) }
            await Self.expectError(.unauthenticated, "etcdserver: invalid auth token") {
                _ = try await kv.range(Etcdserverpb_RangeRequest(), metadata: ["token": "made.up"])
            }
            var range = Etcdserverpb_RangeRequest()
            range.key = Data("k".utf8)
            range.rangeEnd = Data("l".utf8)
            #expect(try await kv.range(range, metadata: alice).kvs.count == 1)
            range.serializable = true
            #expect(try await kv.range(range, metadata: alice).kvs.count == 1)
            range.rangeEnd = Data([0])
            await Self.expectError(.permissionDenied, "etcdserver: permission denied") { _ = try await kv.range(range, metadata: alice) }
            var txn = Etcdserverpb_TxnRequest()
            var compare = Etcdserverpb_Compare()
            compare.key = Data("k1".utf8)
            compare.target = .version
            compare.version = 1
            txn.compare = [compare]
            var op = Etcdserverpb_RequestOp()
            op.requestPut = Self.put("k2")
            txn.success = [op]
            #expect(try await kv.txn(txn, metadata: alice).succeeded)
            // A nested txn's op counts too.
            var nested = Etcdserverpb_TxnRequest()
            var inner = Etcdserverpb_RequestOp()
            inner.requestPut = Self.put("x")
            nested.success = [inner]
            var outer = Etcdserverpb_RequestOp()
            outer.requestTxn = nested
            txn.failure = [outer]
            await Self.expectError(.permissionDenied, "etcdserver: permission denied") { _ = try await kv.txn(txn, metadata: alice) }
            var compaction = Etcdserverpb_CompactionRequest()
            compaction.revision = 1
            await Self.expectError(.permissionDenied, "etcdserver: permission denied") { _ = try await kv.compact(compaction, metadata: alice) }
            _ = try await kv.compact(compaction, metadata: root)

            // Maintenance answers with the auth store's own error; Status stays open.
            let maintenance = Etcdserverpb_Maintenance.Client(wrapping: client)
            await Self.expectError(.unknown, "auth: permission denied") { _ = try await maintenance.hashKV(Etcdserverpb_HashKVRequest(), metadata: alice) }
            await Self.expectError(.unknown, "auth: user name is empty") { _ = try await maintenance.defragment(Etcdserverpb_DefragmentRequest()) }
            _ = try await maintenance.hashKV(Etcdserverpb_HashKVRequest(), metadata: root)
            _ = try await maintenance.status(Etcdserverpb_StatusRequest())
            _ = try await maintenance.alarm(Etcdserverpb_AlarmRequest(), metadata: alice)
            var disarm = Etcdserverpb_AlarmRequest()
            disarm.action = .deactivate
            await Self.expectError(.permissionDenied, "etcdserver: permission denied") { _ = try await maintenance.alarm(disarm, metadata: alice) }
            let cluster = Etcdserverpb_Cluster.Client(wrapping: client)
            _ = try await cluster.memberList(Etcdserverpb_MemberListRequest(), metadata: alice)
            var remove = Etcdserverpb_MemberRemoveRequest()
            remove.id = 42
            await Self.expectError(.permissionDenied, "etcdserver: permission denied") { _ = try await cluster.memberRemove(remove, metadata: alice) }

            // Leases: a revoke needs write permission on every attached key.
            let lease = Etcdserverpb_Lease.Client(wrapping: client)
            var grantLease = Etcdserverpb_LeaseGrantRequest()
            grantLease.ttl = 600
            let granted = try await lease.leaseGrant(grantLease, metadata: alice)
            _ = try await kv.put(Self.put("x", lease: granted.id), metadata: root)
            var revoke = Etcdserverpb_LeaseRevokeRequest()
            revoke.id = granted.id
            await Self.expectError(.permissionDenied, "etcdserver: permission denied") { _ = try await lease.leaseRevoke(revoke, metadata: alice) }
            var ttl = Etcdserverpb_LeaseTimeToLiveRequest()
            ttl.id = granted.id
            ttl.keys = true
            await Self.expectError(.permissionDenied, "etcdserver: permission denied") { _ = try await lease.leaseTimeToLive(ttl, metadata: alice) }
            _ = try await lease.leaseRevoke(revoke, metadata: root)

            // Auth administration: root only; a user reads itself.
            await Self.expectError(.permissionDenied, "etcdserver: permission denied") {
                _ = try await auth.userList(Etcdserverpb_AuthUserListRequest(), metadata: alice)
            }
            #expect(try await auth.userList(Etcdserverpb_AuthUserListRequest(), metadata: root).users == ["alice", "root"])
            var get = Etcdserverpb_AuthUserGetRequest()
            get.name = "alice"
            #expect(try await auth.userGet(get, metadata: alice).roles == ["k"])

            // Watch: a create outside the grants is created and canceled with etcd's reason.
            let watch = Etcdserverpb_Watch.Client(wrapping: client)
            let responses = Mutex<[Etcdserverpb_WatchResponse]>([])
            try await watch.watch(metadata: alice, requestProducer: { writer in
                for key in ["x", "k"] {
                    var request = Etcdserverpb_WatchRequest()
                    request.createRequest.key = Data(key.utf8)
                    try await writer.write(request)
                }
                // Wait for both answers before closing our side.
                let deadline = ContinuousClock.now + .seconds(30)
                while responses.withLock({ $0.count }) < 2 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            }, onResponse: { response in
                for try await message in response.messages {
                    responses.withLock { $0.append(message) }
                    if responses.withLock({ $0.count }) >= 2 { break }
                }
            })
            let answers = responses.withLock { $0 }
            #expect(answers.count == 2)
            #expect(answers.first?.created == true && answers.first?.canceled == true && answers.first?.watchID == -1)
            #expect(answers.first?.cancelReason == "etcdserver: permission denied")
            #expect(answers.last?.created == true && answers.last?.canceled == false && answers.last?.watchID == 0)
            _ = member
        }
    }
}
