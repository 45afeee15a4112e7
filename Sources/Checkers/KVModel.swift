// Sequential specification of etcd's KV API with a global revision counter.
//
// Revision rules (the etcd ones, simplified and documented):
//   * the store's revision starts at `initialStore.revision` (1 for an empty store);
//   * a put always creates a new revision; a delete creates one iff it deleted a key;
//   * a txn creates exactly one revision iff its executed branch contains a put or a
//     delete that deleted at least one key (all its writes share that revision);
//   * a response's header revision is the revision the write created, or, for a read or a
//     write that changed nothing, the store's current revision;
//   * reads are at the current revision; every returned record must be the key's current
//     record (value, mod revision, and create revision / version when recorded).
//
// Two revision modes:
//   * `.exact` -- the history is complete: every write's revision is exactly the previous
//     revision + 1 and a read's header revision is exactly the current one.
//   * `.gapsAllowed` -- the history may be missing writes (a sub-history while shrinking,
//     or not every client recorded): revisions only have to increase; between observed
//     operations unseen writes may have happened, so after a gap a key's value is only
//     known to be its last known record or one whose mod revision lies in the gap (or
//     absent). This still rejects stale reads (a lower header revision than one already
//     observed, or a record older than the known one), lost writes and reads from the
//     future, but cannot notice a skipped revision. It is a relaxation of `.exact`. A
//     gap never spans a revision that a completed write of the history claims.
//
// Partitioning. With a global revision counter, checking keys independently is NOT
// sound in `.exact` mode: a single key's sub-history has revision gaps wherever other
// keys were written, so it would be rejected. `partitionByKey` therefore checks each
// group of keys (keys coupled by one operation -- a txn, a multi-key range -- share a
// group) with revision gaps allowed; since a group holds every operation on its keys,
// the keys' records stay exactly known across those gaps (unlike `.gapsAllowed`, where
// the missing writes may have touched any key). That never rejects a linearizable
// history and still catches stale reads, lost writes and reads from the future within a
// group, but it is weaker than checking the whole history: violations visible only
// across keys (e.g. two writes to different keys reporting the same revision, or
// revisions not matching the real-time order across keys) are missed. Use it for speed
// on large multi-key histories; use the default (one partition, `.exact`) for full
// strength.
//
// Unknown outcomes. In `.exact` mode a pending operation is applied exactly (by the
// reference store); when gaps are allowed a pending request that may write is treated
// like an unseen write (at least one revision passes, every key becomes uncertain: its
// record is then either the last known one, or one whose mod revision lies in the gap,
// or absent).

/// The KV model. State: the known current records and revision.
public struct KVModel: LinearizabilityModel, Sendable {
    public enum RevisionMode: Hashable, Sendable {
        case exact
        case gapsAllowed
    }

    public var revisions: RevisionMode
    public var partitionByKey: Bool
    public var initialStore: ReferenceKVStore
    /// Sorted revisions claimed by completed writes of the history being searched (set
    /// by `prepared(for:)`). A revision gap can never span one of them, and an
    /// unknown-outcome write can never take one (that write could then no longer be
    /// linearized). Keeps gap-tolerant searches nearly as tight as exact ones where the
    /// history is complete, and stops unknown-outcome writes from being tried at every
    /// point of an exact search.
    var claimedWriteRevisions: [Int64] = []
    /// See `prepared(for:)`.
    var pinnedPendingPuts: [KVPairKey: Int64] = [:]
    /// Highest header revision of a completed operation (set by `prepared(for:)`). A
    /// write taking a revision above it can be observed by nothing, so an
    /// unknown-outcome write is never tried there (leaving it out is equivalent).
    var maxObservedRevision = Int64.max

    public init(revisions: RevisionMode = .exact, partitionByKey: Bool = false,
                initialStore: ReferenceKVStore = ReferenceKVStore()) {
        self.revisions = revisions
        self.partitionByKey = partitionByKey
        self.initialStore = initialStore
    }

    /// Gap-tolerant revision checks are in force (explicitly, or because of partitioning).
    public var allowsGaps: Bool { revisions == .gapsAllowed || partitionByKey }

    /// Writes missing from the history may have touched any key (`.gapsAllowed`). Not so
    /// for a partition alone: it holds every operation on its keys.
    var unseenWritesMayTouchKeys: Bool { revisions == .gapsAllowed }

    public var initialState: KVModelState {
        KVModelState(store: initialStore)
    }

    public func prepared(for history: [HistoryOperation<KVInput, KVOutput>]) -> KVModel {
        var m = self
        var claimed = history.compactMap { op -> Int64? in
            guard !op.isPending, let out = op.output, out.result.claimsWrite(for: op.input) == true else { return nil }
            return out.revision
        }
        // Pins: a (key, value) put by exactly one operation of the history, which has an
        // unknown outcome, but seen in some response with mod revision m (and only m):
        // that operation took effect at revision m, and nothing else did.
        var writers: [KVPairKey: Int] = [:]
        var pendingWritten = Set<KVPairKey>()
        var seen: [KVPairKey: Set<Int64>] = [:]
        for op in history {
            for pair in op.input.putPairs { writers[pair, default: 0] += 1 }
            if op.isPending { pendingWritten.formUnion(op.input.putPairs) }
            if let out = op.output {
                for kv in out.result.records { seen[KVPairKey(key: kv.key, value: kv.value), default: []].insert(kv.modRevision) }
            }
        }
        var pins: [KVPairKey: Int64] = [:]
        // (Exact mode only: with gaps, an unknown-outcome write is an unseen one.)
        for pair in pendingWritten where writers[pair] == 1 && !allowsGaps {
            if let revs = seen[pair], revs.count == 1, let r = revs.first {
                pins[pair] = r
                claimed.append(r)
            }
        }
        m.claimedWriteRevisions = claimed.sorted()
        m.pinnedPendingPuts = pins
        m.maxObservedRevision = history.compactMap { $0.isPending ? nil : $0.output?.revision }.max() ?? Int64.max
        return m
    }

    /// Whether a completed write of the history claims a revision in `lo...hi`.
    private func claimsRevision(in lo: Int64, _ hi: Int64) -> Bool {
        let revs = claimedWriteRevisions
        var a = 0, b = revs.count
        while a < b {
            let mid = (a + b) / 2
            if revs[mid] < lo { a = mid + 1 } else { b = mid }
        }
        return a < revs.count && revs[a] <= hi
    }

    public func step(_ state: KVModelState, _ input: KVInput, _ output: KVOutput?) -> (ok: Bool, newState: KVModelState) {
        guard let output else {
            guard let s = applyPending(state, input) else { return (false, state) }
            return (true, s)
        }
        guard let writes = output.result.claimsWrite(for: input) else { return (false, state) }
        let r = output.revision
        var s = state
        if allowsGaps {
            let lowest = state.revision + (state.gapOpen ? 1 : 0) + (writes ? 1 : 0)
            guard r >= lowest else { return (false, state) }
            let gapTop = writes ? r - 1 : r
            if gapTop > state.revision {
                guard !claimsRevision(in: state.revision + 1, gapTop) else { return (false, state) }
                if unseenWritesMayTouchKeys || state.gapOpen {
                    s.openGap(before: state.revision, upTo: gapTop)
                }
            }
            s.gapOpen = false
        } else {
            guard r == state.revision + (writes ? 1 : 0) else { return (false, state) }
        }
        s.revision = r
        let before = s
        guard s.verify(input, output.result, revision: r, before: before) else {
            return (false, state)
        }
        return (true, s)
    }

    /// The state after an unknown-outcome request takes effect now, or nil when that is
    /// impossible or changes nothing (then leaving it out, which the search also tries,
    /// is equivalent): its write needs a revision that some completed operation can still
    /// observe, and in `.exact` mode one that no completed write claims (or exactly the
    /// one a response showed its value with).
    private func applyPending(_ state: KVModelState, _ input: KVInput) -> KVModelState? {
        guard input.mayWrite, state.revision < maxObservedRevision else { return nil }
        if allowsGaps {
            // Several unknown-outcome writes in one gap look like one.
            guard !state.gapOpen else { return nil }
            var s = state
            s.gapOpen = true
            return s
        }
        var store = ReferenceKVStore(revision: state.revision, records: state.entries.compactMap(\.kv))
        let (_, events) = store.applyRecordingEvents(input)
        guard store.revision != state.revision else { return nil }
        var pinned = false
        for e in events where e.type == .put {
            if let pin = pinnedPendingPuts[KVPairKey(key: e.kv.key, value: e.kv.value)] {
                guard pin == store.revision else { return nil }
                pinned = true
            }
        }
        if !pinned && claimsRevision(in: store.revision, store.revision) { return nil }
        return KVModelState(store: store)
    }

    public func mayChangeState(_ input: KVInput) -> Bool { input.mayWrite }

    public func subhistoryModel() -> KVModel {
        var m = self
        m.revisions = .gapsAllowed
        return m
    }

    public func partition(_ history: [HistoryOperation<KVInput, KVOutput>]) -> [[HistoryOperation<KVInput, KVOutput>]] {
        guard partitionByKey, history.count > 1 else { return [history] }
        // All keys the history mentions.
        var keySet = Set<KVBytes>()
        for op in history {
            keySet.formUnion(op.input.namedKeys)
            if let out = op.output { keySet.formUnion(out.result.mentionedKeys) }
        }
        let keys = keySet.sorted()
        var index: [KVBytes: Int] = [:]
        for (i, k) in keys.enumerated() { index[k] = i }
        var parent = Array(keys.indices)
        func find(_ x: Int) -> Int {
            var x = x
            while parent[x] != x {
                parent[x] = parent[parent[x]]
                x = parent[x]
            }
            return x
        }
        func lowerBound(_ k: KVBytes) -> Int {
            var lo = 0, hi = keys.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if keys[mid] < k { lo = mid + 1 } else { hi = mid }
            }
            return lo
        }
        var opKeys: [[Int]] = []
        for op in history {
            var ks = op.input.namedKeys.compactMap { index[$0] }
            if let out = op.output { ks += out.result.mentionedKeys.compactMap { index[$0] } }
            for r in op.input.ranges {
                var i = lowerBound(r.key)
                while i < keys.count, r.contains(keys[i]) {
                    ks.append(i)
                    i += 1
                }
            }
            if let first = ks.first {
                for k in ks.dropFirst() {
                    let a = find(first), b = find(k)
                    if a != b { parent[a] = b }
                }
            }
            opKeys.append(ks)
        }
        var groups: [Int: Int] = [:]  // root -> part index
        var parts: [[HistoryOperation<KVInput, KVOutput>]] = []
        var keyless: [HistoryOperation<KVInput, KVOutput>] = []
        for (op, ks) in zip(history, opKeys) {
            guard let first = ks.first else {
                keyless.append(op)
                continue
            }
            let root = find(first)
            if let p = groups[root] {
                parts[p].append(op)
            } else {
                groups[root] = parts.count
                parts.append([op])
            }
        }
        if !keyless.isEmpty { parts.append(keyless) }
        return parts
    }

    public func describe(_ operation: HistoryOperation<KVInput, KVOutput>) -> String {
        defaultDescription(of: operation, input: operation.input.description,
                           output: operation.output?.description)
    }

    public func describe(state: KVModelState) -> String { state.description }

    public func describeModel() -> String {
        "KVModel(revisions: \(allowsGaps ? "gaps allowed" : "exact")\(partitionByKey ? ", partitioned by key" : ""))"
    }
}

struct KVPairKey: Hashable, Sendable {
    var key: KVBytes
    var value: KVBytes
}

extension KVInput {
    /// (key, value) pairs any branch may put.
    var putPairs: [KVPairKey] {
        switch self {
        case .put(let k, let v, _): return [KVPairKey(key: k, value: v)]
        case .range, .delete: return []
        case .txn(_, let s, let f): return s.flatMap(\.putPairs) + f.flatMap(\.putPairs)
        }
    }
}

extension KVResult {
    /// Every record a response carries.
    var records: [KVRecord] {
        switch self {
        case .put(let p): return p.map { [$0] } ?? []
        case .range(let kvs): return kvs
        case .delete(_, let p): return p
        case .txn(_, let rs): return rs.flatMap(\.records)
        }
    }

    /// Keys appearing in returned records.
    var mentionedKeys: [KVBytes] {
        switch self {
        case .put(let p): return p.map { [$0.key] } ?? []
        case .range(let kvs): return kvs.map(\.key)
        case .delete(_, let p): return p.map(\.key)
        case .txn(_, let rs): return rs.flatMap(\.mentionedKeys)
        }
    }
}

/// What the KV model knows about the store at a point of a linearization.
///
/// Each listed key's record (or absence) is either known exactly, or -- after revision
/// gaps in which unseen writes may have happened -- "uncertain since S": the current
/// record is the listed one, or absent, or one whose mod revision lies in
/// `(S, lastGapEnd]`. Keys not listed are absent, or uncertain since `unlistedSince`.
public struct KVModelState: Hashable, Sendable, CustomStringConvertible {
    struct Known: Hashable, Sendable {
        var key: KVBytes
        /// nil: absent.
        var kv: KVRecord?
        /// 0: known exactly; otherwise the revision before the first gap since it was known.
        var uncertainSince: Int64
    }

    struct Knowledge {
        var kv: KVRecord?
        var since: Int64
        var uncertain: Bool { since > 0 }
    }

    /// The current (latest known) revision.
    public internal(set) var revision: Int64
    /// Highest revision at which unseen writes may have happened (0: none).
    var lastGapEnd: Int64 = 0
    /// A pending write was linearized: at least one unseen revision follows `revision`.
    var gapOpen = false
    /// 0: keys not listed are known absent; else uncertain since this revision.
    var unlistedSince: Int64 = 0
    /// Sorted by key.
    var entries: [Known]

    init(store: ReferenceKVStore) {
        revision = store.revision
        entries = store.records.map { Known(key: $0.key, kv: $0, uncertainSince: 0) }
    }

    private func lowerBound(_ key: KVBytes) -> Int {
        var lo = 0, hi = entries.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if entries[mid].key < key { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    func knowledge(_ key: KVBytes) -> Knowledge {
        let i = lowerBound(key)
        if i < entries.count, entries[i].key == key {
            return Knowledge(kv: entries[i].kv, since: entries[i].uncertainSince)
        }
        return Knowledge(kv: nil, since: unlistedSince)
    }

    /// Unseen writes may have happened in `(before, top]`: whatever was exact becomes
    /// uncertain since `before`.
    mutating func openGap(before: Int64, upTo top: Int64) {
        for i in entries.indices where entries[i].uncertainSince == 0 {
            entries[i].uncertainSince = before
        }
        if unlistedSince == 0 { unlistedSince = before }
        lastGapEnd = max(lastGapEnd, top)
    }

    /// Whether `observed` (nil = absent) can be the key's current record.
    func consistent(_ observed: KVRecord?, _ k: Knowledge) -> Bool {
        switch (observed, k.kv) {
        case (nil, nil): return true
        case (let o?, let kv?) where kv.agrees(with: o): return true
        default: break
        }
        guard k.uncertain else { return false }
        guard let o = observed else { return true }  // deleted by an unseen write
        return o.modRevision > k.since && o.modRevision <= lastGapEnd
    }

    /// `observed`, completed with fields only the knowledge has.
    static func merge(_ known: KVRecord?, _ observed: KVRecord) -> KVRecord {
        guard let known, known.agrees(with: observed) else { return observed }
        var r = observed
        if r.createRevision == 0 { r.createRevision = known.createRevision }
        if r.version == 0 { r.version = known.version }
        return r
    }

    /// Records exact knowledge of `key` (nil: absent).
    mutating func set(_ key: KVBytes, _ kv: KVRecord?) {
        let i = lowerBound(key)
        let found = i < entries.count && entries[i].key == key
        if kv == nil && unlistedSince == 0 {
            if found { entries.remove(at: i) }  // same as not listed
            return
        }
        let e = Known(key: key, kv: kv, uncertainSince: 0)
        if found { entries[i] = e } else { entries.insert(e, at: i) }
    }

    /// Listed entries whose key is in `r`.
    func listed(in r: KVRange) -> ArraySlice<Known> {
        if r.isSingleKey {
            let i = lowerBound(r.key)
            return i < entries.count && entries[i].key == r.key ? entries[i...i] : entries[0..<0]
        }
        let start = lowerBound(r.key)
        var end = start
        while end < entries.count, r.contains(entries[end].key) { end += 1 }
        return entries[start..<end]
    }

    private static func sortedAndInRange(_ kvs: [KVRecord], _ r: KVRange) -> Bool {
        for i in kvs.indices {
            guard r.contains(kvs[i].key) else { return false }
            if i > 0 && !(kvs[i - 1].key < kvs[i].key) { return false }
        }
        return true
    }

    private static func find(_ key: KVBytes, in kvs: [KVRecord]) -> KVRecord? {
        var lo = 0, hi = kvs.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if kvs[mid].key < key { lo = mid + 1 } else { hi = mid }
        }
        return lo < kvs.count && kvs[lo].key == key ? kvs[lo] : nil
    }

    /// Checks a claimed result against the knowledge and applies it. `before` is the state
    /// before the (outermost) request, used for transaction guards.
    mutating func verify(_ input: KVInput, _ result: KVResult, revision rev: Int64,
                         before: KVModelState) -> Bool {
        switch (input, result) {
        case (.put(let key, let value, let wantPrev), .put(let prev)):
            let k = knowledge(key)
            // The record before the put: .some(nil) = known absent, nil = unknown.
            var base: KVRecord?? = nil
            if wantPrev {
                guard consistent(prev, k) else { return false }
                base = .some(prev.map { Self.merge(k.kv, $0) })
            } else if !k.uncertain {
                base = .some(k.kv)
            }
            let kv: KVRecord
            switch base {
            case .some(.some(let p)):
                kv = KVRecord(key: key, value: value, createRevision: p.createRevision, modRevision: rev,
                              version: p.version == 0 ? 0 : p.version + 1)
            case .some(.none):
                kv = KVRecord(key: key, value: value, createRevision: rev, modRevision: rev, version: 1)
            case .none:
                kv = KVRecord(key: key, value: value, createRevision: 0, modRevision: rev, version: 0)
            }
            set(key, kv)
            return true

        case (.range(let r), .range(let kvs)):
            guard Self.sortedAndInRange(kvs, r) else { return false }
            let listedKeys = listed(in: r)
            for e in listedKeys {
                guard consistent(Self.find(e.key, in: kvs), knowledge(e.key)) else { return false }
            }
            var merged: [KVRecord] = []
            merged.reserveCapacity(kvs.count)
            for o in kvs {
                let k = knowledge(o.key)
                guard consistent(o, k) else { return false }
                merged.append(Self.merge(k.kv, o))
            }
            for e in listedKeys where Self.find(e.key, in: kvs) == nil { set(e.key, nil) }
            for o in merged { set(o.key, o) }
            return true

        case (.delete(let r, let wantPrev), .delete(let n, let prevs)):
            var lower = 0, upper = 0
            let listedKeys = listed(in: r)
            if r.isSingleKey {
                let k = knowledge(r.key)
                lower = (!k.uncertain && k.kv != nil) ? 1 : 0
                upper = k.uncertain ? 1 : lower
            } else {
                for e in listedKeys {
                    let k = knowledge(e.key)
                    if k.uncertain { upper += 1 } else if k.kv != nil { lower += 1; upper += 1 }
                }
                if unlistedSince > 0 { upper = Int.max }  // unseen keys may exist
            }
            guard n >= lower && n <= upper else { return false }
            if wantPrev {
                guard prevs.count == n, Self.sortedAndInRange(prevs, r) else { return false }
                for e in listedKeys {
                    guard consistent(Self.find(e.key, in: prevs), knowledge(e.key)) else { return false }
                }
                for p in prevs {
                    guard consistent(p, knowledge(p.key)) else { return false }
                }
                for p in prevs { set(p.key, nil) }
            }
            for e in listedKeys { set(e.key, nil) }
            if r.isSingleKey { set(r.key, nil) }
            return true

        case (.txn(let compares, let success, let failure), .txn(let ok, let results)):
            var verdict: Bool? = true
            for c in compares {
                let k = before.knowledge(c.key)
                let v: Bool? = k.uncertain ? nil : c.evaluate(k.kv)
                if v == false { verdict = false; break }
                if v == nil { verdict = nil }
            }
            if let verdict, verdict != ok { return false }
            let branch = ok ? success : failure
            guard branch.count == results.count else { return false }
            for (i, r) in zip(branch, results) {
                guard verify(i, r, revision: rev, before: before) else { return false }
            }
            return true

        default:
            return false
        }
    }

    public var description: String {
        var s = "rev \(revision)"
        if lastGapEnd > 0 { s += " (unseen writes possible up to rev \(lastGapEnd))" }
        if gapOpen { s += " (+ pending writes)" }
        let live = entries.compactMap { e -> String? in
            guard let kv = e.kv else { return nil }
            return e.uncertainSince > 0 ? "\(kv)?" : kv.description
        }
        return s + " {" + live.joined(separator: ", ") + "}"
    }
}
