import Auth
import EtcdGRPC
import EtcdProto
import EtcdServer
import GRPCCore
import GRPCWire
import MVCC
import NIOCore
import SwiftProtobuf

/// The methods each service serves, by gRPC path.
extension WireRouter {
    /// KV: the hot path. Range, Put, DeleteRange and Txn run on the event
    /// loop and the member's completions — no task, one hop back to the loop
    /// for the response. Compact (rare) runs through the async bridge.
    ///
    /// Auth: a read resolves the caller's token once its barrier has passed
    /// and is checked against the store then (etcd's doSerialize); a write
    /// resolves it on arrival and carries it into the proposal, where the
    /// member checks it and every member re-checks it at apply.
    mutating func addKV(member: Member) {
        self["/" + Etcdserverpb_KV.Method.Range.descriptor.fullyQualifiedMethod] = .unary { call, bytes in
            let request: Etcdserverpb_RangeRequest
            do { request = try .init(grpcMessage: bytes) } catch { return call.finish(wireStatus(error)) }
            let read: @Sendable () throws -> Etcdserverpb_RangeResponse = {
                try call.authorizedRead(by: member, check: { try member.authorize(request, as: $0) }) { try member.rangeNow(request) }
            }
            if request.serializable {
                call.reply(Result { try read().stamped(by: member) })
                return
            }
            call.afterReadBarrier(of: member, read)
        }
        proposal(Etcdserverpb_KV.Method.Put.descriptor, member, member.put(_:as:completion:))
        proposal(Etcdserverpb_KV.Method.DeleteRange.descriptor, member, member.deleteRange(_:as:completion:))
        self["/" + Etcdserverpb_KV.Method.Txn.descriptor.fullyQualifiedMethod] = .unary { call, bytes in
            let request: Etcdserverpb_TxnRequest
            do {
                request = try .init(grpcMessage: bytes)
                try member.checkTxn(request)
            } catch {
                return call.finish(wireStatus(error))
            }
            if KVStore.isReadOnly(request) {
                call.afterReadBarrier(of: member) {
                    try call.authorizedRead(by: member, check: { try member.authorize(request, as: $0) }) { try member.readOnlyTxnNow(request) }
                }
                return
            }
            let info: AuthInfo?
            do { info = try member.identity(of: call) } catch { return call.finish(wireStatus(error)) }
            member.writeTxn(request, as: info) { call.replyOnLoop($0, stampedBy: member) }
        }
        unary(Etcdserverpb_KV.Method.Compact.descriptor) { (request: Etcdserverpb_CompactionRequest, _) in
            try await etcdCall { try await member.compact(request).stamped(by: member) }
        }
    }

    /// A write through raft: decoded on the event loop, proposed as the
    /// caller with a completion, answered back on the loop.
    private mutating func proposal<Request: SwiftProtobuf.Message & Sendable, Response: SwiftProtobuf.Message & HasResponseHeader>(
        _ method: MethodDescriptor, _ member: Member,
        _ propose: @escaping @Sendable (Request, AuthInfo?, @escaping @Sendable (Result<Response, any Error>) -> Void) -> Void
    ) {
        self["/" + method.fullyQualifiedMethod] = .unary { call, bytes in
            let request: Request
            let info: AuthInfo?
            do {
                request = try .init(grpcMessage: bytes)
                info = try member.identity(of: call)
            } catch {
                return call.finish(wireStatus(error))
            }
            propose(request, info) { call.replyOnLoop($0, stampedBy: member) }
        }
    }

    mutating func addHealth(_ health: HealthService) {
        unary(Grpc_Health_V1_Health.Method.Check.descriptor, health.check)
        serverStreaming(Grpc_Health_V1_Health.Method.Watch.descriptor, health.watch)
    }

    /// Watch: each create is checked as the stream's caller (its token is
    /// resolved again per create, as etcd does).
    mutating func addWatch(_ watch: WatchService) {
        self["/" + Etcdserverpb_Watch.Method.Watch.descriptor.fullyQualifiedMethod] = .streaming { call in
            let handler = BridgedStream<Etcdserverpb_WatchRequest>(call: call)
            let token = call.authToken
            let commonName = call.peerCommonName
            handler.start { requests, _ in
                try await watch.watch(request: RPCAsyncSequence(wrapping: requests), output: WireWatchOutput(call: call),
                                      token: token, commonName: commonName)
            }
            return handler
        }
    }

    /// Lease: a revoke acts as the caller (write permission on the lease's
    /// keys), and so does TimeToLive when it lists keys; grants, keep-alives
    /// and the list are open, as in etcd.
    mutating func addLease(_ lease: LeaseService, member: Member) {
        unary(Etcdserverpb_Lease.Method.LeaseGrant.descriptor, lease.leaseGrant)
        unaryAsUser(Etcdserverpb_Lease.Method.LeaseRevoke.descriptor, member) { (request: Etcdserverpb_LeaseRevokeRequest, info) in
            try await lease.leaseRevoke(request, as: info)
        }
        bidirectional(Etcdserverpb_Lease.Method.LeaseKeepAlive.descriptor, lease.leaseKeepAlive)
        unaryAsUser(Etcdserverpb_Lease.Method.LeaseTimeToLive.descriptor, member) { (request: Etcdserverpb_LeaseTimeToLiveRequest, info) in
            if request.keys { try member.authorizeLeaseKeys(request.id, as: info) }
            return try await lease.leaseTimeToLive(request)
        }
        unary(Etcdserverpb_Lease.Method.LeaseLeases.descriptor, lease.leaseLeases)
    }

    mutating func addMaintenance(_ maintenance: MaintenanceService) {
        unary(Etcdserverpb_Maintenance.Method.Alarm.descriptor, maintenance.alarm)
        unary(Etcdserverpb_Maintenance.Method.Status.descriptor, maintenance.status)
        unary(Etcdserverpb_Maintenance.Method.Defragment.descriptor, maintenance.defragment)
        unary(Etcdserverpb_Maintenance.Method.Hash.descriptor, maintenance.hash)
        unary(Etcdserverpb_Maintenance.Method.HashKV.descriptor, maintenance.hashKV)
        serverStreaming(Etcdserverpb_Maintenance.Method.Snapshot.descriptor, maintenance.snapshot)
        unary(Etcdserverpb_Maintenance.Method.MoveLeader.descriptor, maintenance.moveLeader)
        unary(Etcdserverpb_Maintenance.Method.Downgrade.descriptor, maintenance.downgrade)
    }

    mutating func addCluster(_ cluster: ClusterService) {
        unary(Etcdserverpb_Cluster.Method.MemberAdd.descriptor, cluster.memberAdd)
        unary(Etcdserverpb_Cluster.Method.MemberRemove.descriptor, cluster.memberRemove)
        unary(Etcdserverpb_Cluster.Method.MemberUpdate.descriptor, cluster.memberUpdate)
        unary(Etcdserverpb_Cluster.Method.MemberList.descriptor, cluster.memberList)
        unary(Etcdserverpb_Cluster.Method.MemberPromote.descriptor, cluster.memberPromote)
    }
}

extension WireCall {
    /// From a member completion (on the raft loop's thread): the response,
    /// stamped and encoded on the call's event loop.
    func replyOnLoop<Response: SwiftProtobuf.Message & HasResponseHeader>(
        _ result: Result<Response, any Error>, stampedBy member: Member
    ) {
        onEventLoop { self.reply(result.map { $0.stamped(by: member) }) }
    }

    /// A read as the call's user: `check` with the resolved identity, the
    /// read, then the auth store must not have moved (else the read is
    /// refused as stale, as etcd refuses it).
    func authorizedRead<Response>(by member: Member, check: (AuthInfo?) throws -> Void,
                                  _ read: () throws -> Response) throws -> Response {
        let info = try member.identity(of: self)
        try check(info)
        let response = try read()
        try member.checkAuthRevision(info)
        return response
    }

    /// A linearizable read: `read` runs on the call's event loop once the
    /// member's read barrier has passed, and its result is the reply.
    func afterReadBarrier<Response: SwiftProtobuf.Message & HasResponseHeader>(
        of member: Member, _ read: @escaping @Sendable () throws -> Response
    ) {
        member.readBarrier { barrier in
            self.onEventLoop { self.reply(barrier.flatMap { Result { try read().stamped(by: member) } }) }
        }
    }
}

/// The KV responses, which all carry etcd's response header.
protocol HasResponseHeader {
    var header: Etcdserverpb_ResponseHeader { get set }
}

extension Etcdserverpb_RangeResponse: HasResponseHeader {}
extension Etcdserverpb_PutResponse: HasResponseHeader {}
extension Etcdserverpb_DeleteRangeResponse: HasResponseHeader {}
extension Etcdserverpb_TxnResponse: HasResponseHeader {}
extension Etcdserverpb_CompactionResponse: HasResponseHeader {}

extension HasResponseHeader {
    /// The response with the member's full header (cluster, member, term)
    /// around the revision the store reported.
    func stamped(by member: Member) -> Self {
        var response = self
        response.header = member.header(revision: header.revision)
        return response
    }
}
