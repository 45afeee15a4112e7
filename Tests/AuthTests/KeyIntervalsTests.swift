import Testing

@testable import Auth

@Suite struct KeyIntervalsTests {
    @Test func aSingleKeyCoversOnlyItself() {
        var set = KeyIntervals()
        set.insert(key: b("a"), rangeEnd: [])
        #expect(set.covers(key: b("a"), rangeEnd: []))
        #expect(!set.covers(key: b("a0"), rangeEnd: []))
        #expect(!set.covers(key: b("b"), rangeEnd: []))
        // [a, a\0) is the key itself as a range too.
        #expect(set.covers(key: b("a"), rangeEnd: b("a") + [0]))
        #expect(!set.covers(key: b("a"), rangeEnd: b("b")))
    }

    @Test func aRangeCoversWhatItHoldsAndNoMore() {
        var set = KeyIntervals()
        set.insert(key: b("b"), rangeEnd: b("d"))
        #expect(set.covers(key: b("b"), rangeEnd: []))
        #expect(set.covers(key: b("c"), rangeEnd: []))
        #expect(!set.covers(key: b("d"), rangeEnd: []))
        #expect(!set.covers(key: b("a"), rangeEnd: []))
        #expect(set.covers(key: b("b"), rangeEnd: b("d")))
        #expect(set.covers(key: b("bb"), rangeEnd: b("c")))
        #expect(!set.covers(key: b("b"), rangeEnd: b("e")))
        #expect(!set.covers(key: b("a"), rangeEnd: b("c")))
        // A from-key request reaches past any finite range.
        #expect(!set.covers(key: b("b"), rangeEnd: [0]))
    }

    @Test func touchingAndOverlappingRangesMergeWithoutGaps() {
        var set = KeyIntervals()
        set.insert(key: b("a"), rangeEnd: b("c"))
        set.insert(key: b("c"), rangeEnd: b("e"))
        set.insert(key: b("x"), rangeEnd: b("z"))
        #expect(set.covers(key: b("a"), rangeEnd: b("e")))
        #expect(!set.covers(key: b("a"), rangeEnd: b("x")))
        #expect(set.intervals.count == 2)
        set.insert(key: b("d"), rangeEnd: b("y"))
        #expect(set.intervals.count == 1)
        #expect(set.covers(key: b("a"), rangeEnd: b("z")))
    }

    @Test func fromKeyReachesEveryLaterKey() {
        var set = KeyIntervals()
        set.insert(key: b("m"), rangeEnd: [0])
        #expect(set.covers(key: b("m"), rangeEnd: [0]))
        #expect(set.covers(key: b("zzzz"), rangeEnd: []))
        #expect(set.covers(key: b("n"), rangeEnd: b("p")))
        #expect(!set.covers(key: b("l"), rangeEnd: []))
        #expect(!set.covers(key: b("l"), rangeEnd: [0]))
    }

    @Test func aPrefixGrantCoversThePrefixRangeOnly() {
        // etcdctl's --prefix for "foo/" is [foo/, foo0).
        var set = KeyIntervals()
        set.insert(key: b("foo/"), rangeEnd: b("foo0"))
        #expect(set.covers(key: b("foo/"), rangeEnd: b("foo0")))
        #expect(set.covers(key: b("foo/bar"), rangeEnd: []))
        #expect(!set.covers(key: b("foo"), rangeEnd: []))
        #expect(!set.covers(key: b("fop"), rangeEnd: []))
    }

    @Test func anEmptyOrInvertedGrantGrantsNothing() {
        var set = KeyIntervals()
        set.insert(key: b("c"), rangeEnd: b("a"))
        #expect(set.intervals.isEmpty)
        #expect(!set.covers(key: b("b"), rangeEnd: []))
    }
}
