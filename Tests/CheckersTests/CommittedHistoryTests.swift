import Checkers
import Testing

@Suite("Committed history")
struct CommittedHistoryTests {
    @Test func buildFromAcknowledgedWritesFillsRevisionsAndPrevKVs() throws {
        let h = try CommittedHistory.build(from: [
            AcknowledgedWrite(revision: 3, changes: [.put(key: "a", value: "2")]),
            AcknowledgedWrite(revision: 2, changes: [.put(key: "a", value: "1")]),
            AcknowledgedWrite(revision: 2, changes: [.put(key: "a", value: "1")]),  // duplicate ack
            AcknowledgedWrite(revision: 4, changes: [.delete(key: "a"), .put(key: "b", value: "x")]),
        ])
        #expect(h.lastRevision == 4)
        #expect(h.events(at: 3) == [.put(rec("a", "2", mod: 3, create: 2, version: 2),
                                         prevKV: rec("a", "1", mod: 2, create: 2, version: 1))])
        #expect(h.events(at: 4) == [
            .delete("a", revision: 4, prevKV: rec("a", "2", mod: 3, create: 2, version: 2)),
            .put(rec("b", "x", mod: 4, create: 4, version: 1)),
        ])
    }

    @Test func buildRejectsGapsConflictsAndImpossibleChanges() {
        #expect(throws: CommittedHistoryError.missingRevisions([3])) {
            try CommittedHistory.build(from: [
                AcknowledgedWrite(revision: 2, changes: [.put(key: "a", value: "1")]),
                AcknowledgedWrite(revision: 4, changes: [.put(key: "a", value: "2")]),
            ])
        }
        #expect(throws: CommittedHistoryError.conflictingWrites(revision: 2)) {
            try CommittedHistory.build(from: [
                AcknowledgedWrite(revision: 2, changes: [.put(key: "a", value: "1")]),
                AcknowledgedWrite(revision: 2, changes: [.put(key: "b", value: "1")]),
            ])
        }
        #expect(throws: CommittedHistoryError.self) {
            try CommittedHistory.build(from: [AcknowledgedWrite(revision: 2, changes: [.delete(key: "nope")])])
        }
        #expect(throws: CommittedHistoryError.self) {
            try CommittedHistory(revisions: [CommittedRevision(revision: 2, events: [
                .put(rec("a", "1", mod: 2, create: 2, version: 3)),
            ])])
        }
    }

    @Test func buildFromSimulatedKVHistoryMatchesTheStore() throws {
        for seed in UInt64(1)...10 {
            let sim = KVSimulation(operations: 200).run(seed: 77 + seed)
            let h = try CommittedHistory.build(fromKVHistory: sim.ops)
            #expect(h.lastRevision == sim.final.revision)
            // Replaying the events reproduces every snapshot.
            var state: [KVBytes: KVRecord] = [:]
            for r in h.revisions {
                for e in r.events {
                    #expect(e.prevKV == state[e.kv.key])
                    state[e.kv.key] = e.type == .put ? e.kv : nil
                }
                let snapshot = sim.snapshots[Int(r.revision) - 1]
                #expect(state.values.sorted { $0.key < $1.key } == snapshot.records)
            }
        }
    }

    @Test func buildFromKVHistoryRejectsInconsistentResponses() {
        let h = [
            kvOp(0, 0, 1, .put(key: "a", value: "1"), .put(revision: 2)),
            kvOp(0, 2, 3, .txn(compares: [.absent("a")], success: [.put(key: "b", value: "1")], failure: [.put(key: "c", value: "1")]),
                 .txn(revision: 3, succeeded: true, results: [.put(prevKV: nil)])),
        ]
        #expect(throws: CommittedHistoryError.self) { try CommittedHistory.build(fromKVHistory: h) }
    }

    /// End to end: a simulated KV history, its committed history, and watches served
    /// from it (as a correct server would) pass; a dropped event does not.
    @Test func watchesOverASimulatedHistory() throws {
        let sim = KVSimulation(operations: 300).run(seed: 5)
        let h = try CommittedHistory.build(fromKVHistory: sim.ops)
        let req = RecordedWatchRequest(range: .range("a", "c"), startRevision: 2, prevKV: true)
        var responses: [RecordedWatchResponse] = [.created(header: 1)]
        for r in h.revisions {
            let evs = r.events.filter { req.matches($0) }
            if !evs.isEmpty { responses.append(.events(evs, header: r.revision)) }
            if r.revision % 10 == 0 { responses.append(.progress(r.revision)) }
        }
        let checker = WatchChecker(history: h)
        #expect(checker.check([RecordedWatch(id: "w", request: req, responses: responses)]).isEmpty)
        var dropped = responses
        let i = dropped.indices.dropFirst(5).first { !dropped[$0].events.isEmpty }!
        dropped.remove(at: i)
        let v = checker.check([RecordedWatch(id: "w", request: req, responses: dropped)])
        #expect(v.contains { $0.kind == .missingEvent })
    }
}
