import Backend
import EtcdProto
import Foundation

/// Event types a watcher does not want (etcd's `WatchCreateRequest.filters`).
public struct WatchFilters: OptionSet, Hashable, Sendable {
    public let rawValue: UInt8

    public init(rawValue: UInt8) {
        self.rawValue = rawValue
    }

    /// Drop put events.
    public static let noPut = WatchFilters(rawValue: 1 << 0)
    /// Drop delete events.
    public static let noDelete = WatchFilters(rawValue: 1 << 1)

    /// The filters of a create request; unknown values are ignored, as etcd does.
    public init(_ types: [Etcdserverpb_WatchCreateRequest.FilterType]) {
        var filters: WatchFilters = []
        for type in types {
            switch type {
            case .noput: filters.insert(.noPut)
            case .nodelete: filters.insert(.noDelete)
            case .UNRECOGNIZED: break
            }
        }
        self = filters
    }

    /// Whether an event of `type` gets through.
    @inline(__always)
    func passes(_ type: Mvccpb_Event.EventType) -> Bool {
        if rawValue == 0 { return true }
        switch type {
        case .put: return !contains(.noPut)
        case .delete: return !contains(.noDelete)
        case .UNRECOGNIZED: return true
        }
    }
}

/// What the store hands a stream for one watcher: the events of whole
/// revisions, in revision order; a revision is never split across
/// deliveries.
public struct WatchDelivery: Sendable {
    /// The id the stream gave the watcher; -1 for a stream-wide progress
    /// notification.
    public var watchID: Int64
    /// Empty for a progress notification or a compaction notice.
    public var events: [Mvccpb_Event]
    /// The store revision this delivery is consistent with (the response
    /// header's revision): the watcher has been given every event up to and
    /// including it.
    public var revision: Int64
    /// Non-zero: the watcher's next revision was compacted away; the watcher
    /// is gone (etcd's response with `compact_revision` and `canceled`).
    public var compactRevision: Int64

    public init(watchID: Int64, events: [Mvccpb_Event], revision: Int64, compactRevision: Int64 = 0) {
        self.watchID = watchID
        self.events = events
        self.revision = revision
        self.compactRevision = compactRevision
    }

    /// A progress notification: no events, no compaction.
    public var isProgress: Bool { events.isEmpty && compactRevision == 0 }
}

/// The receiving end of deliveries (the server's gRPC stream). Called with
/// the store's lock held: must not block and must not call back into the
/// store.
public protocol WatchSink: AnyObject, Sendable {
    /// Takes the delivery, or returns false when the stream's bounded buffer
    /// is full (the store keeps it and offers it again later).
    func offer(_ delivery: WatchDelivery) -> Bool
}

/// A registered watcher, as `WatchableStore.watch` returns it.
public final class WatcherHandle: Sendable, Hashable {
    public let watchID: Int64
    /// The store's own number for the watcher (unique per store).
    let serial: UInt64

    init(watchID: Int64, serial: UInt64) {
        self.watchID = watchID
        self.serial = serial
    }

    public static func == (lhs: WatcherHandle, rhs: WatcherHandle) -> Bool { lhs === rhs }
    public func hash(into hasher: inout Hasher) { hasher.combine(serial) }
}

/// Settings of a `WatchableStore`.
public struct WatchConfig: Sendable {
    /// Unsynced watchers processed per `syncUnsynced` call (etcd's
    /// `maxWatchersPerSync`).
    public var maxWatchersPerSync = 512
    /// Main revisions read from the backend per `syncUnsynced` call; a
    /// catch-up delivery ends at a revision boundary (etcd's
    /// `watchBatchMaxRevs`, which etcd applies per watcher after reading
    /// everything).
    public var maxRevisionsPerSync = 1000

    public init(maxWatchersPerSync: Int = 512, maxRevisionsPerSync: Int = 1000) {
        self.maxWatchersPerSync = maxWatchersPerSync
        self.maxRevisionsPerSync = maxRevisionsPerSync
    }
}

/// The keys one watcher covers, decoded as etcd's watch API does.
enum WatchKeyRange: Hashable {
    /// Exactly this key (empty `range_end`).
    case key([UInt8])
    /// `[start, end)`; `end` nil means no upper bound (`range_end` "\0").
    case interval([UInt8], [UInt8]?)
    /// `range_end <= key`: etcd refuses such a watch
    /// (`mvcc: watcher range is empty`); here it matches nothing.
    case empty

    init(key: Data, rangeEnd: Data) {
        let start = byteArray(key)
        if rangeEnd.isEmpty {
            self = .key(start)
        } else if rangeEnd.count == 1 && rangeEnd.first == 0 {
            self = .interval(start, nil)
        } else {
            let end = byteArray(rangeEnd)
            self = compareBytes(start, end) < 0 ? .interval(start, end) : .empty
        }
    }

    func contains(_ key: [UInt8]) -> Bool {
        switch self {
        case .key(let k): return k == key
        case .interval(let start, let end):
            if compareBytes(key, start) < 0 { return false }
            if let end { return compareBytes(key, end) < 0 }
            return true
        case .empty: return false
        }
    }
}
