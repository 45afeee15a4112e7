// Helpers for driving the inner state machine (RaftCore) directly, in the
// style of the Raft paper's rules: build a node, feed it messages, read what
// it sent. `TestNetwork` delivers messages between cores synchronously with
// optional drops, cuts and ignored message types.
import FoundationEssentials
@testable import Raft

func makeStorage(voters: [NodeID], learners: [NodeID] = []) -> MemoryStorage {
    MemoryStorage(confState: ConfState(voters: voters, learners: learners))
}

func makeConfig(_ id: NodeID, election: Int = 10, heartbeat: Int = 1, storage: MemoryStorage) -> Config {
    var c = Config(id: id, electionTick: election, heartbeatTick: heartbeat, storage: storage)
    c.maxInflightMsgs = 256
    c.maxSizePerMsgBytes = .max
    return c
}

func newTestRaft(
    _ id: NodeID, peers: [NodeID], learners: [NodeID] = [], election: Int = 10, heartbeat: Int = 1,
    storage: MemoryStorage? = nil, configure: (inout Config) -> Void = { _ in }
) -> RaftCore {
    let s = storage ?? makeStorage(voters: peers, learners: learners)
    var c = makeConfig(id, election: election, heartbeat: heartbeat, storage: s)
    configure(&c)
    return try! RaftCore(config: c)
}

extension RaftCore {
    /// Drains and returns the outgoing messages.
    mutating func readMessages() -> [Message] {
        let out = messages
        messages = []
        return out
    }

    /// Persists the unstable log into `storage` as an application would,
    /// then marks it stable.
    mutating func persist(into storage: MemoryStorage) {
        if let snap = log.unstable.snapshot {
            try! storage.applySnapshot(snap)
            log.stableSnapshotTo(index: snap.metadata.index)
        }
        let ents = log.unstableEntries
        try! storage.append(ents)
        if let last = ents.last { log.stableTo(index: last.index, term: last.term) }
    }

    /// Ticks until an election or heartbeat timeout fires.
    mutating func tick(times: Int) { for _ in 0..<times { tick() } }

    /// Forces the randomised timeout, for tests that need exact timing.
    mutating func setRandomizedElectionTimeout(_ v: Int) { randomizedElectionTimeout = v }

    var logEntries: [Entry] { log.allEntries() }
}

func entry(_ index: UInt64, _ term: UInt64, _ data: String = "") -> Entry {
    Entry(term: term, index: index, data: Data(data.utf8))
}

func msg(_ type: MessageType, from: NodeID, to: NodeID, term: UInt64 = 0, logTerm: UInt64 = 0, index: UInt64 = 0,
         entries: [Entry] = [], commit: UInt64 = 0, reject: Bool = false, rejectHint: UInt64 = 0, context: Data = Data()) -> Message {
    Message(type: type, to: to, from: from, term: term, logTerm: logTerm, index: index, entries: entries,
            commit: commit, reject: reject, rejectHint: rejectHint, context: context)
}

func propMsg(_ id: NodeID, _ data: String) -> Message {
    Message(type: .msgProp, to: id, from: id, entries: [Entry(data: Data(data.utf8))])
}

func hup(_ id: NodeID) -> Message { Message(type: .msgHup, to: id, from: id) }

/// A synchronous network of RaftCores: `send` delivers a message and every
/// message it causes, breadth first, until the network is quiet.
struct TestNetwork {
    var peers: [NodeID: RaftCore] = [:]
    var storages: [NodeID: MemoryStorage] = [:]
    /// Percent chance of dropping per directed link.
    var dropPercent: [[NodeID]: Int] = [:]
    var ignored: Set<MessageType> = []
    var random = SplitMix64(seed: 7)
    /// Every message delivered, in order (for assertions on traffic).
    var delivered: [Message] = []
    var msgHook: ((Message) -> Bool)?

    /// Builds a network of `ids`, each with a fresh node unless given.
    init(_ ids: [NodeID], configure: (inout Config) -> Void = { _ in }, nodes: [NodeID: RaftCore] = [:]) {
        for id in ids {
            if let n = nodes[id] {
                peers[id] = n
                storages[id] = n.log.storage as? MemoryStorage
            } else {
                let s = makeStorage(voters: ids)
                storages[id] = s
                peers[id] = newTestRaft(id, peers: ids, storage: s, configure: configure)
            }
        }
    }

    mutating func send(_ msgs: Message...) { send(msgs) }

    mutating func send(_ msgs: [Message]) {
        var queue = msgs[...]
        var rounds = 0
        while let m = queue.popFirst() {
            rounds += 1
            precondition(rounds < 100_000, "network did not quiesce")
            guard peers[m.to] != nil else { continue }
            delivered.append(m)
            _ = try? peers[m.to]!.step(m)
            queue.append(contentsOf: filter(peers[m.to]!.readMessages()))
        }
    }

    private mutating func filter(_ msgs: [Message]) -> [Message] {
        msgs.filter { m in
            if ignored.contains(m.type) { return false }
            if m.type == .msgHup { preconditionFailure("unexpected msgHup") }
            if let p = dropPercent[[m.from, m.to]], Int.random(in: 0..<100, using: &random) < p { return false }
            if let hook = msgHook, !hook(m) { return false }
            return true
        }
    }

    mutating func drop(from: NodeID, to: NodeID, percent: Int) { dropPercent[[from, to]] = percent }

    mutating func cut(_ a: NodeID, _ b: NodeID) {
        drop(from: a, to: b, percent: 100)
        drop(from: b, to: a, percent: 100)
    }

    mutating func isolate(_ id: NodeID) {
        for other in peers.keys where other != id { cut(id, other) }
    }

    mutating func ignore(_ t: MessageType) { ignored.insert(t) }

    mutating func recover() {
        dropPercent = [:]
        ignored = []
    }

    subscript(id: NodeID) -> RaftCore {
        get { peers[id]! }
        set { peers[id] = newValue }
    }
}
