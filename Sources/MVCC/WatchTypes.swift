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
    /// For a live revision: the same `events`, in one object shared by every
    /// watcher given exactly these events, so a stream serialises them once
    /// for all (nil: encode `events` per delivery).
    public var shared: SharedEvents?

    public init(watchID: Int64, events: [Mvccpb_Event], revision: Int64, compactRevision: Int64 = 0) {
        self.watchID = watchID
        self.events = events
        self.revision = revision
        self.compactRevision = compactRevision
    }

    /// A delivery of `shared`'s events.
    public init(watchID: Int64, shared: SharedEvents, revision: Int64) {
        self.init(watchID: watchID, events: shared.events, revision: revision)
        self.shared = shared
    }

    /// A progress notification: no events, no compaction.
    public var isProgress: Bool { events.isEmpty && compactRevision == 0 }
}

/// One revision's events as many watchers receive them: the list, and its
/// serialised form made once, by whichever stream first needs it, then
/// shared by all. The form is a `WatchResponse` holding only `events`; a
/// stream puts the serialised header and watch id of each response in front
/// (protobuf's concatenation of two serialised messages is their merge, and
/// header, watch_id and events are fields 1, 2 and 11, so the bytes are the
/// ones a whole response serialises to).
public final class SharedEvents: @unchecked Sendable {
    public let events: [Mvccpb_Event]
    private let lock = NSLock()
    private var encoded: [UInt8]?

    public init(_ events: [Mvccpb_Event]) {
        self.events = events
    }

    /// `Etcdserverpb_WatchResponse` with `events` set and nothing else,
    /// serialised (once, on first use; any thread).
    public var encodedResponse: [UInt8] {
        lock.lock()
        defer { lock.unlock() }
        if let encoded { return encoded }
        var response = Etcdserverpb_WatchResponse()
        response.events = events
        // Serialising a message built of valid fields does not fail.
        let bytes: [UInt8] = (try? response.serializedBytes()) ?? []
        encoded = bytes
        return bytes
    }
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
