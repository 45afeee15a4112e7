import Backend
import EtcdProto
import Foundation

/// What a catch-up read needs to know about one unsynced watcher (a copy:
/// the read runs without the watch lock).
struct HistoryRequest {
    let range: WatchKeyRange
    let nextRev: Int64
    let prevKV: Bool
    let filters: WatchFilters
}

/// The result of a catch-up read for one watcher.
enum HistoryOutcome {
    /// Not served this round (outside every window read).
    case untouched
    /// Its next revision is below this compaction revision.
    case compacted(Int64)
    /// Its events from its next revision through `through` (possibly none).
    case advanced([Mvccpb_Event], through: Int64)
}

/// A span `[lo, hi)` of main revisions read in one go.
struct HistoryWindow: Equatable {
    let lo: Int64
    let hi: Int64

    func contains(_ revision: Int64) -> Bool { revision >= lo && revision < hi }
}

extension KVStore {
    /// Reads, for unsynced watchers, their events from the backend up to
    /// revision `target`, reading at most `maxRevisions` main revisions.
    /// Holds the store's read lock throughout, so neither the compaction
    /// revision nor the index change under it.
    func watchHistory(_ requests: [HistoryRequest], through target: Int64, maxRevisions: Int) throws(MVCCError) -> [HistoryOutcome] {
        lock.readLock()
        defer { lock.unlock() }
        let compacted = compactRev
        var outcomes = [HistoryOutcome](repeating: .untouched, count: requests.count)
        var live: [Int] = []
        for (i, request) in requests.enumerated() {
            if request.nextRev < compacted {
                outcomes[i] = .compacted(compacted)
            } else if request.nextRev > target {
                outcomes[i] = .advanced([], through: request.nextRev - 1)
            } else {
                live.append(i)
            }
        }
        if live.isEmpty { return outcomes }
        let windows = KVStore.historyWindows(live.map { requests[$0].nextRev }, target: target, budget: maxRevisions)
        do {
            try backend.read { tx in
                for window in windows {
                    let members = live.filter { window.contains(requests[$0].nextRev) }
                    try readWindow(window, members, requests, &outcomes, tx)
                }
            }
        } catch {
            throw KVStore.mvccError(error)
        }
        return outcomes
    }

    /// The spans to read for watchers at `nextRevs`, all <= `target`. When
    /// everything fits in `budget` revisions, one span from the lowest
    /// watcher to the target. Otherwise half the budget goes to the lowest
    /// watcher (which moves forward by that much) and half to the watchers
    /// within reach of the target (which catch up completely), if there are
    /// any (else the lowest watcher gets the whole budget), so that
    /// watchers only slightly behind — typically victims that recovered —
    /// do not wait for a watcher far behind.
    static func historyWindows(_ nextRevs: [Int64], target: Int64, budget: Int) -> [HistoryWindow] {
        let sorted = nextRevs.sorted()
        guard let lo = sorted.first else { return [] }
        let end = target + 1
        let limit = Int64(max(1, budget))
        if end - lo <= limit { return [HistoryWindow(lo: lo, hi: end)] }
        let headBudget = limit / 2
        if headBudget > 0, let head = sorted.first(where: { $0 >= end - headBudget }) {
            // head >= end - headBudget > lo + (limit - headBudget): disjoint.
            return [HistoryWindow(lo: lo, hi: lo + (limit - headBudget)), HistoryWindow(lo: head, hi: end)]
        }
        return [HistoryWindow(lo: lo, hi: lo + limit)]
    }

    /// Reads one span for the watchers whose next revision lies in it and
    /// sets their outcomes. Watchers with the same range, start and options
    /// share one event array.
    private func readWindow(
        _ window: HistoryWindow, _ members: [Int], _ requests: [HistoryRequest],
        _ outcomes: inout [HistoryOutcome], _ tx: ReadTx
    ) throws {
        if members.isEmpty { return }
        // The distinct ranges of the members, found by key while scanning.
        var groupOfRange: [WatchKeyRange: Int] = [:]
        var memberGroups: [Int] = []
        var keyGroups: [ByteKey: Int] = [:]
        var intervals = WatchIntervalIndex<Int>()
        for m in members {
            let range = requests[m].range
            if let g = groupOfRange[range] {
                memberGroups.append(g)
                continue
            }
            let g = groupOfRange.count
            groupOfRange[range] = g
            memberGroups.append(g)
            switch range {
            case .key(let key): keyGroups[ByteKey(key)] = g
            case .interval(let start, let end): intervals.insert(start, end, g)
            case .empty: break
            }
        }
        let intervalGroups = intervals.values

        var events: [Mvccpb_Event] = []
        var revisions: [Int64] = []
        var groupEvents = [[Int]](repeating: [], count: groupOfRange.count)
        let from = RevisionKey.encode(Revision(main: window.lo))
        let to = RevisionKey.encode(Revision(main: window.hi))
        try tx.forEach(.key, from: from, to: to) { rawKey, rawValue in
            guard let (revision, tombstone) = RevisionKey.decode(rawKey) else {
                throw MVCCError.corruptEntry("bad revision key of \(rawKey.count) bytes")
            }
            var kv = try KeyValueCodec.decode(rawValue)
            let key = byteArray(kv.key)
            let index = events.count
            var matched = false
            if let g = keyGroups[ByteKey(key)] {
                groupEvents[g].append(index)
                matched = true
            }
            intervals.stab(key) { i in
                groupEvents[intervalGroups[i]].append(index)
                matched = true
            }
            guard matched else { return true }
            var event = Mvccpb_Event()
            if tombstone {
                // A tombstone stores only the key; its events carry the
                // revision of the deletion, as live ones do.
                kv.modRevision = revision.main
                event.type = .delete
            } else {
                event.type = .put
            }
            event.kv = kv
            events.append(event)
            revisions.append(revision.main)
            return true
        }

        struct ShareKey: Hashable {
            let group: Int
            let nextRev: Int64
            let prevKV: Bool
            let filters: UInt8
        }
        var shared: [ShareKey: [Mvccpb_Event]] = [:]
        var withPrevious: [Int: Mvccpb_Event] = [:]
        let through = window.hi - 1
        for (position, m) in members.enumerated() {
            let request = requests[m]
            let group = memberGroups[position]
            let key = ShareKey(group: group, nextRev: request.nextRev, prevKV: request.prevKV, filters: request.filters.rawValue)
            if let list = shared[key] {
                outcomes[m] = .advanced(list, through: through)
                continue
            }
            let indices = groupEvents[group]
            // First event at or after the watcher's next revision.
            var low = 0
            var high = indices.count
            while low < high {
                let mid = (low + high) / 2
                if revisions[indices[mid]] < request.nextRev {
                    low = mid + 1
                } else {
                    high = mid
                }
            }
            var list: [Mvccpb_Event] = []
            for index in indices[low...] where request.filters.passes(events[index].type) {
                if request.prevKV {
                    if let cached = withPrevious[index] {
                        list.append(cached)
                    } else {
                        var event = events[index]
                        if let previous = try watchPrevious(of: event, tx) { event.prevKv = previous }
                        withPrevious[index] = event
                        list.append(event)
                    }
                } else {
                    list.append(events[index])
                }
            }
            shared[key] = list
            outcomes[m] = .advanced(list, through: through)
        }
    }

    /// The value of the event's key just before the event (what etcd's
    /// watch API sends as `prev_kv`): nil for a creation, when the key did
    /// not exist, or when that revision is compacted. Caller holds `lock`.
    func watchPrevious(of event: Mvccpb_Event, _ tx: ReadTx) throws -> Mvccpb_KeyValue? {
        let revision = event.kv.modRevision
        if event.type == .put && event.kv.createRevision == revision { return nil }
        let at = revision - 1
        if at < 1 || at < compactRev { return nil }
        guard let found = index.get(byteArray(event.kv.key))?.get(at: at) else { return nil }
        return try fetch(found.modified, tx)
    }

    /// `events` of one write with `prevKv` looked up (for a store whose
    /// events come without it). Any thread.
    func watchEventsWithPrevious(_ events: [Mvccpb_Event]) throws(MVCCError) -> [Mvccpb_Event] {
        lock.readLock()
        defer { lock.unlock() }
        do {
            return try backend.read { tx in
                try events.map { event in
                    var event = event
                    if let previous = try watchPrevious(of: event, tx) { event.prevKv = previous }
                    return event
                }
            }
        } catch {
            throw KVStore.mvccError(error)
        }
    }
}
