// Value types that mirror etcd's raftpb one-to-one, so that a protobuf layer
// can convert them field by field. Payloads are `Data` because that is what
// SwiftProtobuf uses for `bytes` fields: conversion is a reference copy.
import FoundationEssentials

/// Identifies a member. Zero means "nobody" (no leader, no vote).
public typealias NodeID = UInt64

/// The "no node" sentinel used for `lead`, `vote` and message senders.
public let noNode: NodeID = 0

/// Message kinds, numbered exactly as in raftpb.MessageType.
public enum MessageType: Int32, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case msgHup = 0
    case msgBeat = 1
    case msgProp = 2
    case msgApp = 3
    case msgAppResp = 4
    case msgVote = 5
    case msgVoteResp = 6
    case msgSnap = 7
    case msgHeartbeat = 8
    case msgHeartbeatResp = 9
    case msgUnreachable = 10
    case msgSnapStatus = 11
    case msgCheckQuorum = 12
    case msgTransferLeader = 13
    case msgTimeoutNow = 14
    case msgReadIndex = 15
    case msgReadIndexResp = 16
    case msgPreVote = 17
    case msgPreVoteResp = 18

    public var description: String {
        switch self {
        case .msgHup: "MsgHup"
        case .msgBeat: "MsgBeat"
        case .msgProp: "MsgProp"
        case .msgApp: "MsgApp"
        case .msgAppResp: "MsgAppResp"
        case .msgVote: "MsgVote"
        case .msgVoteResp: "MsgVoteResp"
        case .msgSnap: "MsgSnap"
        case .msgHeartbeat: "MsgHeartbeat"
        case .msgHeartbeatResp: "MsgHeartbeatResp"
        case .msgUnreachable: "MsgUnreachable"
        case .msgSnapStatus: "MsgSnapStatus"
        case .msgCheckQuorum: "MsgCheckQuorum"
        case .msgTransferLeader: "MsgTransferLeader"
        case .msgTimeoutNow: "MsgTimeoutNow"
        case .msgReadIndex: "MsgReadIndex"
        case .msgReadIndexResp: "MsgReadIndexResp"
        case .msgPreVote: "MsgPreVote"
        case .msgPreVoteResp: "MsgPreVoteResp"
        }
    }

    /// Messages a node generates for itself; they never cross the network.
    public var isLocal: Bool {
        switch self {
        case .msgHup, .msgBeat, .msgUnreachable, .msgSnapStatus, .msgCheckQuorum: true
        default: false
        }
    }

    /// Replies to something this node sent earlier.
    public var isResponse: Bool {
        switch self {
        case .msgAppResp, .msgVoteResp, .msgHeartbeatResp, .msgUnreachable, .msgPreVoteResp: true
        default: false
        }
    }

    /// The reply type that answers a (pre-)vote request.
    var voteResponse: MessageType {
        switch self {
        case .msgVote: .msgVoteResp
        case .msgPreVote: .msgPreVoteResp
        default: preconditionFailure("not a vote message: \(self)")
        }
    }
}

/// raftpb.EntryType.
public enum EntryType: Int32, Sendable, Hashable {
    case normal = 0
    case confChange = 1
    case confChangeV2 = 2
}

/// One log entry (raftpb.Entry).
public struct Entry: Sendable, Hashable {
    public var term: UInt64
    public var index: UInt64
    public var type: EntryType
    public var data: Data

    public init(term: UInt64 = 0, index: UInt64 = 0, type: EntryType = .normal, data: Data = Data()) {
        self.term = term
        self.index = index
        self.type = type
        self.data = data
    }

    /// Bytes counted against the uncommitted-size budget (payload only, as etcd does).
    @inlinable public var payloadSize: UInt64 { UInt64(data.count) }

    /// An estimate of the encoded size, used to cap message and Ready sizes.
    @inlinable public var approximateEncodedSize: UInt64 { UInt64(data.count) + 24 }

    /// True for entries that carry a membership change of either version.
    @inlinable public var isConfChange: Bool { type != .normal }
}

/// raftpb.HardState: what must be on stable storage before messages are sent.
public struct HardState: Sendable, Hashable {
    public var term: UInt64
    public var vote: NodeID
    public var commit: UInt64

    public init(term: UInt64 = 0, vote: NodeID = noNode, commit: UInt64 = 0) {
        self.term = term
        self.vote = vote
        self.commit = commit
    }

    public var isEmpty: Bool { self == HardState() }
}

/// raftpb.ConfState: the membership a snapshot (or a conf change) describes.
public struct ConfState: Sendable, Hashable {
    public var voters: [NodeID]
    public var learners: [NodeID]
    /// Voters of the outgoing half while in a joint configuration.
    public var votersOutgoing: [NodeID]
    /// Voters that become learners when the joint configuration is left.
    public var learnersNext: [NodeID]
    public var autoLeave: Bool

    public init(
        voters: [NodeID] = [], learners: [NodeID] = [], votersOutgoing: [NodeID] = [],
        learnersNext: [NodeID] = [], autoLeave: Bool = false
    ) {
        self.voters = voters
        self.learners = learners
        self.votersOutgoing = votersOutgoing
        self.learnersNext = learnersNext
        self.autoLeave = autoLeave
    }

    /// Compares two conf states ignoring the order of ids.
    public func isEquivalent(to other: ConfState) -> Bool {
        voters.sorted() == other.voters.sorted() && learners.sorted() == other.learners.sorted()
            && votersOutgoing.sorted() == other.votersOutgoing.sorted()
            && learnersNext.sorted() == other.learnersNext.sorted() && autoLeave == other.autoLeave
    }
}

/// raftpb.SnapshotMetadata.
public struct SnapshotMetadata: Sendable, Hashable {
    public var confState: ConfState
    public var index: UInt64
    public var term: UInt64

    public init(confState: ConfState = ConfState(), index: UInt64 = 0, term: UInt64 = 0) {
        self.confState = confState
        self.index = index
        self.term = term
    }
}

/// raftpb.Snapshot: application state up to `metadata.index`.
public struct Snapshot: Sendable, Hashable {
    public var data: Data
    public var metadata: SnapshotMetadata

    public init(data: Data = Data(), metadata: SnapshotMetadata = SnapshotMetadata()) {
        self.data = data
        self.metadata = metadata
    }

    /// etcd treats a snapshot at index 0 as "no snapshot".
    public var isEmpty: Bool { metadata.index == 0 }
}

/// raftpb.Message. Which fields matter depends on `type`; unused ones stay zero.
public struct Message: Sendable, Hashable {
    public var type: MessageType
    public var to: NodeID
    public var from: NodeID
    public var term: UInt64
    /// For MsgApp: the term of the entry at `index`. For a rejecting MsgAppResp:
    /// the follower's term at `rejectHint` (the fast back-off hint).
    public var logTerm: UInt64
    public var index: UInt64
    public var entries: [Entry]
    public var commit: UInt64
    public var snapshot: Snapshot?
    public var reject: Bool
    public var rejectHint: UInt64
    public var context: Data

    public init(
        type: MessageType, to: NodeID = noNode, from: NodeID = noNode, term: UInt64 = 0,
        logTerm: UInt64 = 0, index: UInt64 = 0, entries: [Entry] = [], commit: UInt64 = 0,
        snapshot: Snapshot? = nil, reject: Bool = false, rejectHint: UInt64 = 0, context: Data = Data()
    ) {
        self.type = type
        self.to = to
        self.from = from
        self.term = term
        self.logTerm = logTerm
        self.index = index
        self.entries = entries
        self.commit = commit
        self.snapshot = snapshot
        self.reject = reject
        self.rejectHint = rejectHint
        self.context = context
    }
}

/// raftpb.ConfChangeType.
public enum ConfChangeType: Int32, Sendable, Hashable {
    case addNode = 0
    case removeNode = 1
    case updateNode = 2
    case addLearnerNode = 3
}

/// raftpb.ConfChange: the original one-member-at-a-time change.
public struct ConfChange: Sendable, Hashable {
    public var id: UInt64
    public var type: ConfChangeType
    public var nodeID: NodeID
    public var context: Data

    public init(id: UInt64 = 0, type: ConfChangeType, nodeID: NodeID, context: Data = Data()) {
        self.id = id
        self.type = type
        self.nodeID = nodeID
        self.context = context
    }

    /// The equivalent V2 change (a simple change, never joint).
    public var asV2: ConfChangeV2 {
        ConfChangeV2(transition: .auto, changes: [ConfChangeSingle(type: type, nodeID: nodeID)], context: context)
    }
}

/// raftpb.ConfChangeSingle.
public struct ConfChangeSingle: Sendable, Hashable {
    public var type: ConfChangeType
    public var nodeID: NodeID

    public init(type: ConfChangeType, nodeID: NodeID) {
        self.type = type
        self.nodeID = nodeID
    }
}

/// raftpb.ConfChangeTransition: how a V2 change uses joint consensus.
public enum ConfChangeTransition: Int32, Sendable, Hashable {
    /// Simple change if possible, otherwise joint with automatic leave.
    case auto = 0
    /// Always joint; raft leaves the joint configuration by itself.
    case jointImplicit = 1
    /// Always joint; the application must propose an empty V2 change to leave.
    case jointExplicit = 2
}

/// raftpb.ConfChangeV2: several changes at once, possibly via joint consensus.
public struct ConfChangeV2: Sendable, Hashable {
    public var transition: ConfChangeTransition
    public var changes: [ConfChangeSingle]
    public var context: Data

    public init(transition: ConfChangeTransition = .auto, changes: [ConfChangeSingle] = [], context: Data = Data()) {
        self.transition = transition
        self.changes = changes
        self.context = context
    }

    /// Whether this change enters a joint configuration, and if so whether
    /// raft should leave it automatically once applied.
    public var enterJoint: (autoLeave: Bool, isJoint: Bool) {
        guard transition != .auto || changes.count > 1 else { return (false, false) }
        switch transition {
        case .auto, .jointImplicit: return (true, true)
        case .jointExplicit: return (false, true)
        }
    }

    /// An empty V2 change (context aside) is the request to leave a joint configuration.
    public var isLeaveJoint: Bool { transition == .auto && changes.isEmpty }
}

/// Either version of a membership change, as carried by proposals.
public enum AnyConfChange: Sendable, Hashable {
    case v1(ConfChange)
    case v2(ConfChangeV2)

    public var asV2: ConfChangeV2 {
        switch self {
        case .v1(let cc): cc.asV2
        case .v2(let cc): cc
        }
    }
}
