// A deterministic in-process cluster of RawNodes over a simulated network.
// The test decides which message is delivered when; messages can be dropped,
// duplicated, reordered, and links cut. A crash throws away a node's memory;
// a restart rebuilds it from what its Readys persisted (MemoryStorage holds
// entries, hard state and snapshot).
//
// Safety checks run as the cluster evolves and record violations in
// `violations` (the tests assert it stays empty):
//   - election safety: at most one leader per term;
//   - log matching: an (index, term) pair always names the same entry with
//     the same predecessor term, on every node;
//   - leader completeness: a new leader's log holds every committed entry;
//   - state machine safety: no two nodes apply different entries at an index,
//     and a restarted node re-applies exactly what it applied before.
import FoundationEssentials
@testable import Raft

struct SimRandom {
    var generator: SplitMix64
    init(seed: UInt64) { generator = SplitMix64(seed: seed) }
    mutating func int(_ upperBound: Int) -> Int { Int.random(in: 0..<upperBound, using: &generator) }
    mutating func chance(_ percent: Int) -> Bool { int(100) < percent }
}

final class SimNode {
    let id: NodeID
    let storage: MemoryStorage
    var node: RawNode?
    /// Membership as of `appliedIndex` (what a snapshot must record).
    var confState: ConfState
    var appliedIndex: UInt64 = 0
    /// Entries this node applied, by index (the "state machine").
    var applied: [UInt64: Entry] = [:]

    init(id: NodeID, storage: MemoryStorage, confState: ConfState) {
        self.id = id
        self.storage = storage
        self.confState = confState
    }

    var isUp: Bool { node != nil }
}

struct SimOptions {
    var preVote = false
    var checkQuorum = false
    var electionTick = 10
    var heartbeatTick = 1
    var maxSizePerMsgBytes: UInt64 = 1 << 20
    var maxInflightMsgs = 256
    var stepDownOnRemoval = false
}

final class SimulatedCluster {
    var nodes: [SimNode] = []  // nodes[i].id == i + 1
    var pool: [Message] = []
    /// Directed links that drop everything: (from, to).
    var cut: Set<[NodeID]> = []
    let options: SimOptions
    var seedBase: UInt64

    // Safety bookkeeping.
    var violations: [String] = []
    var leaderOfTerm: [UInt64: NodeID] = [:]
    var entryIdentity: [[UInt64]: (data: Data, prevTerm: UInt64)] = [:]  // [index, term]
    var appliedGlobally: [UInt64: Entry] = [:]
    var highestCommitted: UInt64 = 0
    var restarts = 0
    /// Outstanding read requests: context -> highest index known committed
    /// (applied anywhere) when the request was made. A linearizable read
    /// must be served at an index at least that high.
    var pendingReads: [Data: UInt64] = [:]
    var readsServed = 0
    private var readCounter = 0

    init(voters: [NodeID], learners: [NodeID] = [], options: SimOptions = SimOptions(), seed: UInt64) {
        self.options = options
        self.seedBase = seed
        let all = (voters + learners).sorted()
        let cs = ConfState(voters: voters, learners: learners)
        for id in 1...(all.max() ?? 0) {
            let storage = MemoryStorage(confState: cs)
            nodes.append(SimNode(id: id, storage: storage, confState: cs))
        }
        for n in nodes { start(n) }
    }

    func node(_ id: NodeID) -> SimNode { nodes[Int(id) - 1] }
    var ids: [NodeID] { nodes.map(\.id) }

    func config(for n: SimNode) -> Config {
        var c = Config(id: n.id, electionTick: options.electionTick, heartbeatTick: options.heartbeatTick, storage: n.storage)
        c.preVote = options.preVote
        c.checkQuorum = options.checkQuorum
        c.maxSizePerMsgBytes = options.maxSizePerMsgBytes
        c.maxInflightMsgs = options.maxInflightMsgs
        c.stepDownOnRemoval = options.stepDownOnRemoval
        c.randomSeed = seedBase &* 31 &+ n.id &+ UInt64(restarts) &* 1_000_003
        return c
    }

    /// Boots (or reboots) a node from its storage. The application state
    /// survives (it is durable in a real system) but raft only knows the
    /// snapshot's membership, so entries after the snapshot are re-applied,
    /// conf changes included.
    func start(_ n: SimNode) {
        restarts += 1
        var c = config(for: n)
        let snapIndex = n.storage.currentSnapshot.metadata.index
        c.applied = snapIndex
        n.appliedIndex = snapIndex
        n.confState = n.storage.currentSnapshot.metadata.confState
        do {
            n.node = try RawNode(config: c)
        } catch {
            violations.append("node \(n.id) failed to start: \(error)")
        }
    }

    func crash(_ id: NodeID) {
        node(id).node = nil
        var kept: [Message] = []
        for m in pool {
            if m.to == id { reportSnapshotIfNeeded(m, delivered: false) } else { kept.append(m) }
        }
        pool = kept
    }

    /// Loses a message in transit; the transport tells the sender if it
    /// was a snapshot, as a real one would.
    func drop(at index: Int) {
        let m = pool.remove(at: index)
        reportSnapshotIfNeeded(m, delivered: false)
    }

    func restart(_ id: NodeID) {
        let n = node(id)
        guard !n.isUp else { return }
        start(n)
    }

    func isolate(_ id: NodeID) {
        for other in ids where other != id {
            cut.insert([id, other])
            cut.insert([other, id])
        }
    }

    func partition(_ groupA: Set<NodeID>) {
        cut.removeAll()
        for a in ids {
            for b in ids where groupA.contains(a) != groupA.contains(b) { cut.insert([a, b]) }
        }
    }

    func heal() { cut.removeAll() }

    // MARK: driving

    func tick(_ id: NodeID) { node(id).node?.tick() }

    func tickAll() { for n in nodes { n.node?.tick() } }

    /// Carries out one Ready of a node: persist, check, queue messages,
    /// apply, advance.
    @discardableResult
    func processReady(_ id: NodeID) -> Bool {
        let n = node(id)
        guard var raw = n.node, raw.hasReady else { return false }
        let rd = raw.ready()
        if let ss = rd.softState, ss.role == .leader {
            recordLeader(id: id, term: raw.term)
            checkLeaderCompleteness(n, raw: raw)
        }
        if let snap = rd.snapshot {
            do { try n.storage.applySnapshot(snap) } catch { violations.append("node \(id) applySnapshot: \(error)") }
            n.appliedIndex = snap.metadata.index
            n.confState = snap.metadata.confState
        }
        do { try n.storage.append(rd.entries) } catch { violations.append("node \(id) append: \(error)") }
        if let hs = rd.hardState { n.storage.setHardState(hs) }
        checkLogMatching(n, rd.entries)
        for m in rd.messages { pool.append(m) }
        for rs in rd.readStates {
            if let floor = pendingReads[rs.requestContext], rs.index < floor {
                violations.append("read index: node \(id) served a read at \(rs.index) but \(floor) was already committed")
            }
            readsServed += 1
        }
        for e in rd.committedEntries {
            applyEntry(n, &raw, e)
        }
        raw.advance(rd)
        n.node = raw
        return true
    }

    private func applyEntry(_ n: SimNode, _ raw: inout RawNode, _ e: Entry) {
        if let before = n.applied[e.index], before != e {
            violations.append("node \(n.id) re-applied index \(e.index) differently")
        }
        if let other = appliedGlobally[e.index] {
            if other != e { violations.append("state machine safety: index \(e.index) applied as term \(other.term) and term \(e.term) (node \(n.id))") }
        } else {
            appliedGlobally[e.index] = e
        }
        highestCommitted = max(highestCommitted, e.index)
        n.applied[e.index] = e
        n.appliedIndex = e.index
        if e.isConfChange {
            do {
                n.confState = try raw.applyConfChange(entry: e)
            } catch {
                violations.append("node \(n.id) could not apply conf change at \(e.index): \(error)")
            }
        }
    }

    func processAllReadys() {
        for n in nodes { processReady(n.id) }
    }

    /// Delivers (or drops) the message at `index` of the pool.
    func deliver(at index: Int) {
        let m = pool.remove(at: index)
        guard !cut.contains([m.from, m.to]), var target = node(m.to).node else {
            reportSnapshotIfNeeded(m, delivered: false)
            return
        }
        _ = try? target.step(m)
        node(m.to).node = target
        reportSnapshotIfNeeded(m, delivered: true)
    }

    func reportSnapshotIfNeeded(_ m: Message, delivered: Bool) {
        guard m.type == .msgSnap, var sender = node(m.from).node else { return }
        sender.reportSnapshot(m.to, status: delivered ? .finish : .failure)
        node(m.from).node = sender
    }

    /// Delivers everything in order until quiet (bounded), with Readys
    /// processed in between: the "reliable network" mode.
    func stabilize(maxRounds: Int = 200) {
        for _ in 0..<maxRounds {
            processAllReadys()
            if pool.isEmpty { return }
            while !pool.isEmpty { deliver(at: 0) }
        }
    }

    func propose(_ id: NodeID, _ data: Data) -> Bool {
        guard var raw = node(id).node else { return false }
        defer { node(id).node = raw }
        do { try raw.propose(data) } catch { return false }
        return true
    }

    /// Issues a linearizable read request at node `id`.
    func readIndex(_ id: NodeID) {
        guard var raw = node(id).node else { return }
        readCounter += 1
        let ctx = Data("read-\(readCounter)".utf8)
        pendingReads[ctx] = highestCommitted
        raw.readIndex(ctx)
        node(id).node = raw
    }

    func transferLeadership(at id: NodeID, to transferee: NodeID) {
        guard var raw = node(id).node else { return }
        raw.transferLeadership(to: transferee)
        node(id).node = raw
    }

    /// Makes `id` campaign and lets the election play out on a reliable network.
    func campaign(_ id: NodeID) {
        guard var raw = node(id).node else { return }
        try? raw.campaign()
        node(id).node = raw
        stabilize()
    }

    func propose(_ id: NodeID, _ text: String) -> Bool { propose(id, Data(text.utf8)) }

    func proposeConfChange(_ id: NodeID, _ cc: ConfChangeV2) -> Bool {
        guard var raw = node(id).node else { return false }
        defer { node(id).node = raw }
        do { try raw.proposeConfChange(cc) } catch { return false }
        return true
    }

    /// Whether `data` has been applied by node `id`.
    func hasApplied(_ id: NodeID, _ data: String) -> Bool {
        node(id).applied.values.contains { $0.data == Data(data.utf8) }
    }

    var leaders: [NodeID] {
        nodes.compactMap { n in n.node?.role == .leader ? n.id : nil }
    }

    /// The leader with the highest term, if any.
    var currentLeader: NodeID? {
        nodes.filter { $0.node?.role == .leader }.max { $0.node!.term < $1.node!.term }?.id
    }

    // MARK: invariants

    func recordLeader(id: NodeID, term: UInt64) {
        if let other = leaderOfTerm[term], other != id {
            violations.append("election safety: nodes \(other) and \(id) both led term \(term)")
        }
        leaderOfTerm[term] = id
    }

    /// Checks every live node; cheap enough to run after every step.
    func checkInvariants() {
        for n in nodes {
            guard let raw = n.node else { continue }
            if raw.role == .leader { recordLeader(id: n.id, term: raw.term) }
            let st = raw.status()
            if st.applied > st.hardState.commit { violations.append("node \(n.id) applied \(st.applied) > commit \(st.hardState.commit)") }
        }
    }

    private func checkLogMatching(_ n: SimNode, _ entries: [Entry]) {
        for e in entries {
            let prevTerm = (try? n.storage.term(e.index - 1)) ?? UInt64.max
            let key = [e.index, e.term]
            if let known = entryIdentity[key] {
                if known.data != e.data {
                    violations.append("log matching: (\(e.index), \(e.term)) has different data on node \(n.id)")
                }
                if prevTerm != .max && known.prevTerm != .max && known.prevTerm != prevTerm {
                    violations.append("log matching: (\(e.index), \(e.term)) follows term \(known.prevTerm) elsewhere but \(prevTerm) on node \(n.id)")
                }
            } else {
                entryIdentity[key] = (e.data, prevTerm)
            }
        }
    }

    private func checkLeaderCompleteness(_ n: SimNode, raw: RawNode) {
        let log = raw.raft.log
        let first = log.firstIndex
        guard highestCommitted >= first else { return }
        for index in first...highestCommitted {
            guard let committed = appliedGlobally[index] else { continue }
            let t = log.termOrZero(index)
            if t != committed.term {
                violations.append("leader completeness: leader \(n.id) (term \(raw.term)) has term \(t) at committed index \(index), expected \(committed.term)")
            }
        }
    }
}
