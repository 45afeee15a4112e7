import EtcdGRPC
import EtcdProto
import EtcdServer
import GRPCCore
import GRPCWire
import MVCC
import NIOCore

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
                call.reply(Result { try KVRoutes.range(member, request) })
                return
            }
            member.readBarrier { barrier in
                call.onEventLoop {
                    call.reply(barrier.flatMap { Result { try KVRoutes.range(member, request) } })
                }
            }
        }
        self["/" + Etcdserverpb_KV.Method.Put.descriptor.fullyQualifiedMethod] = .unary { call, bytes in
            let request: Etcdserverpb_PutRequest
            do { request = try .init(grpcMessage: bytes) } catch { return call.finish(wireStatus(error)) }
            member.put(request) { result in
                call.onEventLoop { call.reply(result.map { KVRoutes.withHeader($0, member) }) }
            }
        }
        self["/" + Etcdserverpb_KV.Method.DeleteRange.descriptor.fullyQualifiedMethod] = .unary { call, bytes in
            let request: Etcdserverpb_DeleteRangeRequest
            do { request = try .init(grpcMessage: bytes) } catch { return call.finish(wireStatus(error)) }
            member.deleteRange(request) { result in
                call.onEventLoop { call.reply(result.map { KVRoutes.withHeader($0, member) }) }
            }
        }
        self["/" + Etcdserverpb_KV.Method.Txn.descriptor.fullyQualifiedMethod] = .unary { call, bytes in
            let request: Etcdserverpb_TxnRequest
            do {
                request = try .init(grpcMessage: bytes)
                try member.checkTxn(request)
            } catch {
                return call.finish(wireStatus(error))
            }
            if KVStore.isReadOnly(request) {
                member.readBarrier { barrier in
                    call.onEventLoop {
                        call.reply(barrier.flatMap { Result { KVRoutes.withHeader(try member.readOnlyTxnNow(request), member) } })
                    }
                }
                return
            }
            member.writeTxn(request) { result in
                call.onEventLoop { call.reply(result.map { KVRoutes.withHeader($0, member) }) }
            }
        }
        let kv = KVService(member: member)
        unary(Etcdserverpb_KV.Method.Compact.descriptor, kv.compact)
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

enum KVRoutes {
    static func range(_ member: Member, _ request: Etcdserverpb_RangeRequest) throws -> Etcdserverpb_RangeResponse {
        var response = try member.rangeNow(checked: request)
        response.header = member.header(revision: response.header.revision)
        return response
    }

    static func withHeader(_ response: Etcdserverpb_PutResponse, _ member: Member) -> Etcdserverpb_PutResponse {
        var response = response
        response.header = member.header(revision: response.header.revision)
        return response
    }

    static func withHeader(_ response: Etcdserverpb_DeleteRangeResponse, _ member: Member) -> Etcdserverpb_DeleteRangeResponse {
        var response = response
        response.header = member.header(revision: response.header.revision)
        return response
    }

    static func withHeader(_ response: Etcdserverpb_TxnResponse, _ member: Member) -> Etcdserverpb_TxnResponse {
        var response = response
        response.header = member.header(revision: response.header.revision)
        return response
    }
}
