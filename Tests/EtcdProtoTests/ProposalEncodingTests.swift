import EtcdProto
import Foundation
import SwiftProtobuf
import Testing

/// The narrow KV proposals (Protos/etcdswiftpb/proposal.proto) must encode
/// to exactly the bytes of an InternalRaftRequest with the same fields set:
/// members (ours after a restart, or on another version) decode the raft
/// log as InternalRaftRequest.
@Suite struct ProposalEncodingTests {
    static func header(_ id: UInt64) -> Etcdserverpb_RequestHeader {
        var header = Etcdserverpb_RequestHeader()
        header.id = id
        return header
    }

    @Test func putProposalIsAnInternalRaftRequest() throws {
        var put = Etcdserverpb_PutRequest()
        put.key = Data("key".utf8)
        put.value = Data(repeating: 7, count: 300)
        put.lease = 0x1234
        put.prevKv = true
        var proposal = Etcdswiftpb_PutProposal()
        proposal.id = 0x8000_0000_0000_0001
        proposal.header = Self.header(proposal.id)
        proposal.put = put
        var raftRequest = Etcdserverpb_InternalRaftRequest()
        raftRequest.id = proposal.id
        raftRequest.header = Self.header(proposal.id)
        raftRequest.put = put
        let bytes: [UInt8] = try proposal.serializedBytes()
        #expect(bytes == (try raftRequest.serializedBytes() as [UInt8]))
        let decoded = try Etcdserverpb_InternalRaftRequest(serializedBytes: bytes)
        #expect(decoded == raftRequest)
        #expect(decoded.hasPut && !decoded.hasTxn && !decoded.hasDeleteRange)
    }

    @Test func deleteRangeAndTxnProposalsAreInternalRaftRequests() throws {
        var delete = Etcdserverpb_DeleteRangeRequest()
        delete.key = Data("a".utf8)
        delete.rangeEnd = Data("z".utf8)
        delete.prevKv = true
        var deleteProposal = Etcdswiftpb_DeleteRangeProposal()
        deleteProposal.id = 42
        deleteProposal.header = Self.header(42)
        deleteProposal.deleteRange = delete
        var internalDelete = Etcdserverpb_InternalRaftRequest()
        internalDelete.id = 42
        internalDelete.header = Self.header(42)
        internalDelete.deleteRange = delete
        #expect(try deleteProposal.serializedBytes() as [UInt8] == (try internalDelete.serializedBytes() as [UInt8]))

        var txn = Etcdserverpb_TxnRequest()
        var compare = Etcdserverpb_Compare()
        compare.key = Data("k".utf8)
        compare.target = .version
        compare.result = .greater
        compare.version = 2
        txn.compare = [compare]
        var op = Etcdserverpb_RequestOp()
        op.requestPut.key = Data("k".utf8)
        op.requestPut.value = Data("v".utf8)
        var nested = Etcdserverpb_RequestOp()
        nested.requestTxn.success = [op]
        txn.success = [op, nested]
        txn.failure = [op]
        var txnProposal = Etcdswiftpb_TxnProposal()
        txnProposal.id = 7
        txnProposal.header = Self.header(7)
        txnProposal.txn = txn
        var internalTxn = Etcdserverpb_InternalRaftRequest()
        internalTxn.id = 7
        internalTxn.header = Self.header(7)
        internalTxn.txn = txn
        let bytes: [UInt8] = try txnProposal.serializedBytes()
        #expect(bytes == (try internalTxn.serializedBytes() as [UInt8]))
        #expect(try Etcdserverpb_InternalRaftRequest(serializedBytes: bytes) == internalTxn)
    }
}
