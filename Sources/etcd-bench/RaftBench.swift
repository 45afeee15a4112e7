// `etcd-bench raft`: throughput of the pure Raft library, with no network,
// disk or server around it. An in-memory cluster (MemoryStorage, messages
// handed over directly) commits fixed-size proposals submitted in batches;
// the figure is committed proposals per second at the leader, plus
// messages, Readys and bytes per proposal so regressions in batching show.
import ArgumentParser
import FoundationEssentials
import Raft

struct RaftBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "raft",
        abstract: "Benchmark the Raft library: an in-memory cluster committing batched proposals."
    )

    @Option(help: "Number of proposals to commit.")
    var proposals: Int = 2_000_000

    @Option(help: "Payload size of each proposal, in bytes.")
    var payloadBytes: Int = 100

    @Option(help: "Proposals submitted together in one batch (one MsgProp).")
    var batch: Int = 512

    @Option(help: "Batches the leader may have outstanding (proposed, not yet committed).")
    var pipeline: Int = 4

    @Option(help: "Cluster size.")
    var nodes: Int = 3

    @Option(help: "Upper bound on the bytes of entries in one MsgApp.")
    var maxSizePerMsgBytes: UInt64 = 1 << 20

    @Option(help: "Maximum MsgApp in flight per follower.")
    var maxInflightMsgs: Int = 256

    @Flag(help: "Allocate a distinct payload per proposal (default: share one buffer, measuring raft alone).")
    var uniquePayloads = false

    func validate() throws {
        guard proposals > 0, batch > 0, pipeline > 0, nodes >= 1, payloadBytes >= 0 else {
            throw ValidationError("proposals, batch, pipeline and nodes must be positive")
        }
    }

    func run() throws {
        // Property-wrapper reads are slow; keep the hot loop on plain locals.
        let proposals = self.proposals
        let batch = self.batch
        let pipeline = self.pipeline
        let uniquePayloads = self.uniquePayloads
        let payloadBytes = self.payloadBytes
        var cluster = try RaftBenchCluster(size: nodes, maxSizePerMsgBytes: maxSizePerMsgBytes, maxInflightMsgs: maxInflightMsgs)
        try cluster.electFirstNode()

        let shared = Data(repeating: 0xAB, count: payloadBytes)
        var submitted = 0
        var batchPayloads: [Data] = []
        batchPayloads.reserveCapacity(batch)
        let clock = ContinuousClock()
        let start = clock.now
        let baseCommitted = cluster.committedProposals

        while cluster.committedProposals - baseCommitted < proposals {
            // Top up to `pipeline` outstanding batches at the leader, then
            // let the cluster run one round.
            while submitted < proposals && submitted - (cluster.committedProposals - baseCommitted) < pipeline * batch {
                let n = min(batch, proposals - submitted)
                batchPayloads.removeAll(keepingCapacity: true)
                for i in 0..<n {
                    if uniquePayloads {
                        var d = shared
                        d[0] = UInt8(truncatingIfNeeded: i)  // forces a copy
                        batchPayloads.append(d)
                    } else {
                        batchPayloads.append(shared)
                    }
                }
                try cluster.nodes[0].propose(batch: batchPayloads)
                submitted += n
            }
            try cluster.pump()
        }
        let elapsed = clock.now - start
        let seconds = elapsed.seconds
        let committed = cluster.committedProposals - baseCommitted
        let perProposal = { (x: Int) in Double(x) / Double(committed) }
        print("raft bench: \(nodes) nodes, \(payloadBytes)-byte proposals, batch \(batch), pipeline \(pipeline)")
        print("committed proposals:   \(committed) in \(formatted(seconds, 3)) s")
        print("throughput:            \(Int(Double(committed) / seconds)) proposals/s")
        print("messages per proposal: \(formatted(perProposal(cluster.messagesSent), 4))")
        print("readys per proposal:   \(formatted(perProposal(cluster.readys), 4))")
        print("entry bytes persisted per proposal (all nodes): \(formatted(perProposal(cluster.bytesPersisted), 1))")
    }

    private func formatted(_ x: Double, _ digits: Int) -> String {
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let r = (x * scale).rounded() / scale
        return "\(r)"
    }
}

/// The cluster driver: RawNodes over MemoryStorage, messages passed by hand.
struct RaftBenchCluster {
    var nodes: [RawNode] = []
    var storages: [MemoryStorage] = []
    var inboxes: [[Message]]
    var committedProposals = 0
    var messagesSent = 0
    var readys = 0
    var bytesPersisted = 0
    var appliedIndex: [UInt64]

    init(size: Int, maxSizePerMsgBytes: UInt64, maxInflightMsgs: Int) throws {
        let voters = (1...size).map { NodeID($0) }
        inboxes = Array(repeating: [], count: size)
        appliedIndex = Array(repeating: 0, count: size)
        for id in voters {
            let storage = MemoryStorage(confState: ConfState(voters: voters))
            var config = Config(id: id, electionTick: 10, heartbeatTick: 1, storage: storage)
            config.maxSizePerMsgBytes = maxSizePerMsgBytes
            config.maxCommittedSizePerReadyBytes = 64 << 20
            config.maxInflightMsgs = maxInflightMsgs
            storages.append(storage)
            nodes.append(try RawNode(config: config))
        }
    }

    mutating func electFirstNode() throws {
        try nodes[0].campaign()
        for _ in 0..<100 where nodes[0].role != .leader || !allCaughtUp {
            try pump()
        }
        guard nodes[0].role == .leader else { throw ValidationError("node 1 did not become leader") }
        committedProposals = 0
    }

    private var allCaughtUp: Bool { Set(appliedIndex).count == 1 }

    /// One round: every node processes its Ready, then every message is delivered.
    mutating func pump() throws {
        for i in nodes.indices where nodes[i].hasReady {
            let rd = nodes[i].ready()
            readys += 1
            if let snap = rd.snapshot { try storages[i].applySnapshot(snap) }
            if !rd.entries.isEmpty {
                try storages[i].append(rd.entries)
                for e in rd.entries { bytesPersisted += e.data.count }
            }
            if let hs = rd.hardState { storages[i].setHardState(hs) }
            messagesSent += rd.messages.count
            for m in rd.messages { inboxes[Int(m.to) - 1].append(m) }
            if let last = rd.committedEntries.last {
                if i == 0 {
                    for e in rd.committedEntries where e.type == .normal && !e.data.isEmpty { committedProposals += 1 }
                }
                appliedIndex[i] = last.index
            }
            nodes[i].advance(rd)
            // Keep memory bounded: drop log prefixes every node has applied.
            let floor = appliedIndex.min() ?? 0
            if floor > (try storages[i].firstIndex()) + 200_000 {
                try storages[i].compact(floor - 1_000)
            }
        }
        for i in nodes.indices where !inboxes[i].isEmpty {
            let inbox = inboxes[i]
            inboxes[i].removeAll(keepingCapacity: true)
            for m in inbox { try nodes[i].step(m) }
        }
    }
}
