import Auth
import EtcdProto
import EtcdServer
import Foundation

/// v3lockpb.Lock: etcd's server-side mutex (clientv3 concurrency's Mutex
/// run for the caller). A lock is the key `<name>/<lease in hex>` attached
/// to the caller's lease; its holder is the key under `<name>/` created
/// first, so Lock waits until every key created before its own is gone
/// (unlocked, or its lease expired). A Lock the client abandons deletes its
/// key again.
struct LockService: Sendable {
    let member: Member

    func lock(_ request: V3lockpb_LockRequest, as info: AuthInfo?) async throws -> V3lockpb_LockResponse {
        let kv = RecipeKV(member: member, info: info)
        let lease = try await kv.sessionLease(request.lease)
        let prefix = request.name + Data("/".utf8)
        let myKey = prefix + Data(String(UInt64(bitPattern: lease), radix: 16).utf8)

        // Create the key if this lease does not hold one yet; either way,
        // read the oldest key under the prefix.
        var txn = Etcdserverpb_TxnRequest()
        txn.compare = [Self.createRevision(of: myKey, is: 0)]
        var put = Etcdserverpb_RequestOp()
        put.requestPut.key = myKey
        put.requestPut.lease = lease
        var getOwner = Etcdserverpb_RequestOp()
        getOwner.requestRange = kv.firstCreated(prefix)
        var getMine = Etcdserverpb_RequestOp()
        getMine.requestRange.key = myKey
        txn.success = [put, getOwner]
        txn.failure = [getMine, getOwner]
        let response = try await kv.txn(txn)

        var myRevision = response.header.revision
        if !response.succeeded, let mine = response.responses.first?.responseRange.kvs.first {
            myRevision = mine.createRevision
        }
        var result = V3lockpb_LockResponse()
        result.key = myKey
        let owner = response.responses.count > 1 ? response.responses[1].responseRange.kvs.first : nil
        if owner == nil || owner?.createRevision == myRevision {
            result.header = response.header
            return result
        }
        do {
            result.header = try await kv.waitDeletes(prefix, maxCreateRevision: myRevision - 1)
            return result
        } catch {
            // Give the place in line back (the client's call is gone or failed).
            let member = self.member
            Task.detached { _ = try? await RecipeKV(member: member, info: info).delete(myKey) }
            throw Self.recipeError(error)
        }
    }

    func unlock(_ request: V3lockpb_UnlockRequest, as info: AuthInfo?) async throws -> V3lockpb_UnlockResponse {
        var response = V3lockpb_UnlockResponse()
        response.header = try await RecipeKV(member: member, info: info).delete(request.key).header
        return response
    }

    /// A compare of `key`'s create revision with `revision`.
    static func createRevision(of key: Data, is revision: Int64) -> Etcdserverpb_Compare {
        var compare = Etcdserverpb_Compare()
        compare.key = key
        compare.target = .create
        compare.result = .equal
        compare.createRevision = revision
        return compare
    }

    /// A wait that ended because the call was cancelled is gRPC's CANCELLED
    /// ("context canceled", as grpc-go's server reports it).
    static func recipeError(_ error: any Error) -> any Error {
        if error is CancellationError { return EtcdError(.canceled, "context canceled") }
        return error
    }
}
