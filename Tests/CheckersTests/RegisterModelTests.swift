import Checkers
import Testing

@Suite("Register model")
struct RegisterModelTests {
    func reg(_ c: Int, _ i: UInt64, _ r: UInt64?, _ input: RegisterModel.Input, _ out: RegisterModel.Output?, id: Int? = nil) -> RegOp {
        RegOp(id: id, clientID: c, invoke: i, returnTime: r, input: input, output: out)
    }

    @Test func handWrittenHistories() {
        let checker = LinearizabilityChecker(model: RegisterModel())
        let ok = [
            reg(0, 0, 10, .write(key: "x", value: "1"), .written),
            reg(1, 5, 15, .read(key: "x"), .read(nil)),  // concurrent with the write
            reg(1, 20, 30, .cas(key: "x", expected: "1", new: "2"), .cas(succeeded: true)),
            reg(2, 35, 40, .read(key: "x"), .read("2")),
            reg(2, 45, 50, .delete(key: "x"), .deleted),
            reg(0, 55, 60, .cas(key: "x", expected: nil, new: "3"), .cas(succeeded: true)),
        ]
        #expect(checker.check(ok, timeout: .seconds(5)).isLinearizable)
        let stale = [
            reg(0, 0, 10, .write(key: "x", value: "1"), .written),
            reg(0, 20, 30, .write(key: "x", value: "2"), .written),
            reg(1, 40, 50, .read(key: "x"), .read("1"), id: 7),
        ]
        let result = checker.check(stale, timeout: .seconds(5))
        #expect(result.isNotLinearizable)
        #expect(result.minimalFailingSubhistory?.contains { $0.id == 7 } == true)
        // Dropping the writes leaves "read 1 from an empty map", itself non-linearizable.
        #expect((result.minimalFailingSubhistory?.count ?? 99) <= 2)
        let pendingWrite = [
            reg(0, 0, nil, .write(key: "x", value: "1"), nil),
            reg(1, 40, 50, .read(key: "x"), .read("1")),
            reg(1, 60, 70, .read(key: "x"), .read("1")),
        ]
        #expect(checker.check(pendingWrite, timeout: .seconds(5)).isLinearizable)
    }

    @Test func partitionedAndWholeChecksAgreeOnGeneratedHistories() {
        for seed in UInt64(1)...20 {
            let ops = simulateRegisters(seed: seed, clients: 6, operations: 200, keys: 5)
            let part = LinearizabilityChecker(model: RegisterModel(partitionByKey: true)).check(ops, timeout: .seconds(10))
            let whole = LinearizabilityChecker(model: RegisterModel(partitionByKey: false)).check(ops, timeout: .seconds(10))
            #expect(part.isLinearizable, "seed \(seed)")
            #expect(whole.isLinearizable, "seed \(seed)")
        }
    }

    @Test func partitionedCheckDecidesLargeMultiKeyHistoryFast() {
        let ops = simulateRegisters(seed: 99, clients: 16, operations: 10_000, keys: 40)
        let clock = ContinuousClock()
        let start = clock.now
        let result = LinearizabilityChecker(model: RegisterModel(partitionByKey: true)).check(ops, timeout: .seconds(20))
        let elapsed = clock.now - start
        #expect(result.isLinearizable, "\(result.explanation ?? "")")
        #expect(elapsed < .seconds(20))
        print("10,000-op register history (16 clients, 40 keys) decided in \(elapsed)")

        // A planted stale read in one key is found, and the shrunk history is about that key.
        var bad = ops
        let reads = bad.indices.filter { i in
            if case .read = bad[i].input, case .read(let v)? = bad[i].output, v != nil { return true }
            return false
        }
        let target = reads[reads.count / 2]
        bad[target].output = .read("never-written")
        let failing = LinearizabilityChecker(model: RegisterModel(partitionByKey: true), shrinkTimeout: .seconds(3))
            .check(bad, timeout: .seconds(20))
        #expect(failing.isNotLinearizable)
        #expect(failing.minimalFailingSubhistory?.map(\.id) == [bad[target].id])
    }
}
