// The RawNode API: Ready/advance contract, restart from persisted state,
// input validation and status.
import FoundationEssentials
import Testing
@testable import Raft

/// Processes Readys of a single node as an application would.
func drainSingle(_ node: inout RawNode, _ storage: MemoryStorage, applied: inout [Entry]) throws {
    while node.hasReady {
        let rd = node.ready()
        if let s = rd.snapshot { try storage.applySnapshot(s) }
        try storage.append(rd.entries)
        if let hs = rd.hardState { storage.setHardState(hs) }
        for e in rd.committedEntries {
            if e.isConfChange { try node.applyConfChange(entry: e) }
            applied.append(e)
        }
        node.advance(rd)
    }
}

@Suite struct RawNodeTests {
    @Test func singleNodeProposeAndCommit() throws {
        let storage = makeStorage(voters: [1])
        var node = try RawNode(config: makeConfig(1, storage: storage))
        var applied: [Entry] = []
        try node.campaign()
        let rd = node.ready()
        #expect(rd.softState == SoftState(lead: 1, role: .leader))
        #expect(rd.hardState?.term == 1 && rd.hardState?.vote == 1)
        #expect(rd.mustSync)
        try storage.append(rd.entries)
        storage.setHardState(rd.hardState!)
        node.advance(rd)
        try node.propose(Data("hello".utf8))
        try drainSingle(&node, storage, applied: &applied)
        #expect(applied.map(\.data).contains(Data("hello".utf8)))
        #expect(node.status().applied == storage.hardState.commit)
        #expect(!node.hasReady)
    }

    // Restarting from storage restores term, vote, commit, log and config,
    // and does not hand out entries up to Config.applied again.
    @Test func restartFromPersistedState() throws {
        let storage = makeStorage(voters: [1])
        var node = try RawNode(config: makeConfig(1, storage: storage))
        var applied: [Entry] = []
        try node.campaign()
        try drainSingle(&node, storage, applied: &applied)
        for i in 0..<5 { try node.propose(Data("e\(i)".utf8)) }
        try drainSingle(&node, storage, applied: &applied)
        let hs = storage.hardState

        var cfg = makeConfig(1, storage: storage)
        cfg.applied = 3
        var restarted = try RawNode(config: cfg)
        #expect(restarted.status().hardState == hs)
        #expect(restarted.role == .follower)
        var reapplied: [Entry] = []
        try drainSingle(&restarted, storage, applied: &reapplied)
        #expect(reapplied.map(\.index) == Array(4...hs.commit))
        // It can lead again and keep going.
        try restarted.campaign()
        try drainSingle(&restarted, storage, applied: &reapplied)
        #expect(restarted.role == .leader)
        #expect(restarted.term == hs.term + 1)
        try restarted.propose(Data("after".utf8))
        try drainSingle(&restarted, storage, applied: &reapplied)
        #expect(reapplied.last?.data == Data("after".utf8))
    }

    // Unpersisted entries are lost on a crash, and the node does not claim
    // to have them after restart.
    @Test func restartLosesOnlyUnpersistedState() throws {
        let storage = makeStorage(voters: [1, 2, 3])
        var node = try RawNode(config: makeConfig(1, storage: storage))
        try node.step(msg(.msgApp, from: 2, to: 1, term: 1, logTerm: 0, index: 0, entries: [entry(1, 1, "a")], commit: 0))
        let rd = node.ready()
        try storage.append(rd.entries)
        storage.setHardState(rd.hardState!)
        node.advance(rd)
        // A second append arrives but the node crashes before persisting it.
        try node.step(msg(.msgApp, from: 2, to: 1, term: 1, logTerm: 1, index: 1, entries: [entry(2, 1, "b")], commit: 1))
        #expect(node.hasReady)
        let restarted = try RawNode(config: makeConfig(1, storage: storage))
        #expect(restarted.raft.log.lastIndex == 1)
        #expect(restarted.term == 1)
    }

    @Test func stepRejectsLocalAndUnknownPeerMessages() throws {
        var node = try RawNode(config: makeConfig(1, storage: makeStorage(voters: [1, 2])))
        #expect(throws: RaftError.stepLocalMessage) { try node.step(Message(type: .msgHup, from: 1)) }
        #expect(throws: RaftError.stepLocalMessage) { try node.step(Message(type: .msgBeat, from: 1)) }
        #expect(throws: RaftError.stepPeerNotFound) { try node.step(Message(type: .msgAppResp, from: 9, term: 1)) }
    }

    @Test func invalidConfigsRejected() {
        let s = makeStorage(voters: [1])
        #expect(throws: RaftError.self) { try RawNode(config: Config(id: 0, storage: s)) }
        #expect(throws: RaftError.self) { try RawNode(config: Config(id: 1, electionTick: 1, heartbeatTick: 1, storage: s)) }
        var c = Config(id: 1, storage: s)
        c.readOnlyOption = .leaseBased
        #expect(throws: RaftError.self) { try RawNode(config: c) }
    }

    @Test func proposeWithoutLeaderThrows() throws {
        var node = try RawNode(config: makeConfig(1, storage: makeStorage(voters: [1, 2, 3])))
        #expect(throws: RaftError.proposalDropped) { try node.propose(Data("x".utf8)) }
    }

    // Committed entries are capped per Ready by size.
    @Test func committedEntriesArePaginated() throws {
        let storage = makeStorage(voters: [1])
        var cfg = makeConfig(1, storage: storage)
        cfg.maxCommittedSizePerReadyBytes = 500
        var node = try RawNode(config: cfg)
        var applied: [Entry] = []
        try node.campaign()
        try drainSingle(&node, storage, applied: &applied)
        try node.propose(batch: Array(repeating: Data(repeating: 1, count: 100), count: 20))
        var sizes: [Int] = []
        while node.hasReady {
            let rd = node.ready()
            try storage.append(rd.entries)
            if let hs = rd.hardState { storage.setHardState(hs) }
            if !rd.committedEntries.isEmpty { sizes.append(rd.committedEntries.count) }
            node.advance(rd)
        }
        #expect(sizes.count > 1)
        #expect(sizes.reduce(0, +) == 20)
    }

    @Test func statusReportsProgressOnLeader() throws {
        let cluster = SimulatedCluster(voters: [1, 2, 3], seed: 3)
        for _ in 0..<30 {
            cluster.tickAll()
            cluster.stabilize()
        }
        let leader = try #require(cluster.currentLeader)
        let st = cluster.node(leader).node!.status()
        #expect(st.progress.count == 3)
        #expect(st.progress.values.allSatisfy { $0.state == .replicate })
        let follower = cluster.ids.first { $0 != leader }!
        #expect(cluster.node(follower).node!.status().progress.isEmpty)
    }

    // Bootstrap writes an initial membership for a new cluster.
    @Test func bootstrapNewCluster() throws {
        let storage = MemoryStorage()
        try RawNode.bootstrap(storage, voters: [1])
        var node = try RawNode(config: makeConfig(1, storage: storage))
        var applied: [Entry] = []
        try node.campaign()
        try drainSingle(&node, storage, applied: &applied)
        #expect(node.role == .leader)
        #expect(node.status().config.voters.incoming.ids == [1])
    }
}
