import Checkers
import Testing

@Suite("KV model: hand-written histories")
struct KVLinearizabilityTests {
    // MARK: accepted

    @Test func sequentialHistoryIsLinearizable() {
        let h = [
            kvOp(0, 0, 1, .put(key: "a", value: "1"), .put(revision: 2)),
            kvOp(0, 2, 3, .get("a"), .range(revision: 2, kvs: [rec("a", "1", mod: 2, create: 2, version: 1)])),
            kvOp(0, 4, 5, .put(key: "a", value: "2", prevKV: true),
                 .put(revision: 3, prevKV: rec("a", "1", mod: 2, create: 2, version: 1))),
            kvOp(0, 6, 7, .delete(.single("b")), .delete(revision: 3, deleted: 0)),
            kvOp(0, 8, 9, .delete(.single("a"), prevKV: true),
                 .delete(revision: 4, deleted: 1, prevKVs: [rec("a", "2", mod: 3, create: 2, version: 2)])),
            kvOp(0, 10, 11, .get("a"), .range(revision: 4, kvs: [])),
        ]
        #expect(checkKV(h).isLinearizable)
    }

    @Test func concurrentReadMaySeeEitherValue() {
        // A long put overlaps two reads: one sees the old state, one the new.
        let h = [
            kvOp(0, 0, 1, .put(key: "a", value: "1"), .put(revision: 2)),
            kvOp(1, 10, 100, .put(key: "a", value: "2"), .put(revision: 3)),
            kvOp(2, 20, 30, .get("a"), .range(revision: 3, kvs: [rec("a", "2", mod: 3)])),
            kvOp(3, 40, 50, .get("a"), .range(revision: 3, kvs: [rec("a", "2", mod: 3)])),
            kvOp(4, 15, 95, .get("a"), .range(revision: 2, kvs: [rec("a", "1", mod: 2)])),
        ]
        #expect(checkKV(h).isLinearizable)
    }

    @Test func txnAndRangeSemantics() {
        let h = [
            kvOp(0, 0, 1, .put(key: "a", value: "1"), .put(revision: 2)),
            kvOp(0, 2, 3, .put(key: "b", value: "1"), .put(revision: 3)),
            // Succeeds: a == 1. Writes c, reads a -> one revision.
            kvOp(1, 4, 5, .txn(compares: [.valueEquals("a", "1")],
                               success: [.put(key: "c", value: "x"), .get("c")], failure: []),
                 .txn(revision: 4, succeeded: true, results: [.put(prevKV: nil), .range(kvs: [rec("c", "x", mod: 4, create: 4, version: 1)])])),
            // Fails: a is absent? no. Else branch: a delete of nothing -> no revision.
            kvOp(1, 6, 7, .txn(compares: [.absent("a")], success: [.put(key: "z", value: "z")],
                               failure: [.delete(.single("nope"))]),
                 .txn(revision: 4, succeeded: false, results: [.delete(deleted: 0, prevKVs: [])])),
            kvOp(2, 8, 9, .range(.prefix("")), .range(revision: 4, kvs: [
                rec("a", "1", mod: 2), rec("b", "1", mod: 3), rec("c", "x", mod: 4),
            ])),
            kvOp(2, 10, 11, .delete(.range("a", "c"), prevKV: true),
                 .delete(revision: 5, deleted: 2, prevKVs: [rec("a", "1", mod: 2), rec("b", "1", mod: 3)])),
            kvOp(2, 12, 13, .txn(compares: [.modRevisionEquals("c", 4)], success: [], failure: []),
                 .txn(revision: 5, succeeded: true, results: [])),
        ]
        #expect(checkKV(h).isLinearizable)
    }

    // MARK: rejected

    @Test func staleReadIsRejected() {
        let base = [
            kvOp(0, 0, 10, .put(key: "a", value: "1"), .put(revision: 2)),
            kvOp(0, 20, 30, .put(key: "a", value: "2"), .put(revision: 3)),
        ]
        // Old value with the old header revision.
        let r1 = checkKV(base + [kvOp(1, 40, 50, .get("a"), .range(revision: 2, kvs: [rec("a", "1", mod: 2)]))])
        #expect(r1.isNotLinearizable)
        // Old value claiming the current header revision.
        let r2 = checkKV(base + [kvOp(1, 40, 50, .get("a"), .range(revision: 3, kvs: [rec("a", "1", mod: 2)]))])
        #expect(r2.isNotLinearizable)
        // Same value written twice: only the mod revision tells the reads apart.
        let same = [
            kvOp(0, 0, 10, .put(key: "a", value: "1"), .put(revision: 2)),
            kvOp(0, 20, 30, .put(key: "a", value: "1"), .put(revision: 3)),
            kvOp(1, 40, 50, .get("a"), .range(revision: 3, kvs: [rec("a", "1", mod: 2)])),
        ]
        #expect(checkKV(same).isNotLinearizable)
    }

    @Test func lostWriteIsRejected() {
        let h = [
            kvOp(0, 0, 10, .put(key: "a", value: "1"), .put(revision: 2)),
            kvOp(1, 20, 30, .put(key: "b", value: "1"), .put(revision: 3)),
            kvOp(2, 40, 50, .get("a"), .range(revision: 3, kvs: [])),
        ]
        #expect(checkKV(h).isNotLinearizable)
    }

    @Test func revisionGoingBackwardsIsRejected() {
        let h = [
            kvOp(0, 0, 10, .put(key: "a", value: "1"), .put(revision: 2)),
            kvOp(0, 20, 30, .put(key: "a", value: "2"), .put(revision: 3)),
            // "b" never existed, so only the header revision is wrong.
            kvOp(1, 40, 50, .get("b"), .range(revision: 2, kvs: [])),
        ]
        #expect(checkKV(h).isNotLinearizable)
        // Also caught when revision gaps are allowed (a lower header than one observed).
        #expect(checkKV(h, model: KVModel(revisions: .gapsAllowed)).isNotLinearizable)
    }

    @Test func readFromTheFutureIsRejected() {
        let h = [
            kvOp(1, 0, 10, .get("a"), .range(revision: 2, kvs: [rec("a", "1", mod: 2)])),
            kvOp(0, 20, 30, .put(key: "a", value: "1"), .put(revision: 2)),
        ]
        #expect(checkKV(h).isNotLinearizable)
        // Overlapping instead, it is fine.
        let ok = [
            kvOp(1, 0, 25, .get("a"), .range(revision: 2, kvs: [rec("a", "1", mod: 2)])),
            kvOp(0, 20, 30, .put(key: "a", value: "1"), .put(revision: 2)),
        ]
        #expect(checkKV(ok).isLinearizable)
    }

    @Test func txnSucceedingAgainstItsCompareIsRejected() {
        let base = [kvOp(0, 0, 10, .put(key: "a", value: "1"), .put(revision: 2))]
        let txn = KVInput.txn(compares: [.valueEquals("a", "2")], success: [.put(key: "b", value: "x")],
                              failure: [.get("a")])
        let bad = base + [kvOp(1, 20, 30, txn, .txn(revision: 3, succeeded: true, results: [.put(prevKV: nil)]))]
        #expect(checkKV(bad).isNotLinearizable)
        let good = base + [kvOp(1, 20, 30, txn, .txn(revision: 2, succeeded: false,
                                                     results: [.range(kvs: [rec("a", "1", mod: 2)])]))]
        #expect(checkKV(good).isLinearizable)
        // modRevision compare that must fail.
        let txn2 = KVInput.txn(compares: [.modRevisionEquals("a", 1)], success: [.put(key: "a", value: "3")], failure: [])
        let bad2 = base + [kvOp(1, 20, 30, txn2, .txn(revision: 3, succeeded: true, results: [.put(prevKV: nil)]))]
        #expect(checkKV(bad2).isNotLinearizable)
    }

    @Test func skippedOrReusedRevisionsAreRejectedInExactMode() {
        let skipped = [
            kvOp(0, 0, 10, .put(key: "a", value: "1"), .put(revision: 2)),
            kvOp(0, 20, 30, .put(key: "a", value: "2"), .put(revision: 4)),
        ]
        #expect(checkKV(skipped).isNotLinearizable)
        #expect(checkKV(skipped, model: KVModel(revisions: .gapsAllowed)).isLinearizable)
        let reused = [
            kvOp(0, 0, 10, .put(key: "a", value: "1"), .put(revision: 2)),
            kvOp(1, 20, 30, .put(key: "b", value: "1"), .put(revision: 2)),
        ]
        #expect(checkKV(reused).isNotLinearizable)
    }

    @Test func wrongPrevKVAndVersionAreRejected() {
        let base = [kvOp(0, 0, 10, .put(key: "a", value: "1"), .put(revision: 2))]
        let badPrev = base + [kvOp(0, 20, 30, .put(key: "a", value: "2", prevKV: true), .put(revision: 3, prevKV: nil))]
        #expect(checkKV(badPrev).isNotLinearizable)
        let badVersion = base + [kvOp(0, 20, 30, .get("a"), .range(revision: 2, kvs: [rec("a", "1", mod: 2, create: 2, version: 2)]))]
        #expect(checkKV(badVersion).isNotLinearizable)
        let badCount = base + [kvOp(0, 20, 30, .delete(.prefix("")), .delete(revision: 3, deleted: 2))]
        #expect(checkKV(badCount).isNotLinearizable)
    }

    // MARK: unknown outcomes

    @Test func timedOutPutThatWasAppliedIsLinearizable() {
        let h = [
            kvOp(0, 0, nil, .put(key: "a", value: "1"), nil),
            kvOp(1, 20, 30, .get("a"), .range(revision: 2, kvs: [rec("a", "1", mod: 2)])),
            kvOp(1, 40, 50, .put(key: "a", value: "2"), .put(revision: 3)),
        ]
        #expect(checkKV(h).isLinearizable)
    }

    @Test func timedOutPutNeverSeenIsLinearizable() {
        let h = [
            kvOp(0, 0, nil, .put(key: "a", value: "1"), nil),
            kvOp(1, 20, 30, .get("a"), .range(revision: 1, kvs: [])),
            kvOp(1, 40, 50, .put(key: "b", value: "2"), .put(revision: 2)),
            kvOp(1, 60, 70, .get("b"), .range(revision: 2, kvs: [rec("b", "2", mod: 2)])),
        ]
        #expect(checkKV(h).isLinearizable)
    }

    @Test func timedOutPutAppliedLateIsLinearizable() {
        // Invisible to the first read, visible to the second: it took effect in between.
        let h = [
            kvOp(0, 0, nil, .put(key: "a", value: "1"), nil),
            kvOp(1, 20, 30, .get("a"), .range(revision: 1, kvs: [])),
            kvOp(1, 40, 50, .get("a"), .range(revision: 2, kvs: [rec("a", "1", mod: 2)])),
        ]
        #expect(checkKV(h).isLinearizable)
        // But not before its invoke.
        let early = [
            kvOp(1, 0, 10, .get("a"), .range(revision: 2, kvs: [rec("a", "1", mod: 2)])),
            kvOp(0, 20, nil, .put(key: "a", value: "1"), nil),
        ]
        #expect(checkKV(early).isNotLinearizable)
    }

    @Test func timedOutTxnEitherBranch() {
        let txn = KVInput.txn(compares: [.absent("a")], success: [.put(key: "a", value: "t")], failure: [])
        let applied = [
            kvOp(0, 0, nil, txn, nil),
            kvOp(1, 20, 30, .get("a"), .range(revision: 2, kvs: [rec("a", "t", mod: 2)])),
        ]
        #expect(checkKV(applied).isLinearizable)
        // With "a" already present the txn cannot have written "t".
        let impossible = [
            kvOp(1, 0, 10, .put(key: "a", value: "1"), .put(revision: 2)),
            kvOp(0, 20, nil, txn, nil),
            kvOp(1, 30, 40, .get("a"), .range(revision: 3, kvs: [rec("a", "t", mod: 3)])),
        ]
        #expect(checkKV(impossible).isNotLinearizable)
    }

    // MARK: explanation and shrinking

    @Test func failureExplanationNamesTheBlockingOperation() throws {
        var h: [KVOp] = []
        for i in 0..<20 {
            h.append(kvOp(i % 3, UInt64(i * 10), UInt64(i * 10 + 5), .put(key: "k\(i % 4)", value: "v\(i)"),
                          .put(revision: Int64(i + 2))))
        }
        let stale = kvOp(3, 300, 305, .get("k1"), .range(revision: 21, kvs: [rec("k1", "v13", mod: 15)]), id: 99)
        h.append(stale)  // the latest write to k1 was v17 at revision 19
        let result = checkKV(h)
        let minimal = try #require(result.minimalFailingSubhistory)
        #expect(minimal.contains { $0.id == 99 })
        #expect(minimal.count <= 4)
        let text = try #require(result.explanation)
        #expect(text.contains("#99"))
        #expect(text.contains("could not be placed"))
    }

    @Test func undecidedIsNeverAPass() {
        let sim = KVSimulation(operations: 2_000).run(seed: 7)
        let tiny = LinearizabilityChecker(model: KVModel()).check(sim.ops, timeout: .nanoseconds(1))
        #expect(tiny.isUndecided)
        #expect(!tiny.isLinearizable)
        let capped = LinearizabilityChecker(model: KVModel(), maxStates: 10).check(sim.ops, timeout: .seconds(10))
        #expect(capped.isUndecided)
        #expect(capped.explanation?.contains("state limit") == true)
    }
}
