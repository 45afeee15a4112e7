import Backend
import EtcdProto
import Foundation
import Testing

@testable import MVCC

/// The same deterministic history on every store: revision `r` (from 2)
/// writes key "k(r % 5)", every seventh one deletes it instead.
@discardableResult
private func write(_ revisions: ClosedRange<Int64>, to f: WatchFixture) throws -> [Mvccpb_Event] {
    var events: [Mvccpb_Event] = []
    for r in revisions {
        let key = "k\(r % 5)"
        if r % 7 == 0 {
            let result = try f.kv.deleteRange(deleteRequest(key))
            f.apply(result)
            events += result.events
        } else {
            let result = try f.kv.put(putRequest(key, "v\(r)"))
            f.apply(result)
            events += result.events
        }
    }
    #expect(f.kv.currentRevision == revisions.upperBound)
    return events
}

/// Installs `source`'s data in `f` as a follower does.
private func install(_ source: WatchFixture, into f: WatchFixture) throws {
    let file = try receiveSnapshot(of: source.kv, in: f.directory)
    try f.kv.reload { try f.kv.backend.replace(withFileAt: file) }
    f.watchable.restore()
}

/// Events as comparable strings (history events carry no prevKv).
private func summary(_ events: [Mvccpb_Event]) -> [String] {
    events.map { "\($0.type) \(String(decoding: $0.kv.key, as: UTF8.self))@\($0.kv.modRevision)=\(String(decoding: $0.kv.value, as: UTF8.self))" }
}

@Suite("WatchableStore restore")
struct WatchableStoreRestoreTests {
    @Test func syncedWatcherCatchesUpFromTheNewData() throws {
        let x = try WatchFixture(), s = try WatchFixture()
        try write(2...10, to: x)
        try write(2...10, to: s)
        let newEvents = try write(11...30, to: s)
        let sink = RecordingSink()
        let all = x.watch(1, "\0", "\0", sink: sink)
        let one = x.watch(2, "k3", sink: sink)
        let future = x.watch(3, "\0", "\0", from: 40, sink: sink)
        #expect(x.watchable.counts.synced == 3)

        try install(s, into: x)
        #expect(x.watchable.currentRevision == 30)
        #expect(x.watchable.counts == (synced: 1, unsynced: 2, victims: 0))
        #expect(x.watchable.inspect(all)! == (.unsynced, 11))
        #expect(x.watchable.inspect(future)! == (.synced, 40))
        x.watchable.syncUnsynced()
        #expect(x.watchable.counts == (synced: 3, unsynced: 0, victims: 0))
        #expect(summary(sink.events(for: 1)) == summary(newEvents))
        #expect(revisionsOf(sink.events(for: 1)) == Array(11...30))
        #expect(summary(sink.events(for: 2)) == summary(newEvents.filter { $0.kv.key == d("k3") }))
        #expect(sink.deliveries(for: 1).last?.revision == 30)
        #expect(sink.events(for: 3).isEmpty)

        // Live again from the new data on.
        sink.clear()
        try x.put("k3", "live")
        #expect(revisionsOf(sink.events(for: 1)) == [31])
        #expect(revisionsOf(sink.events(for: 2)) == [31])
        #expect(x.watchable.cancel(one))
    }

    @Test func watcherPassedByTheNewCompactionGetsTheNotice() throws {
        let x = try WatchFixture(), s = try WatchFixture()
        try write(2...10, to: x)
        try write(2...30, to: s)
        _ = try s.kv.compact(20)
        try s.kv.finishCompaction()
        let sink = RecordingSink()
        let handle = x.watch(1, "\0", "\0", sink: sink)

        try install(s, into: x)
        x.watchable.syncUnsynced()
        #expect(sink.deliveries(for: 1).count == 1)
        #expect(sink.deliveries(for: 1)[0].compactRevision == 20)
        #expect(sink.deliveries(for: 1)[0].events.isEmpty)
        #expect(x.watchable.inspect(handle) == nil)
        #expect(x.watchable.counts == (synced: 0, unsynced: 0, victims: 0))
    }

    @Test func victimKeepsItsDeliveryAndThenCatchesUp() throws {
        let x = try WatchFixture(), s = try WatchFixture()
        try write(2...9, to: x)
        let sink = RecordingSink()
        let victim = x.watch(1, "\0", "\0", sink: sink)
        sink.accepting = false
        let held = try write(10...10, to: x)
        #expect(x.watchable.counts.victims == 1)
        try write(2...10, to: s)
        let newEvents = try write(11...30, to: s)

        try install(s, into: x)
        #expect(x.watchable.counts == (synced: 0, unsynced: 0, victims: 1))
        sink.accepting = true
        x.drain()
        #expect(summary(sink.events(for: 1)) == summary(held + newEvents))
        #expect(x.watchable.inspect(victim)! == (.synced, 31))
    }

    @Test(arguments: [false, true])
    func catchUpReadOfTheOldDataStaysValid(compacted: Bool) throws {
        let x = try WatchFixture(), s = try WatchFixture()
        let old = try write(2...10, to: x)
        try write(2...10, to: s)
        let newEvents = try write(11...30, to: s)
        if compacted {
            _ = try s.kv.compact(20)
            try s.kv.finishCompaction()
        }
        let sink = RecordingSink()
        let handle = x.watch(1, "\0", "\0", from: 5, sink: sink)
        // The install gets in between the sync round's read and its apply.
        x.watchable.afterHistoryRead = { try! install(s, into: x) }
        #expect(x.watchable.syncUnsynced() == 1)
        x.watchable.afterHistoryRead = nil
        let fromOld = old.filter { $0.kv.modRevision >= 5 }
        #expect(summary(sink.events(for: 1)) == summary(fromOld))
        #expect(x.watchable.inspect(handle)! == (.unsynced, 11))
        x.watchable.syncUnsynced()
        if compacted {
            #expect(sink.deliveries(for: 1).last?.compactRevision == 20)
            #expect(x.watchable.inspect(handle) == nil)
        } else {
            #expect(summary(sink.events(for: 1)) == summary(fromOld + newEvents))
            #expect(x.watchable.inspect(handle)! == (.synced, 31))
        }
    }

    @Test func restoresWhileOtherThreadsWatchCancelAndSync() throws {
        let x = try WatchFixture(WatchConfig(maxRevisionsPerSync: 7)), s = try WatchFixture()
        try write(2...10, to: x)
        try write(2...10, to: s)
        let sink = RecordingSink()
        _ = x.watch(1, "\0", "\0", sink: sink)
        let stop = Flag()
        let churn = RecordingSink()
        let watchable = x.watchable
        var threads: [Thread] = []
        for t in 0..<2 {
            let thread = Thread {
                var n: Int64 = 0
                while !stop.isSet {
                    n += 1
                    let handle = watchable.watch(
                        watchID: 100 + n, key: d("k\(n % 5)"), rangeEnd: Data(), startRevision: n % 30,
                        prevKV: t == 0, filters: [], sink: churn)
                    watchable.syncUnsynced()
                    watchable.retryVictims()
                    if n > 20 { watchable.cancel(handle) }
                }
            }
            thread.start()
            threads.append(thread)
        }
        var expected: [Mvccpb_Event] = []
        for step: Int64 in 1...4 {
            expected += try write((10 * step + 1)...(10 * step + 10), to: s)
            if step % 2 == 0 { sink.accepting = false }
            try install(s, into: x)
            sink.accepting = true
            usleep(2000)
        }
        stop.set()
        while threads.contains(where: { !$0.isFinished }) { usleep(1000) }
        x.drain()
        #expect(summary(sink.events(for: 1)) == summary(expected))
        #expect(x.watchable.currentRevision == 50)
    }
}
