import Backend
import EtcdProto
import Foundation
import MVCC

/// The member record: after start a member publishes its name and client
/// URLs through raft (etcd's ClusterMemberAttrSet), and every member stores
/// the record in the backend's `members` bucket as etcd does — the key is
/// the member id in hex, the value etcd's JSON form of the member.
extension Member {
    /// Proposes this member's attributes and waits until they are applied;
    /// logs etcd's `published local member to cluster through raft`.
    public func publish() async throws {
        var internalRequest = Etcdserverpb_InternalRaftRequest()
        internalRequest.clusterMemberAttrSet.memberID = memberID
        internalRequest.clusterMemberAttrSet.memberAttributes.name = config.name
        internalRequest.clusterMemberAttrSet.memberAttributes.clientUrls = config.advertiseClientURLs
        _ = try await propose(internalRequest)
        logger.info("published local member to cluster through raft", metadata: [
            "local-member-id": "\(String(memberID, radix: 16))",
            "local-member-attributes": "{Name:\(config.name) ClientURLs:[\(config.advertiseClientURLs.joined(separator: " "))]}",
            "cluster-id": "\(String(clusterID, radix: 16))",
        ])
    }

    /// Applies ClusterMemberAttrSet: the record of that member, with the peer
    /// URLs this member knows for it.
    func applyMemberAttributes(_ request: Membershippb_ClusterMemberAttrSetRequest) throws(MVCCError) {
        let record = MemberRecord(
            id: request.memberID,
            peerURLs: request.memberID == memberID ? config.initialAdvertisePeerURLs : [],
            name: request.memberAttributes.name,
            clientURLs: request.memberAttributes.clientUrls)
        do {
            try backend.put(.members, key: Array(String(request.memberID, radix: 16).utf8), value: Array(record.json().utf8))
        } catch {
            throw .backend(error)
        }
    }
}

/// etcd's JSON form of a member in the `members` bucket.
struct MemberRecord: Equatable {
    var id: UInt64
    var peerURLs: [String]
    var name: String
    var clientURLs: [String]
    var isLearner = false

    func json() -> String {
        func list(_ items: [String]) -> String { "[" + items.map(EtcdLogHandler.quoted).joined(separator: ",") + "]" }
        var text = #"{"id":\#(id),"peerURLs":\#(list(peerURLs))"#
        if isLearner { text += #","isLearner":true"# }
        text += #","name":\#(EtcdLogHandler.quoted(name))"#
        if !clientURLs.isEmpty { text += #","clientURLs":\#(list(clientURLs))"# }
        return text + "}"
    }
}
