import EtcdProto

/// A snapshot marker as stored in the WAL (walpb.Snapshot): the raft index
/// and term of a snapshot, so that `WAL.open(dir:at:)` can find where to
/// start reading. The conf state is carried along when known (etcd >= 3.5
/// writes it; 3.4 does not).
public struct WALSnapshot: Sendable, Hashable, CustomStringConvertible {
    public var index: UInt64
    public var term: UInt64
    public var confState: Raftpb_ConfState?

    public init(index: UInt64 = 0, term: UInt64 = 0, confState: Raftpb_ConfState? = nil) {
        self.index = index
        self.term = term
        self.confState = confState
    }

    /// The marker describing a raft snapshot's metadata.
    public init(_ snapshot: Raftpb_Snapshot) {
        let metadata = snapshot.metadata
        self.init(
            index: metadata.index,
            term: metadata.term,
            confState: metadata.hasConfState ? metadata.confState : nil
        )
    }

    public var description: String { "WALSnapshot(index: \(index), term: \(term))" }

    init(proto: Walpb_Snapshot) {
        self.init(index: proto.index, term: proto.term, confState: proto.hasConfState ? proto.confState : nil)
    }

    /// The protobuf encoding of `proto`.
    var encoded: [UInt8] {
        // Generated messages without required fields always encode.
        (try? proto.serializedBytes()) ?? []
    }

    var proto: Walpb_Snapshot {
        var message = Walpb_Snapshot()
        // Set both scalars explicitly so they are encoded even when zero, as
        // etcd (gogoproto, non-nullable fields) encodes them.
        message.index = index
        message.term = term
        if let confState { message.confState = confState }
        return message
    }
}
