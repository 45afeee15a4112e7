import Auth
import EtcdProto
import Foundation
import Raft
import SwiftProtobuf

/// Gives a request its cluster-wide id and encodes it as an
/// InternalRaftRequest — a KV write through its narrow message (see
/// `ProposalMessage`), so the request's storage is not copied to set the id.
struct ProposalEncoder: Sendable {
    /// Ids unique cluster-wide (a follower's proposal is applied by every
    /// member, and only its proposer may answer it).
    let requestIDs: IDGenerator
    /// --max-request-bytes: larger encodings are refused.
    let maxRequestBytes: Int

    /// `auth`: the identity the request was checked as (nil: none), which
    /// goes in the header so every member re-checks it at apply.
    func encode(_ request: ProposedRequest, auth: AuthInfo? = nil) throws(EtcdError) -> QueuedProposal {
        let encoded: (id: UInt64, data: Data)
        var applied = request
        switch request {
        case .put(let put):
            var message = Etcdswiftpb_PutProposal()
            message.put = put
            encoded = try identified(&message, auth)
        case .deleteRange(let delete):
            var message = Etcdswiftpb_DeleteRangeProposal()
            message.deleteRange = delete
            encoded = try identified(&message, auth)
        case .txn(let txn):
            var message = Etcdswiftpb_TxnProposal()
            message.txn = txn
            encoded = try identified(&message, auth)
        case .other(var other):
            // Rare requests (leases, compaction, membership): setting the id
            // copies the message's storage once; the copy is what is applied.
            encoded = try identified(&other, auth)
            applied = .other(other)
        }
        return QueuedProposal(id: encoded.id, data: encoded.data, request: applied, auth: auth)
    }

    /// Sets a fresh id in `message` (in both places etcd does) and encodes it.
    private func identified<Message: ProposalMessage>(_ message: inout Message, _ auth: AuthInfo?) throws(EtcdError) -> (id: UInt64, data: Data) {
        let id = requestIDs.next()
        message.id = id
        var header = Etcdserverpb_RequestHeader()
        header.id = id
        if let auth {
            header.username = auth.username
            header.authRevision = auth.revision
        }
        message.header = header
        let data: Data
        do { data = try message.serializedData() } catch {
            throw EtcdError(.internal, "etcdserver: cannot encode the request: \(error)")
        }
        if data.count > maxRequestBytes { throw EtcdError.requestTooLarge }
        return (id, data)
    }

    /// A membership change with a fresh id.
    func identified(_ change: ConfChange) -> ConfChange {
        var change = change
        change.id = requestIDs.next()
        return change
    }
}

/// A message proposed through raft: an InternalRaftRequest, or one of the
/// narrow KV proposals (`Protos/etcdswiftpb/proposal.proto`) that encode to
/// the same bytes. The encoder sets the id in both places etcd does.
protocol ProposalMessage: SwiftProtobuf.Message {
    var id: UInt64 { get set }
    var header: Etcdserverpb_RequestHeader { get set }
}

extension Etcdserverpb_InternalRaftRequest: ProposalMessage {}
extension Etcdswiftpb_PutProposal: ProposalMessage {}
extension Etcdswiftpb_DeleteRangeProposal: ProposalMessage {}
extension Etcdswiftpb_TxnProposal: ProposalMessage {}
