import Backend
import EtcdProto
import Foundation
import MVCC
import Raft

/// Membership: the member records (published attributes, conf changes) and
/// the Cluster API's member calls. Records live in the `members` bucket in
/// etcd's JSON form; conf changes carry the record as their context, as in
/// etcd, so every member applies the same record.
extension Member {
    /// Proposes this member's attributes until they are applied (a new
    /// cluster has no leader until a quorum of members runs); logs etcd's
    /// `published local member to cluster through raft`.
    public func publish() async throws {
        var internalRequest = Etcdserverpb_InternalRaftRequest()
        internalRequest.clusterMemberAttrSet.memberID = memberID
        internalRequest.clusterMemberAttrSet.memberAttributes.name = config.name
        internalRequest.clusterMemberAttrSet.memberAttributes.clientUrls = config.advertiseClientURLs
        while true {
            do {
                _ = try await propose(.other(internalRequest))
                break
            } catch let error as EtcdError where error != .stopped {
                // No leader yet, or the proposal was lost in an election.
                try await Task.sleep(for: .milliseconds(error == .noLeader ? 100 : 10))
            }
        }
        logger.info("published local member to cluster through raft", metadata: [
            "local-member-id": "\(String(memberID, radix: 16))",
            "local-member-attributes": "{Name:\(config.name) ClientURLs:[\(config.advertiseClientURLs.joined(separator: " "))]}",
            "cluster-id": "\(String(clusterID, radix: 16))",
        ])
    }

    /// The members, sorted by id.
    public func memberList() -> [MemberRecord] { membership.members }

    /// One member's record, without listing them all.
    public func member(id: UInt64) -> MemberRecord? { membership.member(id) }

    /// MemberAdd: a new member (voter or learner) with an id derived from
    /// its peer URLs, the cluster token and the time, as etcd derives it.
    public func memberAdd(peerURLs: [String], isLearner: Bool) async throws -> MemberRecord {
        let (record, change) = try memberAddChange(peerURLs: peerURLs, isLearner: isLearner)
        try await proposeConfChange(change)
        return record
    }

    /// MemberAdd's checks, and the record and conf change it proposes.
    package func memberAddChange(peerURLs: [String], isLearner: Bool) throws -> (MemberRecord, ConfChange) {
        for url in peerURLs {
            guard URLs.isValidPeerURL(url) else { throw EtcdError(.invalidArgument, "etcdserver: invalid peer URL \(url)") }
        }
        let inUse = Set(membership.members.flatMap(\.peerURLs))
        if peerURLs.contains(where: inUse.contains) { throw EtcdError.peerURLExists }
        if isLearner && membership.members.filter(\.isLearner).count >= config.maxLearners { throw EtcdError.tooManyLearners }
        let record = MemberRecord(
            id: MemberIdentity.memberID(peerURLs: peerURLs, clusterToken: config.initialClusterToken,
                                        addedAtUnixSeconds: Int64(environment.wallMilliseconds() / 1000)),
            peerURLs: peerURLs, isLearner: isLearner)
        if membership.member(record.id) != nil { throw EtcdError.memberExists }
        try mayAddMember(isLearner: isLearner)
        let change = ConfChange(type: isLearner ? .addLearnerNode : .addNode, nodeID: record.id, context: Data(record.json().utf8))
        return (record, change)
    }

    public func memberRemove(id: UInt64) async throws {
        try await proposeConfChange(try memberRemoveChange(id: id))
    }

    package func memberRemoveChange(id: UInt64) throws -> ConfChange {
        if membership.isRemoved(id) { throw EtcdError.memberRemoved }
        guard let record = membership.member(id) else { throw EtcdError.memberNotFound }
        try mayRemoveMember(record)
        return ConfChange(type: .removeNode, nodeID: id)
    }

    public func memberUpdate(id: UInt64, peerURLs: [String]) async throws {
        if membership.isRemoved(id) { throw EtcdError.memberRemoved }
        guard var record = membership.member(id) else { throw EtcdError.memberNotFound }
        let inUse = Set(membership.members.filter { $0.id != id }.flatMap(\.peerURLs))
        if peerURLs.contains(where: inUse.contains) { throw EtcdError.peerURLExists }
        record.peerURLs = peerURLs
        try await proposeConfChange(ConfChange(type: .updateNode, nodeID: id, context: Data(record.json().utf8)))
    }

    /// MemberPromote: a learner becomes a voter once its log is within 90%
    /// of the leader's (checked where this member leads; elsewhere the
    /// leader's raft has the last word).
    public func memberPromote(id: UInt64) async throws {
        try await proposeConfChange(try memberPromoteChange(id: id))
    }

    package func memberPromoteChange(id: UInt64) throws -> ConfChange {
        if membership.isRemoved(id) { throw EtcdError.memberRemoved }
        guard var record = membership.member(id) else { throw EtcdError.memberNotFound }
        guard record.isLearner else { throw EtcdError.notLearner }
        if let progress = learnerProgress(id), progress.match < progress.leaderLast * 9 / 10 { throw EtcdError.learnerNotReady }
        if config.strictReconfigCheck && !ReconfigurationCheck.readyToPromote(voters: voters) {
            logger.warning("rejecting member promote request; not enough healthy members", metadata: ["requested-member-promote": "\(String(id, radix: 16))"])
            throw EtcdError.notEnoughStartedMembers
        }
        record.isLearner = false
        return ConfChange(type: .addNode, nodeID: id, context: Data(record.json().utf8))
    }


    // MARK: - --strict-reconfig-check

    private var voters: [MemberRecord] { membership.members.filter { !$0.isLearner } }

    /// etcd's mayAddMember: a new voter needs a quorum of started members
    /// (counting it), and any new member needs this member in contact with
    /// every voter for the health interval.
    func mayAddMember(isLearner: Bool) throws(EtcdError) {
        guard config.strictReconfigCheck else { return }
        if !isLearner && !ReconfigurationCheck.readyToAdd(voters: voters) {
            logger.warning("rejecting member add request; not enough healthy members")
            throw .notEnoughStartedMembers
        }
        guard let connected = connectedVoters() else { return }
        if connected < voters.count {
            logger.warning("rejecting member add request; local member has not been connected to all peers, reconfigure breaks active quorum")
            throw .unhealthy
        }
    }

    /// etcd's mayRemoveMember: learners go freely; removing a voter must
    /// leave a quorum of started members, and — unless the voter is
    /// already out of contact — a quorum of the rest in contact.
    func mayRemoveMember(_ record: MemberRecord) throws(EtcdError) {
        guard config.strictReconfigCheck, !record.isLearner else { return }
        if !ReconfigurationCheck.readyToRemove(record.id, voters: voters) {
            logger.warning("rejecting member remove request; not enough healthy members",
                           metadata: ["requested-member-remove": "\(String(record.id, radix: 16))"])
            throw .notEnoughStartedMembers
        }
        guard let contact = peerContact() else { return }
        if record.id != memberID && contact.since(record.id) == nil { return }
        let active = voters.count { $0.id == memberID || contact.since($0.id) != nil }
        if active - 1 < 1 + (voters.count - 1) / 2 {
            logger.warning("rejecting member remove request; local member has not been connected to all peers, reconfigure breaks active quorum",
                           metadata: ["requested-member-remove": "\(String(record.id, radix: 16))", "active-peers": "\(active)"])
            throw .unhealthy
        }
    }

    /// Voters this member has been in contact with for the health
    /// interval, itself included; nil where this member does not lead.
    private func connectedVoters() -> Int? {
        guard let contact = peerContact() else { return nil }
        return voters.count { $0.id == memberID || contact.since($0.id) != nil }
    }

    /// Where this member leads: how long it has heard from each peer
    /// without a gap. Followers hear only from their leader (raft sends
    /// nothing between followers), so only the leader can judge the
    /// cluster's contact; elsewhere the started-members checks apply alone.
    private func peerContact() -> PeerContact.View? {
        guard raftStatus().leader == memberID else { return nil }
        let contact = mailbox.peerContact.withLock { $0 }
        return PeerContact.View(contact: contact, now: environment.now(), healthInterval: ReconfigurationCheck.healthInterval)
    }

    /// MoveLeader (on the leader): hands leadership to `target`, a voting
    /// member, and returns once it leads — or etcd's transfer timeout after
    /// a request timeout.
    public func moveLeader(to target: UInt64) async throws {
        guard isLeader else { throw EtcdError.notLeader }
        guard let record = member(id: target), !record.isLearner else { throw EtcdError.badLeaderTransferee }
        if target == memberID { return }
        logger.info("leadership transfer starting", metadata: [
            "local-member-id": "\(String(memberID, radix: 16))", "transferee-member-id": "\(String(target, radix: 16))"])
        let deadline = environment.now() + requestTimeout
        requestLeaderTransfer(to: target)
        while raftStatus().leader != target {
            if environment.now() >= deadline { throw EtcdError.leaderTransferTimeout }
            try await Task.sleep(for: .milliseconds(config.heartbeatIntervalMilliseconds))
        }
        logger.info("leadership transfer finished", metadata: [
            "local-member-id": "\(String(memberID, radix: 16))", "new-leader-member-id": "\(String(target, radix: 16))"])
    }

    /// Asks raft to hand leadership to `target` (a no-op unless this member leads).
    package func requestLeaderTransfer(to target: UInt64) {
        mailbox.post { $0.transferTo = target }
    }

    /// What a member joining with `--initial-cluster-state existing` asks
    /// its peers for: the cluster id and the members.
    func clusterInfoJSON() -> Data {
        let members = membership.members.map { $0.json() }.joined(separator: ",")
        return Data(#"{"clusterID":\#(clusterID),"members":[\#(members)]}"#.utf8)
    }

    /// Parses `clusterInfoJSON()`.
    static func parseClusterInfo(_ data: Data) -> (clusterID: UInt64, members: [MemberRecord])? {
        struct Wire: Decodable {
            var clusterID: UInt64
            var members: [MemberRecord.Wire]
        }
        guard let wire = try? JSONDecoder().decode(Wire.self, from: data) else { return nil }
        return (wire.clusterID, wire.members.map(MemberRecord.init))
    }
}

extension EtcdError {
    public static let notLeader = EtcdError(.failedPrecondition, "etcdserver: not leader")
    public static let badLeaderTransferee = EtcdError(.failedPrecondition, "etcdserver: bad leader transferee")
    public static let leaderTransferTimeout = EtcdError(.unavailable, "etcdserver: request timed out, leader transfer took too long")
    public static let memberExists = EtcdError(.failedPrecondition, "etcdserver: member ID already exist")
    public static let peerURLExists = EtcdError(.failedPrecondition, "etcdserver: Peer URLs already exists")
    public static let memberNotFound = EtcdError(.notFound, "etcdserver: member not found")
    public static let memberRemoved = EtcdError(.failedPrecondition, "etcdserver: member was removed")
    public static let notLearner = EtcdError(.failedPrecondition, "etcdserver: can only promote a learner member")
    public static let learnerNotReady = EtcdError(.failedPrecondition, "etcdserver: can only promote a learner member which is in sync with leader")
    public static let notEnoughStartedMembers = EtcdError(.failedPrecondition, "etcdserver: re-configuration failed due to not enough started members")
    public static let unhealthy = EtcdError(.unavailable, "etcdserver: unhealthy cluster")
    public static let tooManyLearners = EtcdError(.failedPrecondition, "etcdserver: too many learner members in cluster")
}
