import Backend
import EtcdProto
import Foundation
import Testing

@testable import MVCC

// MARK: - Helpers

/// A sink that records what it takes; `accepting` false makes it refuse.
final class RecordingSink: WatchSink, @unchecked Sendable {
    private let lock = NSLock()
    private var taken: [WatchDelivery] = []
    private var refusing = false

    var accepting: Bool {
        get { lock.withLock { !refusing } }
        set { lock.withLock { refusing = !newValue } }
    }

    func offer(_ delivery: WatchDelivery) -> Bool {
        lock.withLock {
            if refusing { return false }
            taken.append(delivery)
            return true
        }
    }

    var deliveries: [WatchDelivery] { lock.withLock { taken } }

    /// Deliveries for one watch id.
    func deliveries(for id: Int64) -> [WatchDelivery] { deliveries.filter { $0.watchID == id } }

    /// Every event delivered to one watch id, in order.
    func events(for id: Int64) -> [Mvccpb_Event] { deliveries(for: id).flatMap(\.events) }

    func clear() { lock.withLock { taken.removeAll() } }
}

/// A store, its watchable layer and write helpers that notify as the
/// server's apply loop does.
final class WatchFixture {
    let directory = TemporaryDirectory()
    let kv: KVStore
    let watchable: WatchableStore

    init(_ config: WatchConfig = WatchConfig(), store: StoreConfig = StoreConfig()) throws {
        kv = try directory.openStore(store)
        watchable = WatchableStore(store: kv, config: config)
    }

    /// Applies a write result the way the server does: notify if it changed something.
    @discardableResult
    func apply<R>(_ result: WriteResult<R>, notify: Bool = true) -> Int64 {
        if notify && !result.events.isEmpty { watchable.notify(result.events, revision: result.revision) }
        return result.revision
    }

    @discardableResult
    func put(_ key: String, _ value: String, notify: Bool = true) throws -> Int64 {
        apply(try kv.put(putRequest(key, value)), notify: notify)
    }

    @discardableResult
    func delete(_ key: String, _ end: String = "", notify: Bool = true) throws -> Int64 {
        apply(try kv.deleteRange(deleteRequest(key, end)), notify: notify)
    }

    /// One txn putting every pair (one revision, several events).
    @discardableResult
    func putAll(_ pairs: [(String, String)], deleting: [String] = []) throws -> Int64 {
        var txn = Etcdserverpb_TxnRequest()
        txn.success = pairs.map { .put(putRequest($0.0, $0.1)) } + deleting.map { .delete(deleteRequest($0)) }
        return apply(try kv.txn(txn))
    }

    func watch(
        _ id: Int64, _ key: String, _ end: String = "", from start: Int64 = 0, prevKV: Bool = false,
        filters: WatchFilters = [], sink: RecordingSink
    ) -> WatcherHandle {
        watchable.watch(
            watchID: id, key: d(key), rangeEnd: d(end), startRevision: start, prevKV: prevKV,
            filters: filters, sink: sink)
    }

    /// Runs sync rounds and victim retries until nothing is behind.
    func drain(limit: Int = 10_000) {
        for _ in 0..<limit {
            let victims = watchable.retryVictims()
            let unsynced = watchable.syncUnsynced()
            if victims == 0 && unsynced == 0 && watchable.counts.victims == 0 { return }
        }
        Issue.record("watchers still behind after \(limit) rounds: \(watchable.counts)")
    }
}

func keysOf(_ events: [Mvccpb_Event]) -> [String] {
    events.map { String(decoding: $0.kv.key, as: UTF8.self) }
}

func revisionsOf(_ events: [Mvccpb_Event]) -> [Int64] { events.map(\.kv.modRevision) }

func event(_ type: Mvccpb_Event.EventType, _ kv: Mvccpb_KeyValue, prev: Mvccpb_KeyValue? = nil) -> Mvccpb_Event {
    var e = Mvccpb_Event()
    e.type = type
    e.kv = kv
    if let prev { e.prevKv = prev }
    return e
}

// MARK: - Ranges

@Suite("WatchableStore")
struct WatchableStoreTests {
    @Test func singleKeyGetsOnlyItsKeyLive() throws {
        let f = try WatchFixture()
        let sink = RecordingSink()
        _ = f.watch(1, "a", sink: sink)
        #expect(f.watchable.counts == (1, 0, 0))
        let r1 = try f.put("a", "1")
        try f.put("b", "1")
        try f.put("ab", "1")
        let r2 = try f.delete("a")
        let got = sink.deliveries(for: 1)
        try #require(got.count == 2)
        #expect(got.map(\.revision) == [r1, r2])
        #expect(got.allSatisfy { $0.events.count == 1 && $0.compactRevision == 0 })
        #expect(got[0].events[0].type == .put)
        #expect(got[0].events[0].kv.value == d("1"))
        #expect(got[0].events[0].kv.createRevision == r1)
        // A delete event carries the key and the deletion's revision only.
        var tombstone = Mvccpb_KeyValue()
        tombstone.key = d("a")
        tombstone.modRevision = r2
        #expect(got[1].events[0] == event(.delete, tombstone))
    }

    @Test func rangeGetsKeysInsideOnly() throws {
        let f = try WatchFixture()
        let sink = RecordingSink()
        _ = f.watch(1, "b", "d", sink: sink)
        for key in ["a", "b", "bz", "c", "d", "e"] { try f.put(key, "v") }
        #expect(keysOf(sink.events(for: 1)) == ["b", "bz", "c"])
    }

    @Test func prefixGetsKeysWithPrefix() throws {
        let f = try WatchFixture()
        let sink = RecordingSink()
        _ = f.watch(1, "foo", "fop", sink: sink)
        for key in ["fo", "foo", "foo/1", "foo/2/x", "fop", "g"] { try f.put(key, "v") }
        try f.delete("foo", "fop")
        #expect(keysOf(sink.events(for: 1)) == ["foo", "foo/1", "foo/2/x", "foo", "foo/1", "foo/2/x"])
        // The deletion of three keys is one revision, so one delivery.
        #expect(sink.deliveries(for: 1).last?.events.count == 3)
    }

    @Test func fromKeyGetsEveryKeyAtOrAfter() throws {
        let f = try WatchFixture()
        let sink = RecordingSink()
        _ = f.watch(1, "m", "\0", sink: sink)
        for key in ["a", "l", "m", "m1", "z", "zzz"] { try f.put(key, "v") }
        #expect(keysOf(sink.events(for: 1)) == ["m", "m1", "z", "zzz"])
    }

    @Test func allKeys() throws {
        let f = try WatchFixture()
        let sink = RecordingSink()
        _ = f.watch(1, "\0", "\0", sink: sink)
        for key in ["\u{1}", "a", "zz"] { try f.put(key, "v") }
        #expect(keysOf(sink.events(for: 1)) == ["\u{1}", "a", "zz"])
    }

    @Test func emptyRangeMatchesNothing() throws {
        #expect(WatchableStore.isEmptyRange(key: d("b"), rangeEnd: d("a")))
        #expect(WatchableStore.isEmptyRange(key: d("b"), rangeEnd: d("b")))
        #expect(!WatchableStore.isEmptyRange(key: d("b"), rangeEnd: d("")))
        #expect(!WatchableStore.isEmptyRange(key: d("b"), rangeEnd: d("\0")))
        let f = try WatchFixture()
        let sink = RecordingSink()
        _ = f.watch(1, "b", "a", sink: sink)
        _ = f.watch(2, "b", "a", from: 1, sink: sink)
        try f.put("a", "v")
        try f.put("b", "v")
        f.drain()
        #expect(sink.deliveries.isEmpty)
        #expect(f.watchable.counts == (2, 0, 0))
    }

    @Test func txnRevisionIsOneDeliveryWithTheWatchersEvents() throws {
        let f = try WatchFixture()
        let sink = RecordingSink()
        _ = f.watch(1, "a", "\0", sink: sink)
        _ = f.watch(2, "b", sink: sink)
        _ = f.watch(3, "c", "e", sink: sink)
        let rev = try f.putAll([("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")])
        #expect(sink.deliveries(for: 1).count == 1)
        #expect(keysOf(sink.events(for: 1)) == ["a", "b", "c", "d"])
        #expect(keysOf(sink.events(for: 2)) == ["b"])
        #expect(keysOf(sink.events(for: 3)) == ["c", "d"])
        #expect(sink.deliveries.allSatisfy { $0.revision == rev })
    }

    // MARK: - Start revisions

    @Test func startInThePastCatchesUpFromTheBackend() throws {
        let f = try WatchFixture()
        var revs: [Int64] = []
        for i in 0..<5 { revs.append(try f.put("k", "v\(i)")) }
        let sink = RecordingSink()
        let h = f.watch(1, "k", from: revs[2], sink: sink)
        #expect(f.watchable.counts == (0, 1, 0))
        #expect(sink.deliveries.isEmpty)  // nothing until a sync round
        #expect(f.watchable.syncUnsynced() == 0)
        let got = sink.deliveries(for: 1)
        try #require(got.count == 1)  // one delivery for the whole catch-up
        #expect(revisionsOf(got[0].events) == Array(revs[2...]))
        #expect(got[0].revision == revs[4])
        #expect(f.watchable.inspect(h)?.state == .synced)
        let next = try f.put("k", "live")
        #expect(revisionsOf(sink.events(for: 1)) == Array(revs[2...]) + [next])
    }

    @Test func startAtTheCurrentRevisionIncludesIt() throws {
        let f = try WatchFixture()
        let rev = try f.put("k", "v")
        let sink = RecordingSink()
        _ = f.watch(1, "k", from: rev, sink: sink)
        f.drain()
        #expect(revisionsOf(sink.events(for: 1)) == [rev])
    }

    @Test func startZeroMeansAfterTheCurrentRevision() throws {
        let f = try WatchFixture()
        try f.put("k", "old")
        let sink = RecordingSink()
        _ = f.watch(1, "k", sink: sink)
        f.drain()
        #expect(sink.deliveries.isEmpty)
        let rev = try f.put("k", "new")
        #expect(revisionsOf(sink.events(for: 1)) == [rev])
    }

    @Test func startInTheFutureWaitsForIt() throws {
        let f = try WatchFixture()
        let now = try f.put("k", "0")
        let sink = RecordingSink()
        let h = f.watch(1, "k", from: now + 3, sink: sink)
        #expect(f.watchable.inspect(h)?.state == .synced)
        var revs: [Int64] = []
        for i in 1...5 { revs.append(try i % 2 == 0 ? f.putAll([("k", "\(i)"), ("j", "\(i)")]) : f.put("k", "\(i)")) }
        f.drain()
        #expect(revisionsOf(sink.events(for: 1)) == revs.filter { $0 >= now + 3 })
    }

    // MARK: - prevKV and filters

    @Test func prevKVOnlyForWatchersThatAskLiveAndFromHistory() throws {
        let f = try WatchFixture()
        let sink = RecordingSink()
        _ = f.watch(1, "k", prevKV: true, sink: sink)
        _ = f.watch(2, "k", prevKV: false, sink: sink)
        let start = f.watchable.currentRevision + 1
        try f.put("k", "1")  // creation: no prevKv
        try f.put("k", "2")
        try f.delete("k")
        try f.put("k", "3")  // re-creation: no prevKv
        try f.putAll([("k", "4"), ("other", "x")])
        let live1 = sink.events(for: 1)
        let live2 = sink.events(for: 2)
        try #require(live1.count == 5)
        #expect(live1.map(\.hasPrevKv) == [false, true, true, false, true])
        #expect(live1[1].prevKv.value == d("1"))
        #expect(live1[2].prevKv.value == d("2"))
        #expect(live1[4].prevKv.value == d("3"))
        #expect(live2.allSatisfy { !$0.hasPrevKv })
        #expect(live2.count == 5)

        // The same revisions read back from the backend are identical.
        _ = f.watch(3, "k", from: start, prevKV: true, sink: sink)
        _ = f.watch(4, "k", from: start, prevKV: false, sink: sink)
        f.drain()
        #expect(sink.events(for: 3) == live1)
        #expect(sink.events(for: 4) == live2)
    }

    @Test func historyMatchesLiveForRangesAndTxns() throws {
        let f = try WatchFixture()
        let sink = RecordingSink()
        let start = f.watchable.currentRevision + 1
        _ = f.watch(1, "a", "\0", prevKV: true, sink: sink)
        try f.putAll([("a", "1"), ("b", "1"), ("c", "1")])
        try f.put("b", "2")
        try f.delete("a", "c")
        try f.putAll([("a", "2"), ("c", "2")], deleting: ["b"])
        _ = f.watch(2, "a", "\0", from: start, prevKV: true, sink: sink)
        f.drain()
        #expect(sink.events(for: 2) == sink.events(for: 1))
        #expect(sink.deliveries(for: 1).count == 4)
    }

    @Test func prevKVLookedUpWhenTheStoreLeavesItOut() throws {
        let f = try WatchFixture(store: StoreConfig(eventsIncludePrevKv: false))
        let sink = RecordingSink()
        _ = f.watch(1, "k", prevKV: true, sink: sink)
        _ = f.watch(2, "k", sink: sink)
        try f.put("k", "1")
        try f.put("k", "2")
        try f.delete("k")
        let live = sink.events(for: 1)
        try #require(live.count == 3)
        #expect(live.map(\.hasPrevKv) == [false, true, true])
        #expect(live[1].prevKv.value == d("1"))
        #expect(live[2].prevKv.value == d("2"))
        #expect(sink.events(for: 2).allSatisfy { !$0.hasPrevKv })
        _ = f.watch(3, "k", from: 2, prevKV: true, sink: sink)
        f.drain()
        #expect(sink.events(for: 3) == live)
    }

    @Test func filtersDropEventsAndEmptyDeliveries() throws {
        let f = try WatchFixture()
        let sink = RecordingSink()
        _ = f.watch(1, "a", "\0", filters: .noPut, sink: sink)
        _ = f.watch(2, "a", "\0", filters: .noDelete, sink: sink)
        _ = f.watch(3, "a", "\0", filters: [.noPut, .noDelete], sink: sink)
        let start = f.watchable.currentRevision + 1
        try f.put("a", "1")
        try f.putAll([("b", "1")], deleting: ["a"])
        try f.delete("b")
        // noPut: only deletes; the put-only revision sends nothing at all.
        #expect(sink.deliveries(for: 1).map { $0.events.map(\.type) } == [[.delete], [.delete]])
        #expect(sink.deliveries(for: 2).map { $0.events.map(\.type) } == [[.put], [.put]])
        #expect(sink.deliveries(for: 3).isEmpty)
        // Same from history.
        _ = f.watch(4, "a", "\0", from: start, filters: .noPut, sink: sink)
        _ = f.watch(5, "a", "\0", from: start, filters: .noDelete, sink: sink)
        _ = f.watch(6, "a", "\0", from: start, filters: [.noPut, .noDelete], sink: sink)
        f.drain()
        #expect(sink.events(for: 4) == sink.events(for: 1))
        #expect(sink.events(for: 5) == sink.events(for: 2))
        #expect(sink.deliveries(for: 6).isEmpty)
        #expect(f.watchable.counts == (6, 0, 0))
        // Progress notifications are not filtered.
        #expect(f.watchable.requestProgress(f.watch(7, "a", filters: [.noPut, .noDelete], sink: sink)))
    }

    @Test func filtersFromTheRequest() {
        #expect(WatchFilters([.noput]) == .noPut)
        #expect(WatchFilters([.nodelete, .noput]) == [.noPut, .noDelete])
        #expect(WatchFilters([.UNRECOGNIZED(7)]) == [])
    }

    // MARK: - Cancel

    @Test func cancelStopsDeliveriesInEveryState() throws {
        let f = try WatchFixture()
        let sink = RecordingSink()
        let synced = f.watch(1, "k", sink: sink)
        let unsynced = f.watch(2, "k", from: 1, sink: sink)
        try f.put("k", "1")
        #expect(f.watchable.cancel(synced))
        #expect(!f.watchable.cancel(synced))
        #expect(f.watchable.cancel(unsynced))
        let victimSink = RecordingSink()
        let victim = f.watch(3, "k", sink: victimSink)
        victimSink.accepting = false
        try f.put("k", "2")
        #expect(f.watchable.counts == (0, 0, 1))
        #expect(f.watchable.cancel(victim))
        victimSink.accepting = true
        try f.put("k", "3")
        f.drain()
        #expect(sink.deliveries(for: 1).count == 1)
        #expect(sink.deliveries(for: 2).isEmpty)
        #expect(victimSink.deliveries.isEmpty)
        #expect(f.watchable.counts == (0, 0, 0))
        #expect(!f.watchable.requestProgress(synced))
    }

    // MARK: - Compaction

    @Test func startBelowTheCompactionGetsANoticeAndIsRemoved() throws {
        let f = try WatchFixture()
        for i in 0..<6 { try f.put("k", "\(i)") }  // revisions 2...7
        _ = try f.kv.compact(5)
        try f.kv.finishCompaction()
        let sink = RecordingSink()
        let below = f.watch(1, "k", from: 4, sink: sink)
        let at = f.watch(2, "k", from: 5, sink: sink)
        #expect(f.watchable.syncUnsynced() == 0)
        let notice = sink.deliveries(for: 1)
        try #require(notice.count == 1)
        #expect(notice[0].compactRevision == 5)
        #expect(notice[0].events.isEmpty)
        #expect(notice[0].revision == 7)
        #expect(f.watchable.inspect(below) == nil)
        #expect(!f.watchable.cancel(below))
        // As in etcd, a start equal to the compaction revision is served.
        #expect(revisionsOf(sink.events(for: 2)) == [5, 6, 7])
        #expect(f.watchable.inspect(at)?.state == .synced)
        #expect(f.watchable.counts == (1, 0, 0))
    }

    @Test func compactionNoticeIsRetriedWhenRefused() throws {
        let f = try WatchFixture()
        for i in 0..<4 { try f.put("k", "\(i)") }
        _ = try f.kv.compact(4)
        let sink = RecordingSink()
        sink.accepting = false
        let h = f.watch(1, "k", from: 2, sink: sink)
        #expect(f.watchable.syncUnsynced() == 1)
        #expect(f.watchable.inspect(h)?.state == .unsynced)
        sink.accepting = true
        #expect(f.watchable.syncUnsynced() == 0)
        #expect(sink.deliveries.map(\.compactRevision) == [4])
    }

    @Test func compactionWhileUnsyncedGivesANoticeAtTheNextSync() throws {
        let f = try WatchFixture(WatchConfig(maxRevisionsPerSync: 3))
        var revs: [Int64] = []
        for i in 0..<12 { revs.append(try f.put("k", "\(i)")) }
        let sink = RecordingSink()
        let h = f.watch(1, "k", from: revs[0], sink: sink)
        #expect(f.watchable.syncUnsynced() == 1)  // first three revisions
        #expect(revisionsOf(sink.events(for: 1)) == Array(revs[0..<3]))
        #expect(f.watchable.inspect(h)?.nextRev == revs[3])
        _ = try f.kv.compact(revs[6])
        #expect(f.watchable.syncUnsynced() == 0)
        let got = sink.deliveries(for: 1)
        try #require(got.count == 2)
        #expect(got[1].compactRevision == revs[6])
        #expect(f.watchable.inspect(h) == nil)
    }

    @Test func syncedWatchersIgnoreCompaction() throws {
        let f = try WatchFixture()
        let sink = RecordingSink()
        _ = f.watch(1, "k", sink: sink)
        for i in 0..<4 { try f.put("k", "\(i)") }
        _ = try f.kv.compact(f.kv.currentRevision)
        let rev = try f.put("k", "after")
        f.drain()
        #expect(sink.deliveries.allSatisfy { $0.compactRevision == 0 })
        #expect(sink.events(for: 1).last?.kv.modRevision == rev)
    }

    /// A deletion at exactly the compaction revision: compaction keeps the
    /// tombstone, so a watch from that revision still gets the delete (etcd
    /// lost it before etcd-io/etcd#18274, 3.5.15).
    @Test func deleteAtTheCompactionRevisionStaysInHistory() throws {
        let f = try WatchFixture()
        try f.put("k", "1")
        let deleted = try f.delete("k")
        try f.put("other", "x")
        _ = try f.kv.compact(deleted)
        try f.kv.finishCompaction()
        let sink = RecordingSink()
        _ = f.watch(1, "k", from: deleted, sink: sink)
        f.drain()
        // Compaction keeps a tombstone exactly at its revision (etcd 3.5.15's fix).
        #expect(revisionsOf(sink.events(for: 1)) == [deleted])
    }

    @Test func prevKVOfAnEventAtTheCompactionRevisionIsGone() throws {
        let f = try WatchFixture()
        try f.put("k", "1")
        let second = try f.put("k", "2")
        let third = try f.put("k", "3")
        _ = try f.kv.compact(second)
        try f.kv.finishCompaction()
        let sink = RecordingSink()
        _ = f.watch(1, "k", from: second, prevKV: true, sink: sink)
        f.drain()
        let got = sink.events(for: 1)
        try #require(got.count == 2)
        #expect(revisionsOf(got) == [second, third])
        // etcd's watch API reads prevKv at revision - 1, which is compacted for the first one.
        #expect(got.map(\.hasPrevKv) == [false, true])
        #expect(got[1].prevKv.value == d("2"))
    }

    // MARK: - Victims

    @Test func refusedDeliveryMakesAVictimThatRecoversWithoutLossOrRepeats() throws {
        let f = try WatchFixture()
        let slow = RecordingSink()
        let fast = RecordingSink()
        let h = f.watch(1, "k", sink: slow)
        _ = f.watch(2, "k", sink: fast)
        let r1 = try f.put("k", "1")
        slow.accepting = false
        let r2 = try f.put("k", "2")  // refused: the watcher holds it
        #expect(f.watchable.counts == (1, 0, 1))
        let r3 = try f.put("k", "3")  // not offered to the victim
        let r4 = try f.put("k", "4")
        #expect(f.watchable.retryVictims() == 1)
        #expect(f.watchable.inspect(h)?.state == .victim)
        slow.accepting = true
        #expect(f.watchable.retryVictims() == 0)
        #expect(revisionsOf(slow.events(for: 1)) == [r1, r2])
        // It missed r3 and r4, so it is unsynced now, and catches up.
        #expect(f.watchable.inspect(h)?.state == .unsynced)
        #expect(f.watchable.requestProgress(h) == false)
        #expect(f.watchable.syncUnsynced() == 0)
        #expect(revisionsOf(slow.events(for: 1)) == [r1, r2, r3, r4])
        let r5 = try f.put("k", "5")
        #expect(revisionsOf(slow.events(for: 1)) == [r1, r2, r3, r4, r5])
        #expect(revisionsOf(fast.events(for: 2)) == [r1, r2, r3, r4, r5])
    }

    @Test func victimWithNothingMissedRejoinsTheSynced() throws {
        let f = try WatchFixture()
        let sink = RecordingSink()
        let h = f.watch(1, "k", sink: sink)
        sink.accepting = false
        let r1 = try f.put("k", "1")
        sink.accepting = true
        #expect(f.watchable.retryVictims() == 0)
        #expect(f.watchable.inspect(h)?.state == .synced)
        let r2 = try f.put("k", "2")
        #expect(revisionsOf(sink.events(for: 1)) == [r1, r2])
    }

    @Test func refusedCatchUpDeliveryMakesAVictim() throws {
        let f = try WatchFixture()
        var revs: [Int64] = []
        for i in 0..<3 { revs.append(try f.put("k", "\(i)")) }
        let sink = RecordingSink()
        sink.accepting = false
        let h = f.watch(1, "k", from: revs[0], sink: sink)
        #expect(f.watchable.syncUnsynced() == 0)
        #expect(f.watchable.inspect(h)?.state == .victim)
        revs.append(try f.put("k", "3"))
        sink.accepting = true
        f.drain()
        #expect(revisionsOf(sink.events(for: 1)) == revs)
        #expect(sink.deliveries(for: 1).count == 2)
    }

    // MARK: - Progress

    @Test func progressOnlyForSyncedWatchers() throws {
        let f = try WatchFixture()
        try f.put("k", "1")
        let sink = RecordingSink()
        let synced = f.watch(1, "k", sink: sink)
        let behind = f.watch(2, "k", from: 1, sink: sink)
        #expect(f.watchable.requestProgress(synced))
        #expect(!f.watchable.requestProgress(behind))
        let rev = f.watchable.currentRevision
        try #require(sink.deliveries.map(\.watchID) == [1])
        #expect(sink.deliveries[0].isProgress)
        #expect(sink.deliveries[0].revision == rev)
        f.drain()
        #expect(f.watchable.requestProgress(behind))
        #expect(sink.deliveries.last?.watchID == 2)
        #expect(sink.deliveries.last?.revision == rev)
    }

    @Test func progressAnnouncesOnlyNotifiedRevisions() throws {
        let f = try WatchFixture()
        let sink = RecordingSink()
        let h = f.watch(1, "k", sink: sink)
        let before = f.watchable.currentRevision
        // Written, but the apply loop has not called notify yet.
        let result = try f.kv.put(putRequest("k", "1"))
        #expect(f.watchable.requestProgress(h))
        #expect(sink.deliveries.last?.revision == before)
        f.watchable.notify(result.events, revision: result.revision)
        #expect(f.watchable.requestProgress(h))
        #expect(sink.deliveries.map(\.revision) == [before, result.revision, result.revision])
    }

    @Test func progressAllOnlyWhenEveryWatcherOfTheSinkIsSynced() throws {
        let f = try WatchFixture()
        try f.put("k", "1")
        let sink = RecordingSink()
        let other = RecordingSink()
        // No watchers yet: answered at once.
        #expect(f.watchable.requestProgressAll(sink: sink))
        _ = f.watch(1, "k", sink: sink)
        _ = f.watch(2, "k", from: 1, sink: sink)
        _ = f.watch(3, "k", from: 1, sink: other)
        #expect(!f.watchable.requestProgressAll(sink: sink))
        f.drain()
        #expect(f.watchable.requestProgressAll(sink: sink))
        let progress = sink.deliveries.filter { $0.watchID == -1 }
        #expect(progress.count == 2)
        #expect(progress.allSatisfy { $0.isProgress && $0.revision == f.watchable.currentRevision })
        // A victim counts as behind too.
        sink.accepting = false
        try f.put("k", "2")
        #expect(!f.watchable.requestProgressAll(sink: sink))
        sink.accepting = true
        #expect(!f.watchable.requestProgressAll(sink: sink))
        f.drain()
        #expect(f.watchable.requestProgressAll(sink: sink))
        // Refused: reported, so the server can retry.
        sink.accepting = false
        #expect(!f.watchable.requestProgressAll(sink: sink))
        #expect(other.deliveries.allSatisfy { $0.watchID == 3 })
    }

    // MARK: - Races with the writer

    @Test func catchUpReadsOnlyNotifiedRevisions() throws {
        let f = try WatchFixture()
        let r1 = try f.put("k", "1")
        let sink = RecordingSink()
        let h = f.watch(1, "k", from: r1, sink: sink)
        // Revision r2 is in the backend, its notify has not come yet.
        let pending = try f.kv.put(putRequest("k", "2"))
        #expect(f.watchable.syncUnsynced() == 0)
        #expect(revisionsOf(sink.events(for: 1)) == [r1])
        #expect(f.watchable.inspect(h)?.state == .synced)
        f.watchable.notify(pending.events, revision: pending.revision)
        #expect(revisionsOf(sink.events(for: 1)) == [r1, pending.revision])
        // A repeated notify is ignored.
        f.watchable.notify(pending.events, revision: pending.revision)
        #expect(revisionsOf(sink.events(for: 1)) == [r1, pending.revision])
    }

    @Test func notifyDuringTheBackendReadIsNotLost() throws {
        let f = try WatchFixture()
        let r1 = try f.put("k", "1")
        let sink = RecordingSink()
        let h = f.watch(1, "k", from: r1, sink: sink)
        var r2: Int64 = 0
        // The writer gets in between the sync round's read and its apply.
        f.watchable.afterHistoryRead = { r2 = try! f.put("k", "2") }
        #expect(f.watchable.syncUnsynced() == 1)
        f.watchable.afterHistoryRead = nil
        #expect(revisionsOf(sink.events(for: 1)) == [r1])
        #expect(f.watchable.inspect(h)?.state == .unsynced)
        #expect(!f.watchable.requestProgress(h))
        #expect(f.watchable.syncUnsynced() == 0)
        #expect(revisionsOf(sink.events(for: 1)) == [r1, r2])
        let r3 = try f.put("k", "3")
        #expect(revisionsOf(sink.events(for: 1)) == [r1, r2, r3])
    }

    @Test func cancelDuringTheBackendReadDropsTheResult() throws {
        let f = try WatchFixture()
        try f.put("k", "1")
        let sink = RecordingSink()
        let h = f.watch(1, "k", from: 1, sink: sink)
        f.watchable.afterHistoryRead = { #expect(f.watchable.cancel(h)) }
        #expect(f.watchable.syncUnsynced() == 0)
        #expect(sink.deliveries.isEmpty)
        #expect(f.watchable.counts == (0, 0, 0))
    }

    @Test func concurrentWritesSyncsAndVictimsLoseNothing() async throws {
        let f = try WatchFixture(WatchConfig(maxWatchersPerSync: 4, maxRevisionsPerSync: 7))
        let sinks = (0..<3).map { _ in RecordingSink() }
        let writes = 300
        let keys = ["a", "b", "c", "d"]
        let watchable = f.watchable
        let kv = f.kv
        // The writer: puts and deletes, each followed by notify.
        let writer = Task.detached {
            for i in 0..<writes {
                let key = keys[i % keys.count]
                let result = try kv.put(putRequest(key, "\(i)"))
                watchable.notify(result.events, revision: result.revision)
                if i % 7 == 0 {
                    let deleted = try kv.deleteRange(deleteRequest(key))
                    watchable.notify(deleted.events, revision: deleted.revision)
                }
            }
        }
        // Watchers created meanwhile from random past revisions, sinks that flap.
        var rng = SeededRandom(seed: 7)
        var created: [(id: Int64, start: Int64, sink: RecordingSink, key: String)] = []
        for id in 1...60 {
            let now = watchable.currentRevision
            // Explicit starts (0 would depend on when the writer got there).
            let start = id % 3 == 0 ? now + Int64.random(in: 1...3, using: &rng) : Int64.random(in: 1...max(1, now), using: &rng)
            let sink = sinks[id % sinks.count]
            let key = keys[id % keys.count]
            _ = watchable.watch(
                watchID: Int64(id), key: d(key), rangeEnd: Data(), startRevision: start, prevKV: id % 2 == 0,
                filters: [], sink: sink)
            created.append((Int64(id), start, sink, key))
            sinks[Int.random(in: 0..<3, using: &rng)].accepting = Bool.random(using: &rng)
            watchable.syncUnsynced()
            watchable.retryVictims()
            await Task.yield()
        }
        try await writer.value
        for sink in sinks { sink.accepting = true }
        f.drain()
        // Every watcher got exactly the history of its key from its start.
        for w in created {
            let got = w.sink.events(for: w.id)
            let revs = revisionsOf(got)
            #expect(revs == revs.sorted() && Set(revs).count == revs.count, "watcher \(w.id) out of order or repeated")
            #expect(got.allSatisfy { String(decoding: $0.kv.key, as: UTF8.self) == w.key })
            // Compare with a fresh catch-up from the same start.
            let check = RecordingSink()
            _ = watchable.watch(
                watchID: 1000 + w.id, key: d(w.key), rangeEnd: Data(), startRevision: w.start,
                prevKV: w.id % 2 == 0, filters: [], sink: check)
            f.drain()
            #expect(got == check.events(for: 1000 + w.id), "watcher \(w.id) from \(w.start)")
        }
    }

    // MARK: - Scale and bounds

    @Test func manyWatchersOfOneKeyShareOneEventArray() throws {
        let f = try WatchFixture()
        let sinks = (0..<10).map { _ in RecordingSink() }
        for i in 0..<1000 { _ = f.watch(Int64(i), "hot", sink: sinks[i % 10]) }
        for i in 0..<100 { _ = f.watch(Int64(5000 + i), "h", "i", prevKV: true, sink: sinks[i % 10]) }
        for i in 0..<100 { _ = f.watch(Int64(6000 + i), "cold\(i)", sink: sinks[i % 10]) }
        try f.put("hot", "1")
        let rev = try f.put("hot", "2")
        let latest = sinks.flatMap(\.deliveries).filter { $0.revision == rev }
        #expect(latest.count == 1100)
        let plain = latest.filter { $0.watchID < 5000 }
        let withPrev = latest.filter { $0.watchID >= 5000 }
        #expect(plain.allSatisfy { !$0.events[0].hasPrevKv })
        #expect(withPrev.allSatisfy { $0.events[0].prevKv.value == d("1") })
        func storage(_ d: WatchDelivery) -> UnsafeRawPointer? {
            d.events.withUnsafeBufferPointer { UnsafeRawPointer($0.baseAddress) }
        }
        #expect(Set(plain.map(storage)).count == 1)
        #expect(Set(withPrev.map(storage)).count == 1)
        // One SharedEvents per shape, so the events are serialised once each.
        #expect(plain.allSatisfy { $0.shared != nil } && withPrev.allSatisfy { $0.shared != nil })
        #expect(Set(plain.map { ObjectIdentifier($0.shared!) }).count == 1)
        #expect(Set(withPrev.map { ObjectIdentifier($0.shared!) }).count == 1)
        #expect(plain[0].shared!.events == plain[0].events)
    }

    /// What a stream sends: the serialised header, watch id and shared
    /// events joined are exactly the whole response's bytes.
    @Test func sharedEventsJoinedWithHeaderAndIDAreTheWholeResponse() throws {
        let f = try WatchFixture()
        let sink = RecordingSink()
        _ = f.watch(300, "a", "c", prevKV: true, sink: sink)
        _ = try f.put("a", "1")
        let rev = try f.putAll([("a", "2"), ("b", String(repeating: "x", count: 300))], deleting: [])
        let delivery = try #require(sink.deliveries(for: 300).last)
        #expect(delivery.revision == rev && delivery.events.count == 2)
        let shared = try #require(delivery.shared)

        var header = Etcdserverpb_ResponseHeader()
        header.clusterID = 0x1234_5678_9ABC
        header.memberID = 42
        header.revision = rev
        header.raftTerm = 3
        var whole = Etcdserverpb_WatchResponse()
        whole.header = header
        whole.watchID = 300
        whole.events = delivery.events
        var headerOnly = Etcdserverpb_WatchResponse()
        headerOnly.header = header
        var idOnly = Etcdserverpb_WatchResponse()
        idOnly.watchID = 300
        let joined: [UInt8] = try headerOnly.serializedBytes() + idOnly.serializedBytes() + shared.encodedResponse
        #expect(joined == (try whole.serializedBytes() as [UInt8]))
        #expect(try Etcdserverpb_WatchResponse(serializedBytes: joined) == whole)
        // Made once: a second caller gets the same bytes.
        #expect(shared.encodedResponse == shared.encodedResponse)
    }

    @Test func catchUpIsBoundedAndCutAtRevisionBoundaries() throws {
        let f = try WatchFixture(WatchConfig(maxRevisionsPerSync: 4))
        var revs: [Int64] = []
        for i in 0..<10 { revs.append(try f.putAll([("a\(i)", "x"), ("b\(i)", "x")])) }
        let sink = RecordingSink()
        _ = f.watch(1, "a", "c", from: revs[0], sink: sink)
        #expect(f.watchable.syncUnsynced() == 1)
        #expect(f.watchable.syncUnsynced() == 1)
        #expect(f.watchable.syncUnsynced() == 0)
        let got = sink.deliveries(for: 1)
        #expect(got.map(\.revision) == [revs[3], revs[7], revs[9]])
        #expect(got.map(\.events.count) == [8, 8, 4])
        #expect(revisionsOf(sink.events(for: 1)) == revs.flatMap { [$0, $0] })
    }

    @Test func watchersNearTheHeadDoNotWaitForOneFarBehind() throws {
        let f = try WatchFixture(WatchConfig(maxRevisionsPerSync: 10))
        var revs: [Int64] = []
        for i in 0..<100 { revs.append(try f.put("k", "\(i)")) }
        let sink = RecordingSink()
        let far = f.watch(1, "k", from: revs[0], sink: sink)
        let near = f.watch(2, "k", from: revs[97], sink: sink)
        let middle = f.watch(3, "k", from: revs[50], sink: sink)
        f.watchable.syncUnsynced()
        #expect(f.watchable.inspect(near)?.state == .synced)
        #expect(revisionsOf(sink.events(for: 2)) == Array(revs[97...]))
        #expect(f.watchable.inspect(far)?.nextRev == revs[5])
        #expect(f.watchable.inspect(middle)?.nextRev == revs[50])
        f.drain()
        #expect(revisionsOf(sink.events(for: 1)) == revs)
        #expect(revisionsOf(sink.events(for: 3)) == Array(revs[50...]))
    }

    @Test func syncTakesAtMostMaxWatchersPerRound() throws {
        let f = try WatchFixture(WatchConfig(maxWatchersPerSync: 2))
        try f.put("k", "1")
        let sink = RecordingSink()
        for i in 0..<5 { _ = f.watch(Int64(i), "k", from: 1, sink: sink) }
        #expect(f.watchable.syncUnsynced() == 3)
        #expect(f.watchable.syncUnsynced() == 1)
        #expect(f.watchable.syncUnsynced() == 0)
        #expect(sink.deliveries.count == 5)
        #expect(f.watchable.counts == (5, 0, 0))
    }

    @Test func historyReadsTheOpenBatchAndCommittedData() throws {
        let f = try WatchFixture()
        let r1 = try f.put("k", "1")
        try f.kv.backend.forceCommit()
        let r2 = try f.put("k", "2")  // still in the open batch
        let sink = RecordingSink()
        _ = f.watch(1, "k", from: r1, prevKV: true, sink: sink)
        f.drain()
        let got = sink.events(for: 1)
        try #require(got.count == 2)
        #expect(revisionsOf(got) == [r1, r2])
        #expect(got[1].prevKv.value == d("1"))
    }
}
