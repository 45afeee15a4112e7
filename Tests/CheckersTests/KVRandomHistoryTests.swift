import Checkers
import Testing

@Suite("KV model: generated histories")
struct KVRandomHistoryTests {
    static let seeds: [UInt64] = Array(1...60)

    @Test func simulatedHistoriesAreLinearizable() {
        var failures: [String] = []
        for seed in Self.seeds {
            let sim = KVSimulation(operations: 150).run(seed: seed)
            let result = checkKV(sim.ops)
            if !result.isLinearizable { failures.append("seed \(seed): \(result.explanation ?? "")") }
        }
        #expect(failures.isEmpty, "\(failures.prefix(3))")
    }

    @Test func simulatedHistoriesWithTimeoutsAreLinearizable() {
        var failures: [String] = []
        for seed in Self.seeds {
            let sim = KVSimulation(operations: 120, pendingProbability: 0.08).run(seed: 1000 + seed)
            let result = checkKV(sim.ops)
            if !result.isLinearizable { failures.append("seed \(seed): \(result.explanation ?? "")") }
        }
        #expect(failures.isEmpty, "\(failures.prefix(3))")
    }

    /// Any sub-history of a linearizable history passes the gap-tolerant model (the
    /// property shrinking and partitioning rely on).
    @Test func subhistoriesPassTheGapTolerantModel() {
        var failures: [String] = []
        for seed in UInt64(1)...25 {
            let sim = KVSimulation(operations: 100, pendingProbability: 0.05).run(seed: 2000 + seed)
            var rng = SeededRNG(seed: seed)
            for _ in 0..<4 {
                let keep = Double.random(in: 0.2...0.8, using: &rng)
                let forget = Double.random(in: 0...0.3, using: &rng)
                let sub = sim.ops.filter { _ in Double.random(in: 0..<1, using: &rng) < keep }
                    .map { Double.random(in: 0..<1, using: &rng) < forget ? $0.asPending() : $0 }
                let result = checkKV(sub, model: KVModel(revisions: .gapsAllowed))
                if !result.isLinearizable { failures.append("seed \(seed): \(result.explanation ?? "")") }
            }
        }
        #expect(failures.isEmpty, "\(failures.prefix(2))")
    }

    /// Forgetting outcomes keeps a linearizable history linearizable (exercises the
    /// pruning of unknown-outcome writes: claimed revisions, pinned values, last
    /// observable revision).
    @Test func forgettingOutcomesKeepsHistoriesLinearizable() {
        var failures: [String] = []
        for seed in UInt64(1)...30 {
            let sim = KVSimulation(operations: 150, pendingProbability: 0.03).run(seed: 4000 + seed)
            var rng = SeededRNG(seed: seed)
            let forget = Double.random(in: 0.05...0.3, using: &rng)
            let ops = sim.ops.map { Double.random(in: 0..<1, using: &rng) < forget ? $0.asPending() : $0 }
            let result = checkKV(ops)
            if !result.isLinearizable { failures.append("seed \(seed): \(result.explanation ?? "")") }
        }
        #expect(failures.isEmpty, "\(failures.prefix(2))")
    }

    /// Replaces one completed single-key read by a stale one. Variant A: an older
    /// snapshot with its own header revision, older than a write that completed before
    /// the read began. Variant B: the current header revision with an older record.
    static func plantStaleRead(_ sim: SimulatedKVHistory, rng: inout SeededRNG, variantB: Bool) -> (ops: [KVOp], id: Int)? {
        let candidates = sim.ops.indices.filter { i in
            guard case .range(let r) = sim.ops[i].input, r.isSingleKey, sim.ops[i].output != nil else { return false }
            return true
        }.shuffled(using: &rng)
        for i in candidates {
            var ops = sim.ops
            let op = ops[i]
            guard case .range(let r) = op.input, let out = op.output else { continue }
            if variantB {
                let current = sim.snapshots[Int(out.revision) - 1].get(r.key)
                let older = sim.snapshots[..<Int(out.revision - 1)].reversed().map { $0.get(r.key) }
                guard let stale = older.first(where: { $0 != current }) else { continue }
                ops[i].output = .range(revision: out.revision, kvs: stale.map { [$0] } ?? [])
            } else {
                let done = sim.latestCompletedWrite(before: op.invoke)
                guard done >= 2 else { continue }
                let h = Int64.random(in: 1...(done - 1), using: &rng)
                ops[i].output = .range(revision: h, kvs: sim.snapshots[Int(h) - 1].range(r))
            }
            return (ops, op.id!)
        }
        return nil
    }

    @Test func staleReadMutationsAreRejected() {
        var planted = 0, rejected = 0
        var misses: [String] = []
        for seed in Self.seeds {
            let sim = KVSimulation(operations: 150).run(seed: 500 + seed)
            var rng = SeededRNG(seed: seed)
            for variantB in [false, true] {
                guard let (ops, id) = Self.plantStaleRead(sim, rng: &rng, variantB: variantB) else { continue }
                planted += 1
                // Detection only: no shrinking.
                let checker = LinearizabilityChecker(model: KVModel(), shrinkTimeout: .zero)
                if checker.check(ops, timeout: .seconds(10)).isNotLinearizable {
                    rejected += 1
                } else {
                    misses.append("seed \(seed) variantB \(variantB) op #\(id)")
                }
            }
        }
        #expect(planted >= 100)
        #expect(Double(rejected) >= 0.95 * Double(planted), "\(rejected)/\(planted): \(misses.prefix(5))")
    }

    @Test func minimalSubhistoryOfPlantedStaleReadIsSmall() throws {
        for seed in UInt64(1)...12 {
            let sim = KVSimulation(operations: 200).run(seed: 900 + seed)
            var rng = SeededRNG(seed: seed)
            for variantB in [false, true] {
                let (ops, id) = try #require(Self.plantStaleRead(sim, rng: &rng, variantB: variantB))
                // Shrinking is bounded by wall time; a loaded machine (the
                // full suite on two cores) must not cut it short here.
                let result = LinearizabilityChecker(model: KVModel(), shrinkTimeout: .seconds(120)).check(ops, timeout: .seconds(60))
                let minimal = try #require(result.minimalFailingSubhistory, "seed \(seed)")
                #expect(minimal.contains { $0.id == id }, "seed \(seed) B=\(variantB): \(result.explanation ?? "")")
                #expect(minimal.count <= 4, "seed \(seed) B=\(variantB): \(result.explanation ?? "")")
            }
        }
    }

    @Test func largeConcurrentHistoryDecidesQuickly() {
        let sim = KVSimulation(clients: 8, operations: 2_000).run(seed: 42)
        let clock = ContinuousClock()
        let start = clock.now
        let result = checkKV(sim.ops, timeout: .seconds(20))
        let elapsed = clock.now - start
        #expect(result.isLinearizable, "\(result.explanation ?? "")")
        print("2,000-op KV history (8 clients) decided in \(elapsed)")
        // A stale read planted near the end of it is found too.
        var rng = SeededRNG(seed: 3)
        if let (ops, _) = Self.plantStaleRead(sim, rng: &rng, variantB: false) {
            let checker = LinearizabilityChecker(model: KVModel(), shrinkTimeout: .seconds(3))
            let bad = checker.check(ops, timeout: .seconds(20))
            #expect(bad.isNotLinearizable)
        }
    }

    @Test func largeHistoryWithTimeoutsDecides() {
        // 2% of the operations time out (half of those take effect).
        let sim = KVSimulation(clients: 8, operations: 2_000, pendingProbability: 0.02).run(seed: 43)
        let clock = ContinuousClock()
        let start = clock.now
        let result = checkKV(sim.ops, timeout: .seconds(20))
        #expect(result.isLinearizable, "\(result.explanation ?? "")")
        print("2,000-op KV history with 2% timeouts decided in \(clock.now - start)")
    }

    // MARK: partitioning

    @Test func partitioningByKeyUsesGapTolerantChecks() {
        // Two keys written alternately: fine as one history.
        let h = [
            kvOp(0, 0, 10, .put(key: "a", value: "1"), .put(revision: 2)),
            kvOp(1, 20, 30, .put(key: "b", value: "1"), .put(revision: 3)),
            kvOp(0, 40, 50, .put(key: "a", value: "2"), .put(revision: 4)),
            kvOp(1, 60, 70, .get("b"), .range(revision: 4, kvs: [rec("b", "1", mod: 3)])),
            kvOp(0, 80, 90, .get("a"), .range(revision: 4, kvs: [rec("a", "2", mod: 4)])),
        ]
        #expect(checkKV(h).isLinearizable)
        #expect(checkKV(h, model: KVModel(partitionByKey: true)).isLinearizable)
        // Why naive per-key partitioning is unsound with a global revision: key a's
        // sub-history alone has a revision gap (2 -> 4) that exact checking rejects.
        let onlyA = [h[0], h[2], h[4]]
        #expect(checkKV(onlyA).isNotLinearizable)
        #expect(checkKV(onlyA, model: KVModel(revisions: .gapsAllowed)).isLinearizable)
    }

    @Test func partitioningMissesCrossKeyRevisionViolations() {
        // Two writes to different keys claiming the same revision: only visible across keys.
        let h = [
            kvOp(0, 0, 10, .put(key: "a", value: "1"), .put(revision: 2)),
            kvOp(1, 20, 30, .put(key: "b", value: "1"), .put(revision: 2)),
        ]
        #expect(checkKV(h).isNotLinearizable)
        #expect(checkKV(h, model: KVModel(partitionByKey: true)).isLinearizable)  // documented weakness
    }

    @Test func partitionedCheckingIsSoundAndStillCatchesStaleReads() {
        var stale = 0, caught = 0
        for seed in UInt64(1)...20 {
            let sim = KVSimulation(operations: 150, keys: ["a", "b", "c", "d", "e", "f"], txns: false, ranges: false)
                .run(seed: 3000 + seed)
            #expect(checkKV(sim.ops, model: KVModel(partitionByKey: true)).isLinearizable, "seed \(seed)")
            var rng = SeededRNG(seed: seed)
            if let (ops, _) = Self.plantStaleRead(sim, rng: &rng, variantB: true) {
                stale += 1
                if checkKV(ops, model: KVModel(partitionByKey: true)).isNotLinearizable { caught += 1 }
            }
        }
        #expect(stale >= 15)
        #expect(caught == stale)
    }
}
