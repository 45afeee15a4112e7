import Testing

@testable import MVCC

@Suite struct RevisionTests {
    @Test func revisionKeysUseEtcdsLayout() {
        let revision = Revision(main: 0x0102_0304_0506_0708, sub: 9)
        let encoded = RevisionKey.encode(revision)
        #expect(encoded == [1, 2, 3, 4, 5, 6, 7, 8, UInt8(ascii: "_"), 0, 0, 0, 0, 0, 0, 0, 9])
        #expect(RevisionKey.encode(revision, tombstone: true) == encoded + [UInt8(ascii: "t")])
        #expect(RevisionKey.withEncoded(revision) { Array($0) } == encoded)
        #expect(RevisionKey.decode(encoded)! == (revision, false))
        #expect(RevisionKey.decode(encoded + [UInt8(ascii: "t")])! == (revision, true))
        #expect(RevisionKey.decode([1, 2, 3]) == nil)
        // Byte order is revision order.
        let a = RevisionKey.encode(Revision(main: 255, sub: 1))
        let b = RevisionKey.encode(Revision(main: 256, sub: 0))
        #expect(a.lexicographicallyPrecedes(b))
    }

    @Test func keyIndexFollowsTheDocumentedExample() {
        let index = KeyIndex(key: Array("k".utf8))
        index.put(Revision(main: 1))
        index.put(Revision(main: 2))
        index.tombstone(Revision(main: 3))
        index.put(Revision(main: 4))
        index.put(Revision(main: 5))
        #expect(index.get(at: 2)! == (Revision(main: 2), Revision(main: 1), 2))
        #expect(index.get(at: 3) == nil)
        #expect(index.get(at: 5)! == (Revision(main: 5), Revision(main: 4), 2))
        var keep = Set<Revision>()
        index.keep(2, into: &keep)
        #expect(keep == [Revision(main: 2)])
        keep = []
        index.compact(2, keep: &keep)
        #expect(index.generations.map(\.revisions) == [[Revision(main: 2), Revision(main: 3)], [Revision(main: 4), Revision(main: 5)]])
        // A tombstone exactly at the compaction revision stays (watchers
        // from there must see the delete); the next compaction drops it.
        keep = []
        index.compact(3, keep: &keep)
        #expect(index.generations.map(\.revisions) == [[Revision(main: 3)], [Revision(main: 4), Revision(main: 5)]])
        #expect(keep == [Revision(main: 3)])
        keep = []
        index.compact(4, keep: &keep)
        #expect(index.generations.map(\.revisions) == [[Revision(main: 4), Revision(main: 5)]])
        keep = []
        index.compact(5, keep: &keep)
        #expect(index.generations.map(\.revisions) == [[Revision(main: 5)]] && keep == [Revision(main: 5)])
        index.tombstone(Revision(main: 6))
        keep = []
        index.compact(6, keep: &keep)
        #expect(!index.isEmpty && keep == [Revision(main: 6)])
        #expect(index.get(at: 6) == nil)
        keep = []
        index.compact(7, keep: &keep)
        #expect(index.isEmpty && keep.isEmpty)
    }

    @Test func orderedIndexKeepsOrderThroughSplitsAndRemovals() {
        var index = OrderedIndex()
        var rng = SeededRandom(seed: 11)
        var keys = Set<[UInt8]>()
        for _ in 0..<3000 {
            let key = (0..<Int.random(in: 1...4, using: &rng)).map { _ in UInt8.random(in: 0...9, using: &rng) }
            keys.insert(key)
            _ = index.getOrInsert(key) { KeyIndex(key: key) }
        }
        #expect(index.count == keys.count)
        var visited: [[UInt8]] = []
        index.forEach { visited.append($0.key) }
        let sorted = keys.sorted { $0.lexicographicallyPrecedes($1) }
        #expect(visited == sorted)
        var ranged: [[UInt8]] = []
        index.forEach(from: [3], end: [5, 5]) { ranged.append($0.key); return true }
        #expect(ranged == sorted.filter { !$0.lexicographicallyPrecedes([3]) && $0.lexicographicallyPrecedes([5, 5]) })
        index.removeAll { $0.key.first == 4 }
        #expect(index.get([4]) == nil)
        #expect(index.count == keys.filter { $0.first != 4 }.count)
        visited = []
        index.forEach { visited.append($0.key) }
        #expect(visited == sorted.filter { $0.first != 4 })
    }
}
