import Backend
import EtcdProto
import Foundation
import Testing

@testable import MVCC

/// A sink that refuses at random (with probability `refusal`) and logs
/// what it takes, together with the model revision at that moment and the
/// harness's markers (watcher created / cancelled), in one order.
final class FlakySink: WatchSink, @unchecked Sendable {
    enum Entry {
        case delivery(WatchDelivery, now: Int64)
        case created(Int)
        case cancelled(Int)
    }

    var log: [Entry] = []
    var refusal = 0.0
    /// The model revision (1: an empty store).
    var now: Int64 = 1
    private var rng: SeededRandom

    init(seed: UInt64) {
        rng = SeededRandom(seed: seed)
    }

    func offer(_ delivery: WatchDelivery) -> Bool {
        if refusal > 0 && Double.random(in: 0..<1, using: &rng) < refusal { return false }
        log.append(.delivery(delivery, now: now))
        return true
    }
}

/// One watcher as the harness knows it.
struct ModelWatcher {
    let id: Int64
    let handle: WatcherHandle
    let sink: Int
    let key: Data
    let end: Data
    /// The first revision it asked for (0 resolved to the next one).
    let start: Int64
    let prevKV: Bool
    let filters: WatchFilters
    /// The model revision when it was cancelled.
    var cancelledAt: Int64?
    /// A compaction happened while it was behind it: a notice is owed.
    var due = false
}

/// Random writes, compactions, watchers, cancels, flaky sinks and
/// interleaved sync/retry calls, checked against an independent model of
/// the key space.
final class WatchHarness {
    let seed: UInt64
    var rng: SeededRandom
    let directory = TemporaryDirectory()
    let kv: KVStore
    let watchable: WatchableStore
    let sinks: [FlakySink]
    let storeHasPrevKv: Bool

    // The model.
    var state: [Data: Mvccpb_KeyValue] = [:]
    var revision: Int64 = 1
    var history: [Int64: [Mvccpb_Event]] = [:]
    var compactRevision: Int64 = -1
    var compactions: Set<Int64> = []
    var watchers: [ModelWatcher] = []
    var nextWatchID: Int64 = 1
    var counter = 0

    static let keys = ["a", "a/1", "a/2", "ab", "b", "b/1", "c", "d", "d/x", "e"]

    init(seed: UInt64) throws {
        self.seed = seed
        rng = SeededRandom(seed: seed &* 0x9E37_79B9 &+ 1)
        storeHasPrevKv = seed % 4 != 3
        kv = try directory.openStore(StoreConfig(compactionBatchLimit: 3, eventsIncludePrevKv: storeHasPrevKv))
        let config = WatchConfig(
            maxWatchersPerSync: Int.random(in: 1...6, using: &rng),
            maxRevisionsPerSync: Int.random(in: 1...12, using: &rng))
        watchable = WatchableStore(store: kv, config: config)
        sinks = (0..<3).map { FlakySink(seed: seed &* 31 &+ UInt64($0)) }
    }

    func fail(_ message: String, sourceLocation: SourceLocation = #_sourceLocation) {
        Issue.record("seed \(seed): \(message)", sourceLocation: sourceLocation)
    }

    // MARK: Model helpers

    static func inRange(_ key: Data, _ start: Data, _ end: Data) -> Bool {
        if end.isEmpty { return key == start }
        if compareData(key, start) < 0 { return false }
        if end == Data([0]) { return true }
        return compareData(key, end) < 0
    }

    func randomKey() -> String { Self.keys.randomElement(using: &rng)! }

    /// A random watch or delete range: single key, range, prefix, from-key, all.
    func randomRange() -> (Data, Data) {
        switch Int.random(in: 0..<6, using: &rng) {
        case 0, 1: return (d(randomKey()), Data())
        case 2:
            var a = randomKey()
            var b = randomKey()
            if a == b { b += "0" }
            if a > b { swap(&a, &b) }
            return (d(a), d(b))
        case 3:
            let prefix = ["a", "a/", "b", "d"].randomElement(using: &rng)!
            var end = Array(prefix.utf8)
            end[end.count - 1] += 1
            return (d(prefix), Data(end))
        case 4: return (d(randomKey()), Data([0]))
        default: return (Data([0]), Data([0]))
        }
    }

    private func modelPut(_ key: Data, _ value: Data, at rev: Int64, into events: inout [Mvccpb_Event]) {
        let previous = state[key]
        var kv = Mvccpb_KeyValue()
        kv.key = key
        kv.value = value
        kv.createRevision = previous?.createRevision ?? rev
        kv.modRevision = rev
        kv.version = (previous?.version ?? 0) + 1
        state[key] = kv
        var e = Mvccpb_Event()
        e.type = .put
        e.kv = kv
        if let previous { e.prevKv = previous }
        events.append(e)
    }

    private func modelDelete(_ key: Data, _ end: Data, at rev: Int64, into events: inout [Mvccpb_Event]) {
        let doomed = state.keys.filter { Self.inRange($0, key, end) }.sorted { compareData($0, $1) < 0 }
        for k in doomed {
            var tombstone = Mvccpb_KeyValue()
            tombstone.key = k
            tombstone.modRevision = rev
            var e = Mvccpb_Event()
            e.type = .delete
            e.kv = tombstone
            e.prevKv = state[k]!
            events.append(e)
            state[k] = nil
        }
    }

    /// Checks the store's events against the model's, records the revision
    /// and notifies.
    private func commit<R>(_ result: WriteResult<R>, expected: [Mvccpb_Event]) {
        let comparable = storeHasPrevKv ? expected : expected.map { e in
            var e = e
            e.clearPrevKv()
            return e
        }
        if result.events != comparable {
            fail("store events differ from the model at \(revision + 1): \(result.events) vs \(comparable)")
        }
        guard !expected.isEmpty else { return }
        revision += 1
        if result.revision != revision { fail("store revision \(result.revision), model \(revision)") }
        history[revision] = expected
        for sink in sinks { sink.now = revision }
        watchable.notify(result.events, revision: result.revision)
    }

    // MARK: Operations

    func put() throws {
        counter += 1
        let key = d(randomKey())
        let value = d("v\(counter)")
        var events: [Mvccpb_Event] = []
        modelPut(key, value, at: revision + 1, into: &events)
        var request = Etcdserverpb_PutRequest()
        request.key = key
        request.value = value
        commit(try kv.put(request), expected: events)
    }

    func delete() throws {
        let (key, end) = randomRange()
        var events: [Mvccpb_Event] = []
        modelDelete(key, end, at: revision + 1, into: &events)
        var request = Etcdserverpb_DeleteRangeRequest()
        request.key = key
        request.rangeEnd = end
        commit(try kv.deleteRange(request), expected: events)
    }

    /// A txn: a version compare on one key, then several puts and maybe a
    /// single-key delete on distinct keys (one revision, several events).
    func txn() throws {
        counter += 1
        let compareKey = d(randomKey())
        let version = state[compareKey]?.version ?? 0
        let wanted = Bool.random(using: &rng) ? version : version + 1
        let succeeded = wanted == version
        func branch(_ count: Int) -> (puts: [Data], delete: Data?) {
            var keys = Set<String>()
            while keys.count < count { keys.insert(randomKey()) }
            let puts = keys.sorted().shuffled(using: &rng).map { d($0) }
            let others = Self.keys.filter { !keys.contains($0) }
            let delete = Bool.random(using: &rng) ? others.randomElement(using: &rng).map { d($0) } : nil
            return (puts, delete)
        }
        let success = branch(Int.random(in: 1...3, using: &rng))
        let failure = branch(1)
        var request = Etcdserverpb_TxnRequest()
        request.compare = [compare(String(decoding: compareKey, as: UTF8.self), .version, .equal, .version(wanted))]
        func ops(_ b: (puts: [Data], delete: Data?)) -> [Etcdserverpb_RequestOp] {
            var ops = b.puts.map { key -> Etcdserverpb_RequestOp in
                var p = Etcdserverpb_PutRequest()
                p.key = key
                p.value = d("t\(counter)")
                return .put(p)
            }
            if let delete = b.delete {
                var r = Etcdserverpb_DeleteRangeRequest()
                r.key = delete
                ops.insert(.delete(r), at: Int.random(in: 0...ops.count, using: &rng))
            }
            return ops
        }
        request.success = ops(success)
        request.failure = ops(failure)
        var events: [Mvccpb_Event] = []
        for op in succeeded ? request.success : request.failure {
            switch op.request {
            case .requestPut(let p)?: modelPut(p.key, p.value, at: revision + 1, into: &events)
            case .requestDeleteRange(let r)?: modelDelete(r.key, r.rangeEnd, at: revision + 1, into: &events)
            default: break
            }
        }
        commit(try kv.txn(request), expected: events)
    }

    /// Compacts at a random revision that has no deletion (a deletion at
    /// the compaction revision is lost by the KVStore's compaction: see
    /// `deleteAtTheCompactionRevisionIsLostFromHistory`).
    func compact(deferDue: Bool = false) throws {
        guard revision >= 2, compactRevision < revision else { return }
        let candidates = (max(2, compactRevision + 1)...revision).filter { rev in
            !(history[rev] ?? []).contains { $0.type == .delete }
        }
        guard let target = candidates.randomElement(using: &rng) else { return }
        _ = try kv.compact(target)
        compactRevision = target
        compactions.insert(target)
        if Bool.random(using: &rng) { try kv.finishCompaction() }
        if deferDue {
            compactedDuringSync = true
        } else {
            markDue()
        }
    }

    /// Every live watcher still behind the compaction revision is owed a notice.
    func markDue() {
        for i in watchers.indices where watchers[i].cancelledAt == nil {
            guard let (state, next) = watchable.inspect(watchers[i].handle) else { continue }
            if state != .synced && next < compactRevision { watchers[i].due = true }
        }
    }

    func watch() {
        let (key, end) = randomRange()
        let start: Int64
        switch Int.random(in: 0..<10, using: &rng) {
        case 0, 1, 2: start = 0
        case 3, 4, 5, 6: start = Int64.random(in: max(1, compactRevision - 2)...revision, using: &rng)
        case 7, 8: start = revision + Int64.random(in: 1...3, using: &rng)
        default: start = max(1, compactRevision)
        }
        let prevKV = Bool.random(using: &rng)
        var filters: WatchFilters = []
        if Int.random(in: 0..<5, using: &rng) == 0 { filters.insert(.noPut) }
        if Int.random(in: 0..<5, using: &rng) == 0 { filters.insert(.noDelete) }
        let s = Int.random(in: 0..<sinks.count, using: &rng)
        let id = nextWatchID
        nextWatchID += 1
        let handle = watchable.watch(
            watchID: id, key: key, rangeEnd: end, startRevision: start, prevKV: prevKV, filters: filters,
            sink: sinks[s])
        watchers.append(ModelWatcher(
            id: id, handle: handle, sink: s, key: key, end: end, start: start == 0 ? revision + 1 : start,
            prevKV: prevKV, filters: filters))
        sinks[s].log.append(.created(watchers.count - 1))
        markDue()
    }

    func cancel() {
        let live = watchers.indices.filter { watchers[$0].cancelledAt == nil }
        guard let i = live.randomElement(using: &rng) else { return }
        let noticed = sinks[watchers[i].sink].log.contains { entry in
            if case .delivery(let d, _) = entry { return d.watchID == watchers[i].id && d.compactRevision != 0 }
            return false
        }
        let removed = watchable.cancel(watchers[i].handle)
        if removed == noticed { fail("cancel of watcher \(watchers[i].id) returned \(removed), notice sent: \(noticed)") }
        watchers[i].cancelledAt = revision
        sinks[watchers[i].sink].log.append(.cancelled(i))
    }

    /// Compactions made while a sync round was between its read and its
    /// apply: who is owed a notice is decided once the round has applied.
    var compactedDuringSync = false

    /// Installs the hook that interleaves operations between a sync round's
    /// backend read and its apply, as a concurrent writer would.
    func interleaveWithSync() {
        watchable.afterHistoryRead = { [unowned self] in
            do {
                for _ in 0..<Int.random(in: 0...3, using: &rng) {
                    switch Int.random(in: 0..<12, using: &rng) {
                    case 0, 1: try put()
                    case 2: try delete()
                    case 3: try txn()
                    case 4: watch()
                    case 5: cancel()
                    case 6: watchable.retryVictims()
                    case 7: watchable.syncUnsynced()  // another round: returns at once
                    case 8:
                        sinks.randomElement(using: &rng)!.refusal = [0, 0.5, 1].randomElement(using: &rng)!
                    case 9:
                        if let w = watchers.filter({ $0.cancelledAt == nil }).randomElement(using: &rng) {
                            watchable.requestProgress(w.handle)
                        }
                    case 10: watchable.requestProgressAll(sink: sinks.randomElement(using: &rng)!)
                    default: try put()
                    }
                }
                if Int.random(in: 0..<10, using: &rng) == 0 {
                    try compact(deferDue: true)
                }
            } catch {
                fail("operation during a sync round: \(error)")
            }
        }
    }

    func sync() {
        watchable.syncUnsynced()
        if compactedDuringSync {
            compactedDuringSync = false
            markDue()
        }
    }

    func step() throws {
        switch Int.random(in: 0..<100, using: &rng) {
        case 0..<18: try put()
        case 18..<26: try delete()
        case 26..<36: try txn()
        case 36..<39: try compact()
        case 39..<42: _ = try kv.compactionStep()
        case 42..<44: _ = try kv.backend.commitIfDue()
        case 44..<45: try kv.backend.forceCommit()
        case 45..<57: watch()
        case 57..<62: cancel()
        case 62..<74: sync()
        case 74..<84: watchable.retryVictims()
        case 84..<90:
            sinks.randomElement(using: &rng)!.refusal = [0, 0, 0.3, 0.7, 1].randomElement(using: &rng)!
        case 90..<95:
            if let w = watchers.filter({ $0.cancelledAt == nil }).randomElement(using: &rng) {
                watchable.requestProgress(w.handle)
            }
        default:
            watchable.requestProgressAll(sink: sinks.randomElement(using: &rng)!)
        }
    }

    func drain() throws {
        for sink in sinks { sink.refusal = 0 }
        try kv.finishCompaction()
        watchable.afterHistoryRead = nil
        for _ in 0..<100_000 {
            watchable.retryVictims()
            sync()
            let counts = watchable.counts
            if counts.unsynced == 0 && counts.victims == 0 { break }
        }
        let counts = watchable.counts
        if counts.unsynced != 0 || counts.victims != 0 { fail("not drained: \(counts)") }
        // Everything left is synced: progress is answered for all, except
        // watchers waiting for a start beyond the store (and their sinks).
        var live = 0
        var waitingSinks = Set<Int>()
        for w in watchers where w.cancelledAt == nil && watchable.inspect(w.handle) != nil {
            live += 1
            let waiting = w.start > revision + 1
            if waiting { waitingSinks.insert(w.sink) }
            if watchable.requestProgress(w.handle) == waiting {
                fail(waiting ? "progress for watcher \(w.id) waiting for \(w.start) at \(revision)" : "no progress for synced watcher \(w.id)")
            }
        }
        if counts.synced != live { fail("\(counts.synced) synced, \(live) live watchers") }
        for (i, sink) in sinks.enumerated() where watchable.requestProgressAll(sink: sink) == waitingSinks.contains(i) {
            fail(waitingSinks.contains(i) ? "progress-all for a sink with a watcher waiting for a future start" : "no progress-all after drain")
        }
    }

    // MARK: Checking

    /// The model's events for a watcher, from its start through `last`.
    func expected(_ w: ModelWatcher, through last: Int64) -> [Mvccpb_Event] {
        var out: [Mvccpb_Event] = []
        if w.start > last { return out }
        for rev in max(2, w.start)...max(2, last) where rev <= last {
            for e in history[rev] ?? [] where Self.inRange(e.kv.key, w.key, w.end) && w.filters.passes(e.type) {
                var e = e
                if !w.prevKV { e.clearPrevKv() }
                out.append(e)
            }
        }
        return out
    }

    /// Equal, except that prevKv may be missing for an event at a
    /// compaction revision (its previous value was compacted away before a
    /// catch-up read it, as with etcd's lookup at revision - 1).
    func same(_ got: Mvccpb_Event, _ want: Mvccpb_Event) -> Bool {
        if got == want { return true }
        if !got.hasPrevKv && want.hasPrevKv && compactions.contains(want.kv.modRevision) {
            var w = want
            w.clearPrevKv()
            return got == w
        }
        return false
    }

    func check() {
        let expectations: [[Mvccpb_Event]] = watchers.map { expected($0, through: $0.cancelledAt ?? revision) }
        var delivered: [[Mvccpb_Event]] = Array(repeating: [], count: watchers.count)
        var deliveries: [[WatchDelivery]] = Array(repeating: [], count: watchers.count)
        var seen: [Int64] = Array(repeating: Int64.min, count: watchers.count)
        var notices: [WatchDelivery?] = Array(repeating: nil, count: watchers.count)
        let byID = Dictionary(uniqueKeysWithValues: watchers.enumerated().map { ($1.id, $0) })

        func progress(_ i: Int, _ d: WatchDelivery, now: Int64) {
            let owed = expectations[i].prefix { $0.kv.modRevision <= d.revision }.count
            if delivered[i].count < owed {
                fail("watcher \(watchers[i].id): progress at \(d.revision) (id \(d.watchID)) before \(owed - delivered[i].count) of its events")
            }
            if d.revision < seen[i] { fail("watcher \(watchers[i].id): progress \(d.revision) after \(seen[i])") }
            if d.revision > now { fail("watcher \(watchers[i].id): progress \(d.revision) announces the future (\(now))") }
            seen[i] = max(seen[i], d.revision)
        }

        for sink in sinks {
            var active = Set<Int>()
            for entry in sink.log {
                switch entry {
                case .created(let i): active.insert(i)
                case .cancelled(let i): active.remove(i)
                case .delivery(let d, let now):
                    if d.watchID == -1 {
                        if !d.isProgress { fail("stream-wide delivery with content: \(d)") }
                        for i in active.sorted() { progress(i, d, now: now) }
                        continue
                    }
                    guard let i = byID[d.watchID] else {
                        fail("delivery for unknown watch id \(d.watchID)")
                        continue
                    }
                    guard active.contains(i) else {
                        fail("watcher \(d.watchID): delivery while not active: \(d)")
                        continue
                    }
                    if d.compactRevision != 0 {
                        notices[i] = d
                        active.remove(i)
                        if !d.events.isEmpty { fail("watcher \(d.watchID): compaction notice with events") }
                        continue
                    }
                    if d.events.isEmpty {
                        progress(i, d, now: now)
                        continue
                    }
                    let revs = d.events.map(\.kv.modRevision)
                    if revs != revs.sorted() { fail("watcher \(d.watchID): events out of order in \(revs)") }
                    if revs.last! > d.revision { fail("watcher \(d.watchID): events after the delivery revision \(d.revision)") }
                    if d.revision > now { fail("watcher \(d.watchID): delivery revision \(d.revision) in the future (\(now))") }
                    if d.revision < seen[i] { fail("watcher \(d.watchID): delivery revision \(d.revision) after \(seen[i])") }
                    if let last = delivered[i].last?.kv.modRevision, last >= revs.first! {
                        fail("watcher \(d.watchID): revision \(revs.first!) repeated or split (previous delivery ended at \(last))")
                    }
                    seen[i] = max(seen[i], d.revision)
                    delivered[i] += d.events
                    deliveries[i].append(d)
                }
            }
        }

        for (i, w) in watchers.enumerated() {
            let got = delivered[i]
            let want = expectations[i]
            let prefixOK = got.count <= want.count && zip(got, want).allSatisfy { same($0, $1) }
            if let notice = notices[i] {
                if !w.due { fail("watcher \(w.id) from \(w.start): compaction notice \(notice.compactRevision) not due") }
                if !compactions.contains(notice.compactRevision) { fail("watcher \(w.id): notice for unknown compaction \(notice.compactRevision)") }
                if w.start >= notice.compactRevision { fail("watcher \(w.id): notice \(notice.compactRevision) for start \(w.start)") }
                if let last = deliveries[i].last, last.revision >= notice.compactRevision {
                    fail("watcher \(w.id): notice \(notice.compactRevision) after a delivery complete through \(last.revision)")
                }
                if !prefixOK { fail("watcher \(w.id): stream before the notice is not a prefix of the model's") }
            } else if w.cancelledAt != nil {
                if !prefixOK { fail("watcher \(w.id) (cancelled): stream is not a prefix of the model's\n got \(revisionsOf(got))\nwant \(revisionsOf(want))") }
            } else {
                if w.due { fail("watcher \(w.id) from \(w.start): owed a compaction notice, got none") }
                if !(got.count == want.count && prefixOK) {
                    fail("watcher \(w.id) [\(w.key.debugDescription) \(String(decoding: w.key, as: UTF8.self)), \(String(decoding: w.end, as: UTF8.self))) from \(w.start) prevKV \(w.prevKV) filters \(w.filters.rawValue): stream differs\n got \(revisionsOf(got)) \(keysOf(got))\nwant \(revisionsOf(want)) \(keysOf(want))")
                }
            }
            // A cut-off stream ends at a revision boundary (atomic deliveries).
            if let last = got.last, got.count < want.count,
               want[got.count].kv.modRevision == last.kv.modRevision {
                fail("watcher \(w.id): revision \(last.kv.modRevision) delivered in part")
            }
        }
    }
}

@Suite("Watch model")
struct WatchModelTests {
    @Test(arguments: 0..<50)
    func randomHistoryMatchesTheModel(seed: Int) throws {
        let harness = try WatchHarness(seed: UInt64(seed))
        harness.interleaveWithSync()
        for _ in 0..<400 { try harness.step() }
        try harness.drain()
        harness.check()
    }
}
