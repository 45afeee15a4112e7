import EtcdProto
import Foundation
import Raft

// Conversions between the Raft library's values and the raftpb messages the
// WAL stores. They copy field by field; `Data` payloads are shared, not copied.

extension Raftpb_Entry {
    init(_ entry: Raft.Entry) {
        self.init()
        term = entry.term
        index = entry.index
        type = Raftpb_EntryType(rawValue: Int(entry.type.rawValue)) ?? .entryNormal
        data = entry.data
    }
}

extension Raft.Entry {
    init(_ entry: Raftpb_Entry) {
        self.init(term: entry.term, index: entry.index, type: Raft.EntryType(rawValue: Int32(entry.type.rawValue)) ?? .normal, data: entry.data)
    }
}

extension Raftpb_HardState {
    init(_ state: Raft.HardState) {
        self.init()
        term = state.term
        vote = state.vote
        commit = state.commit
    }
}

extension Raft.HardState {
    init(_ state: Raftpb_HardState) {
        self.init(term: state.term, vote: state.vote, commit: state.commit)
    }
}

extension Raftpb_ConfState {
    init(_ state: Raft.ConfState) {
        self.init()
        voters = state.voters
        learners = state.learners
        votersOutgoing = state.votersOutgoing
        learnersNext = state.learnersNext
        autoLeave = state.autoLeave
    }
}

extension Raft.ConfState {
    init(_ state: Raftpb_ConfState) {
        self.init(voters: state.voters, learners: state.learners, votersOutgoing: state.votersOutgoing,
                  learnersNext: state.learnersNext, autoLeave: state.autoLeave)
    }
}

extension Raftpb_Snapshot {
    init(_ snapshot: Raft.Snapshot) {
        self.init()
        data = snapshot.data
        metadata.index = snapshot.metadata.index
        metadata.term = snapshot.metadata.term
        metadata.confState = Raftpb_ConfState(snapshot.metadata.confState)
    }
}

extension Raft.Snapshot {
    init(_ snapshot: Raftpb_Snapshot) {
        self.init(
            data: snapshot.data,
            metadata: SnapshotMetadata(
                confState: Raft.ConfState(snapshot.metadata.confState),
                index: snapshot.metadata.index,
                term: snapshot.metadata.term
            )
        )
    }
}

extension Raftpb_Message {
    init(_ message: Raft.Message) {
        self.init()
        type = Raftpb_MessageType(rawValue: Int(message.type.rawValue)) ?? .msgHup
        to = message.to
        from = message.from
        term = message.term
        logTerm = message.logTerm
        index = message.index
        if !message.entries.isEmpty { entries = message.entries.map(Raftpb_Entry.init) }
        commit = message.commit
        if let snapshot = message.snapshot { self.snapshot = Raftpb_Snapshot(snapshot) }
        reject = message.reject
        rejectHint = message.rejectHint
        if !message.context.isEmpty { context = message.context }
    }
}

extension Raft.Message {
    /// Nil for a message type this build does not know.
    init?(_ message: Raftpb_Message) {
        guard let type = Raft.MessageType(rawValue: Int32(message.type.rawValue)) else { return nil }
        self.init(
            type: type, to: message.to, from: message.from, term: message.term, logTerm: message.logTerm,
            index: message.index, entries: message.entries.map(Raft.Entry.init), commit: message.commit,
            snapshot: message.hasSnapshot ? Raft.Snapshot(message.snapshot) : nil,
            reject: message.reject, rejectHint: message.rejectHint, context: message.context)
    }
}
