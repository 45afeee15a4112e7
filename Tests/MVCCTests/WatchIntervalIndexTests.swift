import Backend
import Testing

@testable import MVCC

@Suite("WatchIntervalIndex")
struct WatchIntervalIndexTests {
    @Test func stabbingMatchesBruteForce() {
        var rng = SeededRandom(seed: 42)
        let alphabet: [[UInt8]] = ["", "a", "aa", "ab", "b", "ba", "c", "cz", "d", "e"].map { Array($0.utf8) }
        var index = WatchIntervalIndex<Int>()
        var model: [(start: [UInt8], end: [UInt8]?, value: Int)] = []
        for step in 0..<3000 {
            if model.isEmpty || Int.random(in: 0..<3, using: &rng) != 0 {
                let start = alphabet.randomElement(using: &rng)!
                var end: [UInt8]? = alphabet.randomElement(using: &rng)!
                if Bool.random(using: &rng) && Bool.random(using: &rng) { end = nil }
                if let e = end, compareBytes(start, e) >= 0 { continue }
                if index.find(start, end) != nil { continue }
                index.insert(start, end, step)
                model.append((start, end, step))
            } else {
                let victim = model.remove(at: Int.random(in: 0..<model.count, using: &rng))
                let i = index.find(victim.start, victim.end)!
                #expect(index.values[i] == victim.value)
                index.remove(at: i)
            }
            #expect(index.count == model.count)
            for probe in alphabet + ["a\u{0}", "bb", "zzz", "\u{0}"].map({ Array($0.utf8) }) {
                var positions: [Int] = []
                index.stab(probe) { positions.append($0) }
                let found = positions.map { index.values[$0] }
                let expected = model.filter { interval in
                    compareBytes(probe, interval.start) >= 0
                        && (interval.end.map { compareBytes(probe, $0) < 0 } ?? true)
                }.map(\.value)
                #expect(found.sorted() == expected.sorted(), "step \(step) probe \(probe)")
            }
        }
    }

    @Test func groupFindsKeyAndRangeWatchers() {
        final class NullSink: WatchSink, @unchecked Sendable {
            func offer(_ delivery: WatchDelivery) -> Bool { true }
        }
        let sink = NullSink()
        func watcher(_ serial: UInt64, _ range: WatchKeyRange) -> Watcher {
            Watcher(serial: serial, id: Int64(serial), range: range, prevKV: false, filters: [], sink: sink, nextRev: 1, state: .synced)
        }
        var group = WatchGroup()
        let ws = [
            watcher(1, .key(Array("a".utf8))),
            watcher(2, .key(Array("a".utf8))),
            watcher(3, .interval(Array("a".utf8), Array("b".utf8))),
            watcher(4, .interval(Array("a".utf8), nil)),
            watcher(5, .interval(Array("a".utf8), Array("b".utf8))),
            watcher(6, .empty),
        ]
        for w in ws { group.add(w) }
        func matches(_ key: String) -> [UInt64] {
            var found: [UInt64] = []
            group.forEachMatch(Array(key.utf8)) { found.append($0.serial) }
            return found.sorted()
        }
        #expect(matches("a") == [1, 2, 3, 4, 5])
        #expect(matches("ab") == [3, 4, 5])
        #expect(matches("b") == [4])
        #expect(matches("0") == [])
        group.remove(ws[0])
        group.remove(ws[2])
        group.remove(ws[5])
        #expect(matches("a") == [2, 4, 5])
        group.remove(ws[4])
        #expect(matches("ab") == [4])
        #expect(group.count == 2)
    }
}
