import Backend
import EtcdProto
import Foundation

/// Where a watcher stands. Every field of a `Watcher` belongs to the
/// `WatchableStore`'s lock.
enum WatcherState {
    /// Caught up: `notify` hands it new events directly.
    case synced
    /// Behind: `syncUnsynced` reads its events from the backend.
    case unsynced
    /// Its sink refused `pending`; `retryVictims` offers it again.
    case victim
    /// Cancelled, or removed after a compaction notice.
    case removed
}

final class Watcher {
    let serial: UInt64
    let id: Int64
    let range: WatchKeyRange
    let prevKV: Bool
    let filters: WatchFilters
    let sink: any WatchSink
    let sinkKey: ObjectIdentifier
    /// The first revision whose events the watcher has not been given: it
    /// has every matching event below, and is offered nothing below again.
    var nextRev: Int64
    var state: WatcherState
    /// Position in its bucket while synced (for O(1) removal).
    var slot = 0
    /// A victim's refused delivery.
    var pending: WatchDelivery?

    init(
        serial: UInt64, id: Int64, range: WatchKeyRange, prevKV: Bool, filters: WatchFilters,
        sink: any WatchSink, nextRev: Int64, state: WatcherState
    ) {
        self.serial = serial
        self.id = id
        self.range = range
        self.prevKV = prevKV
        self.filters = filters
        self.sink = sink
        self.sinkKey = ObjectIdentifier(sink)
        self.nextRev = nextRev
        self.state = state
    }
}

/// The synced watchers of one key or one interval.
final class WatchBucket {
    var watchers: [Watcher] = []
}

/// The synced watchers, found by key: a hash map from each single key to
/// its watchers, and an interval index (`WatchIntervalIndex`) of the
/// distinct watched ranges to theirs. Finding the watchers of a key costs
/// one hash lookup plus O((m + 1) log r) for m matching ranges out of r
/// distinct ones, whatever the number of watchers per key or range; adding
/// and removing a watcher is O(1) (a range's first watcher or last removal
/// costs O(r)). Iteration order depends only on the sequence of operations,
/// so a simulation replays identically.
struct WatchGroup {
    private var keys: [ByteKey: WatchBucket] = [:]
    private var ranges = WatchIntervalIndex<WatchBucket>()
    /// Watchers of an empty range: they never match.
    private var nowhere = WatchBucket()
    private(set) var count = 0

    mutating func add(_ watcher: Watcher) {
        let bucket: WatchBucket
        switch watcher.range {
        case .key(let key):
            if let existing = keys[ByteKey(key)] {
                bucket = existing
            } else {
                bucket = WatchBucket()
                keys[ByteKey(key)] = bucket
            }
        case .interval(let start, let end):
            if let i = ranges.find(start, end) {
                bucket = ranges.values[i]
            } else {
                bucket = WatchBucket()
                ranges.insert(start, end, bucket)
            }
        case .empty:
            bucket = nowhere
        }
        watcher.slot = bucket.watchers.count
        bucket.watchers.append(watcher)
        count += 1
    }

    mutating func remove(_ watcher: Watcher) {
        let bucket: WatchBucket
        var rangePosition: Int?
        switch watcher.range {
        case .key(let key):
            bucket = keys[ByteKey(key)]!
        case .interval(let start, let end):
            let i = ranges.find(start, end)!
            rangePosition = i
            bucket = ranges.values[i]
        case .empty:
            bucket = nowhere
        }
        let slot = watcher.slot
        precondition(bucket.watchers[slot] === watcher, "watch group: watcher not in its bucket")
        let last = bucket.watchers.count - 1
        if slot != last {
            bucket.watchers[slot] = bucket.watchers[last]
            bucket.watchers[slot].slot = slot
        }
        bucket.watchers.removeLast()
        count -= 1
        if bucket.watchers.isEmpty {
            switch watcher.range {
            case .key(let key): keys[ByteKey(key)] = nil
            case .interval: ranges.remove(at: rangePosition!)
            case .empty: break
            }
        }
    }

    /// Calls `body` for every watcher whose range contains `key`: first the
    /// watchers of exactly that key, then those of ranges in interval order.
    /// `body` must not add or remove watchers.
    mutating func forEachMatch(_ key: [UInt8], _ body: (Watcher) -> Void) {
        if let bucket = keys[ByteKey(key)] {
            for watcher in bucket.watchers { body(watcher) }
        }
        if ranges.isEmpty { return }
        let values = ranges.values
        ranges.stab(key) { i in
            for watcher in values[i].watchers { body(watcher) }
        }
    }
}

/// A first-in first-out queue of watchers that skips those no longer in
/// the expected state (cancelled ones are left behind and dropped lazily).
struct WatcherQueue {
    private var items: [Watcher] = []
    private var head = 0

    var storedCount: Int { items.count - head }

    mutating func push(_ watcher: Watcher) {
        items.append(watcher)
    }

    /// The next watcher in `state`, dropping stale entries on the way.
    mutating func pop(in state: WatcherState) -> Watcher? {
        while head < items.count {
            let watcher = items[head]
            head += 1
            if head > 64 && head * 2 > items.count {
                items.removeFirst(head)
                head = 0
            }
            if watcher.state == state { return watcher }
        }
        return nil
    }

    /// Removes stale entries once they are most of the queue, so memory
    /// stays proportional to the live entries.
    mutating func trim(live: Int, state: WatcherState) {
        guard storedCount > 2 * live + 32 else { return }
        items = items[head...].filter { $0.state == state }
        head = 0
    }

    mutating func removeAll() {
        items.removeAll()
        head = 0
    }
}
