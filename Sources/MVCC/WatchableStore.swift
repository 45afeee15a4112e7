import Backend
import EtcdProto
import Foundation

/// The server-independent core of etcd's Watch over a `KVStore`.
///
/// Every watcher is in one of three sets:
/// - *synced*: it has every event up to the last revision the writer
///   reported through `notify`; `notify` hands it each new revision's events
///   at once. Found by key through a `WatchGroup` (a hash map for single keys,
///   an interval index for ranges).
/// - *unsynced*: behind (a start revision in the past, or events missed while
///   a victim); `syncUnsynced` reads its events from the backend in bounded
///   rounds and moves it to synced once it has caught up.
/// - *victims*: its sink refused a delivery; the watcher holds that one
///   delivery (nothing more: later events are read again from the backend),
///   and `retryVictims` offers it again.
///
/// Each watcher remembers `nextRev`, the first revision it has not been
/// given, and is never offered an event below it; whatever is not handed to
/// it live is read back from the backend. So a slow sink costs the writer
/// nothing, and no event is lost or repeated.
///
/// The store's notion of "now" is the last revision reported by `notify`
/// (`currentRevision`), not the KVStore's own revision, which may be one
/// write ahead: history is read only up to it, progress notifications
/// announce it, and `startRevision` 0 means the revision after it.
///
/// Threading: one internal lock guards all watcher state; sinks are offered
/// deliveries with it held (so a sink sees each watcher's deliveries in
/// order). The backend reads of `syncUnsynced` run outside it, under the
/// KVStore's read lock. There are no threads or timers here: the server
/// calls `syncUnsynced` (about every 100 ms) and `retryVictims` (about every
/// 10 ms), tests and simulations call them directly.
public final class WatchableStore: @unchecked Sendable {
    public let store: KVStore
    public let config: WatchConfig

    /// What etcd answers a watch whose `range_end` is not after its key.
    public static let emptyRangeReason = "mvcc: watcher range is empty"

    private struct SinkCounts {
        var watchers = 0
        /// Watchers of the sink that are unsynced or victims.
        var behind = 0
    }

    private let lock = NSLock()
    // Everything below belongs to `lock`.
    private var notifiedRev: Int64
    private var watchers: [UInt64: Watcher] = [:]
    private var synced = WatchGroup()
    private var unsynced = WatcherQueue()
    private var unsyncedCount = 0
    private var victims = WatcherQueue()
    private var victimCount = 0
    private var sinks: [ObjectIdentifier: SinkCounts] = [:]
    private var nextSerial: UInt64 = 1
    /// A `syncUnsynced` call is reading the backend.
    private var syncing = false
    private var syncFailure: MVCCError?
    /// Tests: runs in `syncUnsynced` after the backend read, before its
    /// results are applied (where the writer may notify concurrently).
    var afterHistoryRead: (() -> Void)?

    public init(store: KVStore, config: WatchConfig = WatchConfig()) {
        self.store = store
        self.config = config
        self.notifiedRev = store.currentRevision
    }

    // MARK: - Writes

    /// Writer thread, right after each write request that changed
    /// something, with its events and the store revision after it; in
    /// revision order, none left out. Offers the events to the synced
    /// watchers of their keys (a watcher whose sink refuses becomes a
    /// victim); never blocks on a sink.
    public func notify(_ events: [Mvccpb_Event], revision: Int64) {
        lock.lock()
        defer { lock.unlock() }
        if revision > notifiedRev { notifiedRev = revision }
        if events.isEmpty || synced.count == 0 { return }
        var variants = LiveEvents(events: events, store: store)
        var refused: [(Watcher, WatchDelivery)] = []

        if events.count == 1 {
            // The common case needs no bookkeeping: each match is a
            // different watcher, and all of them get the whole revision.
            let type = events[0].type
            synced.forEachMatch(byteArray(events[0].kv.key)) { watcher in
                guard revision >= watcher.nextRev, watcher.filters.passes(type) else { return }
                watcher.nextRev = revision + 1
                let delivery = WatchDelivery(watchID: watcher.id, shared: variants.all(prevKV: watcher.prevKV), revision: revision)
                if !watcher.sink.offer(delivery) { refused.append((watcher, delivery)) }
            }
        } else {
            // Several keys: gather each watcher's events (in first-match order).
            var order: [Watcher] = []
            var positions: [ObjectIdentifier: Int] = [:]
            var matched: [[Int]] = []
            for (i, event) in events.enumerated() {
                synced.forEachMatch(byteArray(event.kv.key)) { watcher in
                    guard revision >= watcher.nextRev else { return }
                    let id = ObjectIdentifier(watcher)
                    if let p = positions[id] {
                        matched[p].append(i)
                    } else {
                        positions[id] = order.count
                        order.append(watcher)
                        matched.append([i])
                    }
                }
            }
            struct SubsetKey: Hashable {
                let indices: [Int]
                let prevKV: Bool
            }
            var subsets: [SubsetKey: SharedEvents] = [:]
            for (p, watcher) in order.enumerated() {
                var indices = matched[p]
                if watcher.filters.rawValue != 0 {
                    indices.removeAll { !watcher.filters.passes(events[$0].type) }
                }
                watcher.nextRev = revision + 1
                if indices.isEmpty { continue }
                let list: SharedEvents
                if indices.count == events.count {
                    list = variants.all(prevKV: watcher.prevKV)
                } else {
                    let key = SubsetKey(indices: indices, prevKV: watcher.prevKV)
                    if let existing = subsets[key] {
                        list = existing
                    } else {
                        let all = variants.all(prevKV: watcher.prevKV).events
                        list = SharedEvents(indices.map { all[$0] })
                        subsets[key] = list
                    }
                }
                let delivery = WatchDelivery(watchID: watcher.id, shared: list, revision: revision)
                if !watcher.sink.offer(delivery) { refused.append((watcher, delivery)) }
            }
        }

        for (watcher, delivery) in refused {
            watcher.pending = delivery
            move(watcher, to: .victim)
        }
    }

    /// The events of one live revision in the two shapes watchers need,
    /// each made at most once and shared (with its serialised form) by every
    /// watcher that wants it.
    private struct LiveEvents {
        let events: [Mvccpb_Event]
        let store: KVStore
        private var stripped: SharedEvents?
        private var withPrevious: SharedEvents?

        init(events: [Mvccpb_Event], store: KVStore) {
            self.events = events
            self.store = store
        }

        mutating func all(prevKV: Bool) -> SharedEvents {
            if prevKV {
                if let withPrevious { return withPrevious }
                var made = events
                if !store.config.eventsIncludePrevKv {
                    // The store leaves prevKv out: look it up, as etcd's
                    // watch API does for every event.
                    made = (try? store.watchEventsWithPrevious(events)) ?? events
                }
                let shared = SharedEvents(made)
                withPrevious = shared
                return shared
            }
            if let stripped { return stripped }
            var made = events
            if events.contains(where: { $0.hasPrevKv }) {
                made = events.map { event in
                    var event = event
                    event.clearPrevKv()
                    return event
                }
            }
            let shared = SharedEvents(made)
            stripped = shared
            return shared
        }
    }

    // MARK: - Watchers

    /// Whether etcd would refuse a watch on this range ("mvcc: watcher range
    /// is empty": `rangeEnd` set, not "\0", and not after `key`). `watch`
    /// accepts such a watcher; it never matches anything.
    public static func isEmptyRange(key: Data, rangeEnd: Data) -> Bool {
        WatchKeyRange(key: key, rangeEnd: rangeEnd) == .empty
    }

    /// Registers a watcher. Any thread. `key`/`rangeEnd` as in Range: empty
    /// `rangeEnd` = the single key; `rangeEnd` "\0" = every key >= `key`;
    /// key "\0" with `rangeEnd` "\0" = all keys. `startRevision` 0 (or
    /// negative) = from the revision after `currentRevision`; a start in the
    /// future waits for it; a start at or before `currentRevision` catches up
    /// from the backend in `syncUnsynced`, where a start below the compaction
    /// revision gets a delivery with `compactRevision` set and the watcher is
    /// removed (as etcd: a start equal to the compaction revision is
    /// served). Deliveries may reach `sink` from other threads as soon as
    /// this returns, even before the caller has announced the watcher.
    public func watch(
        watchID: Int64, key: Data, rangeEnd: Data, startRevision: Int64, prevKV: Bool,
        filters: WatchFilters, sink: any WatchSink
    ) -> WatcherHandle {
        let range = WatchKeyRange(key: key, rangeEnd: rangeEnd)
        lock.lock()
        defer { lock.unlock() }
        let serial = nextSerial
        nextSerial += 1
        let start = startRevision <= 0 ? notifiedRev + 1 : startRevision
        let watcher = Watcher(
            serial: serial, id: watchID, range: range, prevKV: prevKV, filters: filters,
            sink: sink, nextRev: start, state: .removed)
        watchers[serial] = watcher
        sinks[watcher.sinkKey, default: SinkCounts()].watchers += 1
        move(watcher, to: start > notifiedRev ? .synced : .unsynced)
        return WatcherHandle(watchID: watchID, serial: serial)
    }

    /// Removes the watcher; false when it was already gone (cancelled, or
    /// removed after a compaction notice). Any thread.
    @discardableResult
    public func cancel(_ handle: WatcherHandle) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard let watcher = watchers[handle.serial] else { return false }
        move(watcher, to: .removed)
        return true
    }

    /// Offers the watcher an empty delivery with `currentRevision` if it is
    /// synced (etcd's per-watcher progress notification); returns whether
    /// the sink took it. A watcher that is behind gets nothing: it is about
    /// to receive events anyway. Nor does one waiting for a start revision
    /// beyond the store's (resumed on a member that lags): a notification
    /// below where its client already is would send that client back.
    @discardableResult
    public func requestProgress(_ handle: WatcherHandle) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard let watcher = watchers[handle.serial], watcher.state == .synced,
              watcher.nextRev <= notifiedRev + 1 else { return false }
        return watcher.sink.offer(WatchDelivery(watchID: watcher.id, events: [], revision: notifiedRev))
    }

    /// If every watcher of `sink` is synced and none waits for a future
    /// start revision (also when it has none), offers
    /// it one delivery with watch id -1 and `currentRevision`; returns
    /// whether the sink took it. etcd 3.5's behaviour (3.4 answered at once
    /// with the store revision, even for watchers still catching up): the
    /// server keeps the request pending and calls again later while this
    /// returns false.
    @discardableResult
    public func requestProgressAll(sink: any WatchSink) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        let key = ObjectIdentifier(sink)
        if let counts = sinks[key] {
            if counts.behind > 0 { return false }
            // As for one watcher: not while one waits for a future start.
            if watchers.values.contains(where: { $0.sinkKey == key && $0.nextRev > notifiedRev + 1 }) { return false }
        }
        return sink.offer(WatchDelivery(watchID: -1, events: [], revision: notifiedRev))
    }

    // MARK: - Catching up

    /// Moves unsynced watchers forward from the backend: up to
    /// `config.maxWatchersPerSync` of them (oldest first), reading at most
    /// `config.maxRevisionsPerSync` revisions; sends compaction notices to
    /// those whose next revision was compacted. Returns how many remain
    /// unsynced. Returns at once if another call is still reading.
    @discardableResult
    public func syncUnsynced() -> Int {
        lock.lock()
        if syncing || unsyncedCount == 0 {
            if unsyncedCount == 0 { unsynced.removeAll() }
            let remaining = unsyncedCount
            lock.unlock()
            return remaining
        }
        syncing = true
        var chosen: [Watcher] = []
        while chosen.count < max(1, config.maxWatchersPerSync), let watcher = unsynced.pop(in: .unsynced) {
            chosen.append(watcher)
        }
        let requests = chosen.map {
            HistoryRequest(range: $0.range, nextRev: $0.nextRev, prevKV: $0.prevKV, filters: $0.filters)
        }
        let target = notifiedRev
        lock.unlock()

        // Outside the watch lock: the writer keeps notifying meanwhile. Only
        // `cancel` can touch the chosen watchers (they are in no queue).
        let outcomes: [HistoryOutcome]
        var failure: MVCCError?
        do {
            outcomes = try store.watchHistory(requests, through: target, maxRevisions: config.maxRevisionsPerSync)
        } catch {
            failure = error
            outcomes = Array(repeating: .untouched, count: requests.count)
        }
        afterHistoryRead?()

        lock.lock()
        defer { lock.unlock() }
        syncing = false
        syncFailure = failure
        for (watcher, outcome) in zip(chosen, outcomes) {
            guard watcher.state == .unsynced else { continue }  // cancelled meanwhile
            switch outcome {
            case .untouched:
                unsynced.push(watcher)
            case .compacted(let revision):
                let notice = WatchDelivery(watchID: watcher.id, events: [], revision: notifiedRev, compactRevision: revision)
                if watcher.sink.offer(notice) {
                    move(watcher, to: .removed)
                } else {
                    unsynced.push(watcher)  // as etcd: try again next round
                }
            case .advanced(let events, let through):
                watcher.nextRev = through + 1
                if !events.isEmpty {
                    let delivery = WatchDelivery(watchID: watcher.id, events: events, revision: through)
                    if !watcher.sink.offer(delivery) {
                        watcher.pending = delivery
                        move(watcher, to: .victim)
                        continue
                    }
                }
                // Synced only if no notify came in since the read began.
                if watcher.nextRev > notifiedRev {
                    move(watcher, to: .synced)
                } else {
                    unsynced.push(watcher)
                }
            }
        }
        return unsyncedCount
    }

    /// Offers every victim its held delivery again; a watcher whose sink
    /// takes it rejoins the synced set if nothing happened since, else the
    /// unsynced one. Returns how many remain victims.
    @discardableResult
    public func retryVictims() -> Int {
        lock.lock()
        defer { lock.unlock() }
        var stillRefused = WatcherQueue()
        while let watcher = victims.pop(in: .victim) {
            guard let delivery = watcher.pending else { continue }
            if watcher.sink.offer(delivery) {
                watcher.pending = nil
                move(watcher, to: watcher.nextRev > notifiedRev ? .synced : .unsynced)
            } else {
                stillRefused.push(watcher)
            }
        }
        victims = stillRefused
        return victimCount
    }

    // MARK: - Restore

    /// After `KVStore.reload()` (the backend holds another member's data,
    /// which continues the history this store has seen, as raft ensures):
    /// "now" becomes the store's revision, and every synced watcher the new
    /// data has events for becomes unsynced with its next revision, so
    /// `syncUnsynced` catches it up from the new data, or sends it the
    /// compaction notice if the new data's compaction passed it. Victims
    /// stay victims: their held delivery is history the new data shares,
    /// and after it they catch up the same way. A catch-up read in flight
    /// read a prefix of the same history, so its results stay valid too.
    /// Writer thread.
    public func restore() {
        let revision = store.currentRevision
        lock.lock()
        defer { lock.unlock() }
        notifiedRev = revision
        for watcher in watchers.values.sorted(by: { $0.serial < $1.serial })
        where watcher.state == .synced && watcher.nextRev <= revision {
            move(watcher, to: .unsynced)
        }
    }

    // MARK: - State

    /// The last revision reported by `notify` (initially the store's): what
    /// progress notifications announce and what a watch from "now" follows.
    public var currentRevision: Int64 {
        lock.lock()
        defer { lock.unlock() }
        return notifiedRev
    }

    public var counts: (synced: Int, unsynced: Int, victims: Int) {
        lock.lock()
        defer { lock.unlock() }
        return (synced.count, unsyncedCount, victimCount)
    }

    /// The error of the last `syncUnsynced` backend read, nil if it
    /// succeeded (the watchers it chose stay unsynced and are retried).
    public var lastSyncError: MVCCError? {
        lock.lock()
        defer { lock.unlock() }
        return syncFailure
    }

    /// Where a watcher stands (for tests): nil once it is gone.
    func inspect(_ handle: WatcherHandle) -> (state: WatcherState, nextRev: Int64)? {
        lock.lock()
        defer { lock.unlock() }
        guard let watcher = watchers[handle.serial] else { return nil }
        return (watcher.state, watcher.nextRev)
    }

    /// Moves `watcher` between sets, keeping the counts. Caller holds `lock`.
    private func move(_ watcher: Watcher, to state: WatcherState) {
        let old = watcher.state
        if old == state { return }
        switch old {
        case .synced: synced.remove(watcher)
        case .unsynced: unsyncedCount -= 1
        case .victim: victimCount -= 1
        case .removed: break
        }
        watcher.state = state
        switch state {
        case .synced:
            synced.add(watcher)
        case .unsynced:
            unsyncedCount += 1
            unsynced.push(watcher)
        case .victim:
            victimCount += 1
            victims.push(watcher)
        case .removed:
            watcher.pending = nil
            watchers[watcher.serial] = nil
            unsynced.trim(live: unsyncedCount, state: .unsynced)
            victims.trim(live: victimCount, state: .victim)
        }
        let wasBehind = old == .unsynced || old == .victim
        let isBehind = state == .unsynced || state == .victim
        if wasBehind != isBehind {
            sinks[watcher.sinkKey]!.behind += isBehind ? 1 : -1
        }
        if state == .removed {
            let key = watcher.sinkKey
            sinks[key]!.watchers -= 1
            if sinks[key]!.watchers == 0 { sinks[key] = nil }
        }
    }
}
