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
    mutating func addKV(member: Member) {
        self["/" + Etcdserverpb_KV.Method.Range.descriptor.fullyQualifiedMethod] = .unary { call, bytes in
            let request: Etcdserverpb_RangeRequest
            do { request = try .init(grpcMessage: bytes) } catch { return call.finish(wireStatus(error)) }
            if request.serializable {
                call.reply(Result { try member.rangeNow(request).stamped(by: member) })
                return
            }
            call.afterReadBarrier(of: member) { try member.rangeNow(request) }
        }
        proposal(Etcdserverpb_KV.Method.Put.descriptor, member, member.put(_:completion:))
        proposal(Etcdserverpb_KV.Method.DeleteRange.descriptor, member, member.deleteRange(_:completion:))
        self["/" + Etcdserverpb_KV.Method.Txn.descriptor.fullyQualifiedMethod] = .unary { call, bytes in
            let request: Etcdserverpb_TxnRequest
            do {
                request = try .init(grpcMessage: bytes)
                try member.checkTxn(request)
            } catch {
                return call.finish(wireStatus(error))
            }
            if KVStore.isReadOnly(request) {
                call.afterReadBarrier(of: member) { try member.readOnlyTxnNow(request) }
                return
            }
            member.writeTxn(request) { call.replyOnLoop($0, stampedBy: member) }
        }
        unary(Etcdserverpb_KV.Method.Compact.descriptor) { (request: Etcdserverpb_CompactionRequest, _) in
            try await etcdCall { try await member.compact(request).stamped(by: member) }
        }
    }

    /// A write through raft: decoded on the event loop, proposed with a
    /// completion, answered back on the loop.
    private mutating func proposal<Request: SwiftProtobuf.Message & Sendable, Response: SwiftProtobuf.Message & HasResponseHeader>(
        _ method: MethodDescriptor, _ member: Member,
        _ propose: @escaping @Sendable (Request, @escaping @Sendable (Result<Response, any Error>) -> Void) -> Void
    ) {
        self["/" + method.fullyQualifiedMethod] = .unary { call, bytes in
            let request: Request
            do { request = try .init(grpcMessage: bytes) } catch { return call.finish(wireStatus(error)) }
            propose(request) { call.replyOnLoop($0, stampedBy: member) }
        }
    }

    mutating func addHealth(_ health: HealthService) {
        unary(Grpc_Health_V1_Health.Method.Check.descriptor, health.check)
        serverStreaming(Grpc_Health_V1_Health.Method.Watch.descriptor, health.watch)
    }

    mutating func addWatch(_ watch: WatchService) {
        bidirectional(Etcdserverpb_Watch.Method.Watch.descriptor, watch.watch)
    }

    mutating func addLease(_ lease: LeaseService) {
        unary(Etcdserverpb_Lease.Method.LeaseGrant.descriptor, lease.leaseGrant)
        unary(Etcdserverpb_Lease.Method.LeaseRevoke.descriptor, lease.leaseRevoke)
        bidirectional(Etcdserverpb_Lease.Method.LeaseKeepAlive.descriptor, lease.leaseKeepAlive)
        unary(Etcdserverpb_Lease.Method.LeaseTimeToLive.descriptor, lease.leaseTimeToLive)
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
