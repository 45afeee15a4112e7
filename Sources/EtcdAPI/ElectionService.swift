import Auth
import EtcdProto
import EtcdServer
import Foundation

/// v3electionpb.Election: etcd's server-side leader election (clientv3
/// concurrency's Election run for the caller). A candidate is the key
/// `<name>/<lease in hex>` on its lease, holding its value; the leader is
/// the candidate created first. Campaign returns once every older candidate
/// is gone; Proclaim and Resign act only while the key is still the one
/// created at the leader key's revision.
struct ElectionService: Sendable {
    let member: Member

    static let notLeader = EtcdError(.unknown, "election: not leader")
    static let noLeader = EtcdError(.unknown, "election: no leader")
    static let missingLeaderKey = EtcdError(.unknown, "\"leader\" field must be provided")

    func campaign(_ request: V3electionpb_CampaignRequest, as info: AuthInfo?) async throws -> V3electionpb_CampaignResponse {
        let kv = RecipeKV(member: member, info: info)
        let lease = try await kv.sessionLease(request.lease)
        let prefix = request.name + Data("/".utf8)
        let key = prefix + Data(String(UInt64(bitPattern: lease), radix: 16).utf8)

        var txn = Etcdserverpb_TxnRequest()
        txn.compare = [LockService.createRevision(of: key, is: 0)]
        var put = Etcdserverpb_RequestOp()
        put.requestPut.key = key
        put.requestPut.value = request.value
        put.requestPut.lease = lease
        var get = Etcdserverpb_RequestOp()
        get.requestRange.key = key
        txn.success = [put]
        txn.failure = [get]
        let response = try await kv.txn(txn)

        var leader = V3electionpb_LeaderKey()
        leader.name = request.name
        leader.key = key
        leader.rev = response.header.revision
        leader.lease = lease
        if !response.succeeded, let existing = response.responses.first?.responseRange.kvs.first {
            // Campaigning again on the same lease: the place in line stays;
            // a new value is proclaimed.
            leader.rev = existing.createRevision
            if existing.value != request.value {
                do {
                    _ = try await proclaim(leader, request.value, kv)
                } catch {
                    _ = try? await resign(leader, kv)
                    throw error
                }
            }
        }
        do {
            _ = try await kv.waitDeletes(prefix, maxCreateRevision: leader.rev - 1)
        } catch {
            // A campaign the client gave up withdraws its candidate.
            if Task.isCancelled {
                let member = self.member
                Task.detached { _ = try? await resign(leader, RecipeKV(member: member, info: info)) }
            }
            throw LockService.recipeError(error)
        }
        var result = V3electionpb_CampaignResponse()
        result.header = response.header
        result.leader = leader
        return result
    }

    func proclaim(_ request: V3electionpb_ProclaimRequest, as info: AuthInfo?) async throws -> V3electionpb_ProclaimResponse {
        guard request.hasLeader else { throw Self.missingLeaderKey }
        var response = V3electionpb_ProclaimResponse()
        response.header = try await proclaim(request.leader, request.value, RecipeKV(member: member, info: info))
        return response
    }

    func resign(_ request: V3electionpb_ResignRequest, as info: AuthInfo?) async throws -> V3electionpb_ResignResponse {
        guard request.hasLeader else { throw Self.missingLeaderKey }
        var response = V3electionpb_ResignResponse()
        response.header = try await resign(request.leader, RecipeKV(member: member, info: info))
        return response
    }

    func leader(_ request: V3electionpb_LeaderRequest, as info: AuthInfo?) async throws -> V3electionpb_LeaderResponse {
        let kv = RecipeKV(member: member, info: info)
        let response = try await kv.range(kv.firstCreated(request.name + Data("/".utf8)))
        guard let first = response.kvs.first else { throw Self.noLeader }
        var result = V3electionpb_LeaderResponse()
        result.header = response.header
        result.kv = first
        return result
    }

    /// Streams the leader's value: the current leader (or the first
    /// candidate once there is one), each value it proclaims, then the next
    /// leader once its key is gone; until the client ends the call.
    func observe(_ request: V3electionpb_LeaderRequest, as info: AuthInfo?,
                 send: (V3electionpb_LeaderResponse) async throws -> Void) async throws {
        let kv = RecipeKV(member: member, info: info)
        let prefix = request.name + Data("/".utf8)
        while true {
            try Task.checkCancellation()
            let current = try await kv.range(kv.firstCreated(prefix))
            var leader = V3electionpb_LeaderResponse()
            if let first = current.kvs.first {
                leader.header = current.header
                leader.kv = first
            } else {
                // No candidate yet: the first one put under the prefix.
                try await kv.watch(prefix, rangeEnd: RecipeKV.prefixEnd(prefix), from: current.header.revision) { delivery in
                    guard let put = delivery.events.first(where: { $0.type == .put }) else { return true }
                    leader.header = member.header(revision: put.kv.modRevision)
                    leader.kv = put.kv
                    return false
                }
            }
            try Task.checkCancellation()
            try await send(leader)
            // Its new values until its key is deleted.
            try await kv.watch(leader.kv.key, from: leader.header.revision + 1) { delivery in
                for event in delivery.events {
                    if event.type == .delete { return false }
                    var next = V3electionpb_LeaderResponse()
                    next.header = member.header(revision: delivery.revision)
                    next.kv = event.kv
                    try await send(next)
                }
                return true
            }
        }
    }

    private func proclaim(_ leader: V3electionpb_LeaderKey, _ value: Data, _ kv: RecipeKV) async throws -> Etcdserverpb_ResponseHeader {
        var txn = Etcdserverpb_TxnRequest()
        txn.compare = [LockService.createRevision(of: leader.key, is: leader.rev)]
        var put = Etcdserverpb_RequestOp()
        put.requestPut.key = leader.key
        put.requestPut.value = value
        put.requestPut.lease = leader.lease
        txn.success = [put]
        let response = try await kv.txn(txn)
        guard response.succeeded else { throw Self.notLeader }
        return response.header
    }

    private func resign(_ leader: V3electionpb_LeaderKey, _ kv: RecipeKV) async throws -> Etcdserverpb_ResponseHeader {
        var txn = Etcdserverpb_TxnRequest()
        txn.compare = [LockService.createRevision(of: leader.key, is: leader.rev)]
        var delete = Etcdserverpb_RequestOp()
        delete.requestDeleteRange.key = leader.key
        txn.success = [delete]
        return try await kv.txn(txn).header
    }
}
