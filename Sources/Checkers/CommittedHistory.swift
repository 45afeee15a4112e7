// The KV history as committed: for each revision after the initial one, the events it
// produced, in write order. The reference the watch checker compares streams against.

/// The events one revision produced, in write order.
public struct CommittedRevision: Hashable, Sendable {
    public var revision: Int64
    public var events: [KVEvent]

    public init(revision: Int64, events: [KVEvent]) {
        self.revision = revision
        self.events = events
    }
}

/// One change of an acknowledged write.
public enum WriteChange: Hashable, Sendable {
    case put(key: KVBytes, value: KVBytes)
    /// The key must exist (a delete of nothing creates no revision).
    case delete(key: KVBytes)
}

/// An acknowledged write: the revision its response reported and what it changed, in
/// order (one change for a put, several for a txn or a range delete).
public struct AcknowledgedWrite: Hashable, Sendable {
    public var revision: Int64
    public var changes: [WriteChange]

    public init(revision: Int64, changes: [WriteChange]) {
        self.revision = revision
        self.changes = changes
    }
}

public enum CommittedHistoryError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Revisions between the initial and the last one that no write accounts for (for
    /// instance writes whose outcome was unknown to the client but that committed).
    case missingRevisions([Int64])
    /// Two different writes claim the same revision.
    case conflictingWrites(revision: Int64)
    /// A revision not after the initial revision.
    case revisionNotAfterInitial(revision: Int64)
    /// A revision's events do not fit the state before it.
    case invalidEvent(revision: Int64, reason: String)

    public var description: String {
        switch self {
        case .missingRevisions(let revs):
            let shown = revs.prefix(20).map(String.init).joined(separator: ", ")
            return "no write accounts for revision(s) \(shown)\(revs.count > 20 ? ", ..." : "")"
        case .conflictingWrites(let r): return "different writes claim revision \(r)"
        case .revisionNotAfterInitial(let r): return "revision \(r) is not after the initial revision"
        case .invalidEvent(let r, let why): return "revision \(r): \(why)"
        }
    }
}

/// A complete committed history from `initialRevision + 1` to `lastRevision`, every
/// event carrying the record it replaced as `prevKV` (nil: the key did not exist).
public struct CommittedHistory: Sendable {
    public let initialRevision: Int64
    /// Contiguous: `revisions[i].revision == initialRevision + 1 + i`.
    public let revisions: [CommittedRevision]
    /// The store before the first revision.
    public let initialStore: ReferenceKVStore

    public var lastRevision: Int64 { initialRevision + Int64(revisions.count) }

    /// Validates and completes `revisions` (any order; identical duplicates allowed):
    /// they must be contiguous from `initial.revision + 1`; each put's mod revision must
    /// be its revision and its create revision / version (when non-zero) must follow
    /// from the previous record; each delete must delete an existing key. `prevKV`s and
    /// missing create revisions / versions are filled in by replaying.
    public init(initial: ReferenceKVStore = ReferenceKVStore(), revisions: [CommittedRevision]) throws(CommittedHistoryError) {
        let base = initial.revision
        var byRevision: [Int64: CommittedRevision] = [:]
        for r in revisions {
            guard r.revision > base else { throw .revisionNotAfterInitial(revision: r.revision) }
            if let existing = byRevision[r.revision] {
                guard existing.events == r.events else { throw .conflictingWrites(revision: r.revision) }
            }
            byRevision[r.revision] = r
        }
        let last = byRevision.keys.max() ?? base
        if base < last {
            let missing = (base + 1...last).filter { byRevision[$0] == nil }
            if !missing.isEmpty { throw .missingRevisions(missing) }
        }
        var current: [KVBytes: KVRecord] = [:]
        for kv in initial.records { current[kv.key] = kv }
        var completed: [CommittedRevision] = []
        completed.reserveCapacity(byRevision.count)
        if base < last {
            for rev in base + 1...last {
                let r = byRevision[rev]!
                guard !r.events.isEmpty else { throw .invalidEvent(revision: rev, reason: "no events") }
                var out: [KVEvent] = []
                for e in r.events {
                    let prev = current[e.kv.key]
                    switch e.type {
                    case .put:
                        var kv = e.kv
                        guard kv.modRevision == rev || kv.modRevision == 0 else {
                            throw .invalidEvent(revision: rev, reason: "put of \(kv.key) has mod revision \(kv.modRevision)")
                        }
                        kv.modRevision = rev
                        let create = prev?.createRevision ?? rev
                        let version = (prev?.version ?? 0) + 1
                        if kv.createRevision != 0 && kv.createRevision != create {
                            throw .invalidEvent(revision: rev, reason: "put of \(kv.key) has create revision \(kv.createRevision), expected \(create)")
                        }
                        if kv.version != 0 && prev?.version != 0 && kv.version != version {
                            throw .invalidEvent(revision: rev, reason: "put of \(kv.key) has version \(kv.version), expected \(version)")
                        }
                        if kv.createRevision == 0 { kv.createRevision = create }
                        if kv.version == 0 && prev?.version != 0 { kv.version = version }
                        current[kv.key] = kv
                        out.append(KVEvent(type: .put, kv: kv, prevKV: prev))
                    case .delete:
                        guard let prev else {
                            throw .invalidEvent(revision: rev, reason: "delete of absent key \(e.kv.key)")
                        }
                        guard e.kv.modRevision == rev || e.kv.modRevision == 0 else {
                            throw .invalidEvent(revision: rev, reason: "delete of \(e.kv.key) has mod revision \(e.kv.modRevision)")
                        }
                        current[e.kv.key] = nil
                        out.append(.delete(e.kv.key, revision: rev, prevKV: prev))
                    }
                }
                completed.append(CommittedRevision(revision: rev, events: out))
            }
        }
        self.initialRevision = base
        self.initialStore = initial
        self.revisions = completed
    }

    /// The events of `revision` (empty outside the history).
    public func events(at revision: Int64) -> [KVEvent] {
        let i = revision - initialRevision - 1
        guard i >= 0 && i < Int64(revisions.count) else { return [] }
        return revisions[Int(i)].events
    }

    /// Whether `revision` lies inside the history (after the initial revision).
    public func contains(revision: Int64) -> Bool {
        revision > initialRevision && revision <= lastRevision
    }

    /// Builds the history from acknowledged writes. Throws if writes conflict, leave a
    /// revision unaccounted for, or do not fit the state (e.g. delete an absent key).
    public static func build(from writes: [AcknowledgedWrite],
                             initial: ReferenceKVStore = ReferenceKVStore()) throws(CommittedHistoryError) -> CommittedHistory {
        var byRevision: [Int64: AcknowledgedWrite] = [:]
        for w in writes {
            guard w.revision > initial.revision else { throw .revisionNotAfterInitial(revision: w.revision) }
            if let existing = byRevision[w.revision], existing != w { throw .conflictingWrites(revision: w.revision) }
            byRevision[w.revision] = w
        }
        var store = initial
        var revisions: [CommittedRevision] = []
        let last = byRevision.keys.max() ?? initial.revision
        if initial.revision < last {
            let missing = (initial.revision + 1...last).filter { byRevision[$0] == nil }
            if !missing.isEmpty { throw .missingRevisions(missing) }
            for rev in initial.revision + 1...last {
                let w = byRevision[rev]!
                let ops: [KVInput] = w.changes.map {
                    switch $0 {
                    case .put(let k, let v): return .put(key: k, value: v)
                    case .delete(let k): return .delete(.single(k))
                    }
                }
                let (_, events) = store.applyRecordingEvents(.txn(compares: [], success: ops, failure: []))
                guard events.count == w.changes.count, store.revision == rev else {
                    throw .invalidEvent(revision: rev, reason: "changes do not fit the state before the write (delete of an absent key?)")
                }
                revisions.append(CommittedRevision(revision: rev, events: events))
            }
        }
        return try CommittedHistory(initial: initial, revisions: revisions)
    }

    /// Builds the history from a KV history's successful writes (operations with a known
    /// outcome whose response shows a change). The writes are replayed in revision order
    /// against a reference store, so range deletes need no prevKVs; a write whose replay
    /// disagrees with its response (revision, txn branch, deleted count) throws.
    /// Writes with unknown outcome that did commit leave missing revisions: supply them
    /// (e.g. from the server) via `build(from:)` instead.
    public static func build(fromKVHistory ops: [HistoryOperation<KVInput, KVOutput>],
                             initial: ReferenceKVStore = ReferenceKVStore()) throws(CommittedHistoryError) -> CommittedHistory {
        var byRevision: [Int64: (KVInput, KVOutput)] = [:]
        for op in ops {
            guard let out = op.output, op.returnTime != nil, out.result.claimsWrite(for: op.input) == true else { continue }
            guard out.revision > initial.revision else { throw .revisionNotAfterInitial(revision: out.revision) }
            if let existing = byRevision[out.revision], existing != (op.input, out) {
                throw .conflictingWrites(revision: out.revision)
            }
            byRevision[out.revision] = (op.input, out)
        }
        var store = initial
        var revisions: [CommittedRevision] = []
        let last = byRevision.keys.max() ?? initial.revision
        if initial.revision < last {
            let missing = (initial.revision + 1...last).filter { byRevision[$0] == nil }
            if !missing.isEmpty { throw .missingRevisions(missing) }
            for rev in initial.revision + 1...last {
                let (input, claimed) = byRevision[rev]!
                let (replayed, events) = store.applyRecordingEvents(input)
                guard replayed.revision == rev, replayed.result.sameOutcome(as: claimed.result) else {
                    throw .invalidEvent(revision: rev, reason: "replaying \(input) gives \(replayed), but the response was \(claimed)")
                }
                revisions.append(CommittedRevision(revision: rev, events: events))
            }
        }
        return try CommittedHistory(initial: initial, revisions: revisions)
    }
}

extension KVResult {
    /// Same executed branches and deleted counts (record contents not compared).
    func sameOutcome(as other: KVResult) -> Bool {
        switch (self, other) {
        case (.put, .put), (.range, .range): return true
        case (.delete(let a, _), .delete(let b, _)): return a == b
        case (.txn(let a, let ra), .txn(let b, let rb)):
            return a == b && ra.count == rb.count && zip(ra, rb).allSatisfy { $0.sameOutcome(as: $1) }
        default: return false
        }
    }
}
