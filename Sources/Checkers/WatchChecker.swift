// Checks recorded watch streams against the committed history for etcd's watch
// guarantees: ordered, unique, atomic, reliable, resumable, bookmarkable, plus prev_kv
// and filter correctness.

/// The watch request as sent.
public struct RecordedWatchRequest: Hashable, Sendable {
    public var range: KVRange
    /// 0: "from now" (the created response's header revision + 1, when recorded).
    public var startRevision: Int64
    public var prevKV: Bool
    public var filterNoPut: Bool
    public var filterNoDelete: Bool
    /// Recorded for reference only: progress notifications are checked whenever they
    /// arrive (etcd also sends them on explicit progress requests).
    public var progressNotify: Bool
    /// Whether the client allowed fragmented responses (see `splitRevision`).
    public var fragment: Bool

    public init(range: KVRange, startRevision: Int64 = 0, prevKV: Bool = false, filterNoPut: Bool = false,
                filterNoDelete: Bool = false, progressNotify: Bool = false, fragment: Bool = false) {
        self.range = range
        self.startRevision = startRevision
        self.prevKV = prevKV
        self.filterNoPut = filterNoPut
        self.filterNoDelete = filterNoDelete
        self.progressNotify = progressNotify
        self.fragment = fragment
    }

    /// Whether the watch should deliver this (committed) event.
    public func matches(_ e: KVEvent) -> Bool {
        guard range.contains(e.kv.key) else { return false }
        switch e.type {
        case .put: return !filterNoPut
        case .delete: return !filterNoDelete
        }
    }
}

/// One response received on a watch stream.
public struct RecordedWatchResponse: Hashable, Sendable {
    /// 0 if not recorded.
    public var headerRevision: Int64
    public var events: [KVEvent]
    public var created: Bool
    public var canceled: Bool
    /// Non-zero when the watch was canceled because its revision was compacted.
    public var compactRevision: Int64
    public var isProgressNotify: Bool
    /// etcd's `fragment` flag: more events of this (split) response follow.
    public var fragment: Bool

    public init(headerRevision: Int64, events: [KVEvent] = [], created: Bool = false, canceled: Bool = false,
                compactRevision: Int64 = 0, isProgressNotify: Bool = false, fragment: Bool = false) {
        self.headerRevision = headerRevision
        self.events = events
        self.created = created
        self.canceled = canceled
        self.compactRevision = compactRevision
        self.isProgressNotify = isProgressNotify
        self.fragment = fragment
    }

    public static func created(header: Int64) -> RecordedWatchResponse {
        .init(headerRevision: header, created: true)
    }
    public static func events(_ events: [KVEvent], header: Int64, fragment: Bool = false) -> RecordedWatchResponse {
        .init(headerRevision: header, events: events, fragment: fragment)
    }
    public static func progress(_ revision: Int64) -> RecordedWatchResponse {
        .init(headerRevision: revision, isProgressNotify: true)
    }
    public static func compacted(_ compactRevision: Int64, header: Int64) -> RecordedWatchResponse {
        .init(headerRevision: header, canceled: true, compactRevision: compactRevision)
    }

    /// etcd's rule for recognizing a progress notification in a raw response.
    public static func looksLikeProgressNotify(headerRevision: Int64, eventCount: Int, created: Bool,
                                               canceled: Bool, compactRevision: Int64) -> Bool {
        eventCount == 0 && !created && !canceled && compactRevision == 0 && headerRevision != 0
    }
}

/// One recorded watch stream. A stream that `resumes` another (by id) continues it: the
/// streams linked this way form a chain checked as one logical watch.
public struct RecordedWatch: Hashable, Sendable {
    public var id: String
    public var request: RecordedWatchRequest
    public var responses: [RecordedWatchResponse]
    public var resumes: String?

    public init(id: String, request: RecordedWatchRequest, responses: [RecordedWatchResponse], resumes: String? = nil) {
        self.id = id
        self.request = request
        self.responses = responses
        self.resumes = resumes
    }
}

/// A violated watch guarantee.
public struct WatchViolation: Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Hashable, Sendable, CaseIterable {
        /// ordered: an event's revision (or in-revision position) is not after the previous one's.
        case outOfOrder
        /// unique: an event delivered twice on the chain.
        case duplicateEvent
        /// atomic: a revision's events spread over several responses.
        case splitRevision
        /// reliable: a matching committed event between the start and the last delivered revision was never delivered.
        case missingEvent
        /// resumable: events lost between a stream and the stream resuming it.
        case resumeGap
        /// bookmarkable: a progress notification at R came before a matching event <= R.
        case progressBeforeEvents
        /// bookmarkable: a progress notification at R after an event > R was delivered.
        case progressBehindDelivered
        /// prev_kv differs from the key's record before the revision.
        case wrongPrevKV
        /// prev_kv present although not requested.
        case unexpectedPrevKV
        /// A put delivered with NOPUT, or a delete with NODELETE.
        case filteredEventDelivered
        /// An event for a key outside the watched range.
        case eventOutsideRange
        /// An event before the stream's start revision.
        case eventBeforeStart
        /// No such event in the committed history.
        case unknownEvent
        /// The event's record differs from the committed one.
        case eventMismatch
        /// A response's header revision is below one of its events' revisions.
        case headerBehindEvents
        /// A response after the stream was canceled.
        case responseAfterCancel
        /// Canceled for compaction although the next revision to deliver was not compacted.
        case unexpectedCompaction
        /// Streams that cannot form chains (unknown or shared predecessor, cycle, differing requests).
        case malformedStreams
    }

    public var kind: Kind
    public var streamID: String
    public var revision: Int64?
    /// Index of the response in its stream, when one response is at fault.
    public var responseIndex: Int?
    public var message: String

    public init(kind: Kind, streamID: String, revision: Int64?, responseIndex: Int?, message: String) {
        self.kind = kind
        self.streamID = streamID
        self.revision = revision
        self.responseIndex = responseIndex
        self.message = message
    }

    public var description: String {
        var s = "[\(kind.rawValue)] stream \(streamID)"
        if let revision { s += " rev \(revision)" }
        if let responseIndex { s += " response #\(responseIndex)" }
        return s + ": " + message
    }
}

/// Checks watch streams against a committed history.
public struct WatchChecker: Sendable {
    public var history: CommittedHistory

    public init(history: CommittedHistory) {
        self.history = history
    }

    /// Position of a committed event: revision and index within the revision.
    struct EventKey: Hashable, Comparable {
        var revision: Int64
        var index: Int
        static func < (a: EventKey, b: EventKey) -> Bool {
            (a.revision, a.index) < (b.revision, b.index)
        }
    }

    /// All violations, grouped by chain, in stream order.
    public func check(_ streams: [RecordedWatch]) -> [WatchViolation] {
        var violations: [WatchViolation] = []
        var byID: [String: Int] = [:]
        for (i, s) in streams.enumerated() {
            if byID[s.id] != nil {
                violations.append(.init(kind: .malformedStreams, streamID: s.id, revision: nil, responseIndex: nil,
                                        message: "stream id used twice"))
            } else {
                byID[s.id] = i
            }
        }
        var successor: [Int: Int] = [:]
        var hasPredecessor = Set<Int>()
        for (i, s) in streams.enumerated() {
            guard let p = s.resumes else { continue }
            guard let pi = byID[p] else {
                violations.append(.init(kind: .malformedStreams, streamID: s.id, revision: nil, responseIndex: nil,
                                        message: "resumes unknown stream \(p); checked on its own"))
                continue
            }
            if successor[pi] != nil {
                violations.append(.init(kind: .malformedStreams, streamID: s.id, revision: nil, responseIndex: nil,
                                        message: "stream \(p) is resumed by more than one stream; checked on its own"))
                continue
            }
            successor[pi] = i
            hasPredecessor.insert(i)
        }
        var visited = Set<Int>()
        for (i, _) in streams.enumerated() where !hasPredecessor.contains(i) {
            var chain: [RecordedWatch] = []
            var cur: Int? = i
            while let c = cur, !visited.contains(c) {
                visited.insert(c)
                chain.append(streams[c])
                cur = successor[c]
            }
            violations += checkChain(chain)
        }
        for (i, s) in streams.enumerated() where !visited.contains(i) {
            violations.append(.init(kind: .malformedStreams, streamID: s.id, revision: nil, responseIndex: nil,
                                    message: "stream is part of a resume cycle; not checked"))
        }
        return violations
    }

    /// Finds the committed event a delivered one refers to.
    private func locate(_ e: KVEvent, delivered: Set<EventKey>) -> (EventKey, KVEvent)? {
        let events = history.events(at: e.kv.modRevision)
        var fallback: (EventKey, KVEvent)?
        for (i, h) in events.enumerated() where h.type == e.type && h.kv.key == e.kv.key {
            let key = EventKey(revision: e.kv.modRevision, index: i)
            if !delivered.contains(key) { return (key, h) }
            if fallback == nil { fallback = (key, h) }
        }
        return fallback
    }

    private static func sameRecord(_ delivered: KVEvent, _ committed: KVEvent) -> Bool {
        switch committed.type {
        case .put: return committed.kv.agrees(with: delivered.kv)
        case .delete: return committed.kv.key == delivered.kv.key && committed.kv.modRevision == delivered.kv.modRevision
        }
    }

    private func checkChain(_ chain: [RecordedWatch]) -> [WatchViolation] {
        guard let first = chain.first else { return [] }
        var out: [WatchViolation] = []
        let req = first.request
        func report(_ kind: WatchViolation.Kind, _ stream: String, _ rev: Int64?, _ resp: Int?, _ msg: String) {
            out.append(WatchViolation(kind: kind, streamID: stream, revision: rev, responseIndex: resp, message: msg))
        }
        func matching(in rev: Int64) -> [(EventKey, KVEvent)] {
            history.events(at: rev).enumerated().compactMap { i, e in
                req.matches(e) ? (EventKey(revision: rev, index: i), e) : nil
            }
        }

        var delivered = Set<EventKey>()
        var last: EventKey?
        var maxDelivered: Int64 = 0
        var chainStart: Int64?
        var excused: [ClosedRange<Int64>] = []
        var progressMax: Int64 = 0
        var compactedUpTo: Int64 = 0
        var bookmarkVerifiedUpTo: Int64 = 0  // matching events <= this were checked for a bookmark
        func isExcused(_ rev: Int64) -> Bool { excused.contains { $0.contains(rev) } }

        for (si, seg) in chain.enumerated() {
            let sreq = seg.request
            if si > 0 && (sreq.range != req.range || sreq.filterNoPut != req.filterNoPut
                          || sreq.filterNoDelete != req.filterNoDelete || sreq.prevKV != req.prevKV) {
                report(.malformedStreams, seg.id, nil, nil,
                       "resumes \(chain[si - 1].id) with a different range, filters or prev_kv option")
            }
            var start: Int64? = sreq.startRevision > 0 ? sreq.startRevision : nil
            if start == nil, let c = seg.responses.first, c.created, c.headerRevision > 0 {
                start = c.headerRevision + 1
            }
            if si == 0 {
                chainStart = start
            } else if let s = start {
                let base = (chainStart ?? s) - 1
                let seen = max(maxDelivered, progressMax, compactedUpTo, base)
                if s > seen + 1 {
                    var lost: [String] = []
                    for rev in (seen + 1)..<s where !isExcused(rev) {
                        for (_, e) in matching(in: rev) { lost.append("\(e) (rev \(rev))") }
                    }
                    if !lost.isEmpty {
                        report(.resumeGap, seg.id, seen + 1, nil,
                               "resumed at revision \(s) but \(chain[si - 1].id) had only seen up to \(seen); lost: "
                               + lost.prefix(10).joined(separator: "; ") + (lost.count > 10 ? "; ..." : ""))
                    }
                    excused.append((seen + 1)...(s - 1))
                }
            }
            if chainStart == nil { chainStart = start }

            var canceled = false
            var responsesOfRevision: [Int64: [Int]] = [:]
            for (ri, resp) in seg.responses.enumerated() {
                if canceled {
                    report(.responseAfterCancel, seg.id, resp.headerRevision, ri, "response received after the watch was canceled")
                    continue
                }
                var maxEventRev: Int64 = 0
                for ev in resp.events {
                    let rev = ev.kv.modRevision
                    maxEventRev = max(maxEventRev, rev)
                    guard let (key, committed) = locate(ev, delivered: delivered) else {
                        report(.unknownEvent, seg.id, rev, ri,
                               history.contains(revision: rev)
                                   ? "\(ev) is not among the events committed at revision \(rev): \(history.events(at: rev))"
                                   : "\(ev) is outside the committed history (revisions \(history.initialRevision + 1)...\(history.lastRevision))")
                        continue
                    }
                    if !Self.sameRecord(ev, committed) {
                        report(.eventMismatch, seg.id, rev, ri, "delivered \(ev), committed \(committed)")
                    }
                    if !req.range.contains(ev.kv.key) {
                        report(.eventOutsideRange, seg.id, rev, ri, "\(ev) is outside the watched range \(req.range)")
                    }
                    if ev.type == .put && req.filterNoPut {
                        report(.filteredEventDelivered, seg.id, rev, ri, "put event \(ev) delivered despite the NOPUT filter")
                    }
                    if ev.type == .delete && req.filterNoDelete {
                        report(.filteredEventDelivered, seg.id, rev, ri, "delete event \(ev) delivered despite the NODELETE filter")
                    }
                    if let s = start, rev < s {
                        report(.eventBeforeStart, seg.id, rev, ri, "\(ev) is before the start revision \(s)")
                    }
                    if req.prevKV {
                        let ok: Bool
                        switch (ev.prevKV, committed.prevKV) {
                        case (nil, nil): ok = true
                        case (let a?, let b?): ok = b.agrees(with: a)
                        default: ok = false
                        }
                        if !ok {
                            report(.wrongPrevKV, seg.id, rev, ri,
                                   "prev_kv of \(ev.type == .put ? "put" : "delete") \(ev.kv.key) is \(ev.prevKV.map(\.description) ?? "absent"), expected \(committed.prevKV.map(\.description) ?? "absent (key did not exist)")")
                        }
                    } else if ev.prevKV != nil {
                        report(.unexpectedPrevKV, seg.id, rev, ri, "prev_kv present on \(ev.kv.key) although not requested")
                    }
                    if delivered.contains(key) {
                        report(.duplicateEvent, seg.id, rev, ri, "\(committed) delivered again")
                        continue
                    }
                    if let l = last, key < l {
                        report(.outOfOrder, seg.id, rev, ri,
                               "\(committed) (rev \(key.revision), #\(key.index + 1) in its revision) delivered after rev \(l.revision) #\(l.index + 1)")
                    } else {
                        last = key
                    }
                    if chainStart == nil { chainStart = rev }
                    delivered.insert(key)
                    maxDelivered = max(maxDelivered, rev)
                    if responsesOfRevision[rev]?.last != ri { responsesOfRevision[rev, default: []].append(ri) }
                }
                if resp.headerRevision > 0 && resp.headerRevision < maxEventRev {
                    report(.headerBehindEvents, seg.id, resp.headerRevision, ri,
                           "header revision \(resp.headerRevision) is below event revision \(maxEventRev)")
                }
                if resp.isProgressNotify {
                    let r = resp.headerRevision
                    if maxDelivered > r {
                        report(.progressBehindDelivered, seg.id, r, ri,
                               "progress notification at revision \(r) after an event at revision \(maxDelivered) was delivered")
                    }
                    if let cs = chainStart {
                        let from = max(cs, bookmarkVerifiedUpTo + 1)
                        if from <= r {
                            for rev in from...r where !isExcused(rev) {
                                for (k, e) in matching(in: rev) where !delivered.contains(k) {
                                    report(.progressBeforeEvents, seg.id, rev, ri,
                                           "progress notification at revision \(r) but matching \(e) (rev \(rev)) had not been delivered")
                                }
                            }
                        }
                        bookmarkVerifiedUpTo = max(bookmarkVerifiedUpTo, r)
                    }
                    progressMax = max(progressMax, r)
                }
                if resp.canceled {
                    canceled = true
                    if resp.compactRevision > 0 {
                        let next = max(maxDelivered + 1, start ?? 0)
                        if next >= resp.compactRevision {
                            report(.unexpectedCompaction, seg.id, resp.compactRevision, ri,
                                   "canceled for compaction at \(resp.compactRevision) but the next revision to deliver, \(next), was not compacted")
                        } else {
                            excused.append(next...(resp.compactRevision - 1))
                            compactedUpTo = max(compactedUpTo, resp.compactRevision - 1)
                        }
                    }
                }
            }
            // Atomic: each revision's events in one response (or contiguous fragments).
            for (rev, rs) in responsesOfRevision.sorted(by: { $0.key < $1.key }) where rs.count > 1 {
                let contiguous = zip(rs, rs.dropFirst()).allSatisfy { $1 == $0 + 1 }
                let fragmented = sreq.fragment && contiguous && rs.dropLast().allSatisfy { seg.responses[$0].fragment }
                if !fragmented {
                    report(.splitRevision, seg.id, rev, rs.first,
                           "events of revision \(rev) were split over responses \(rs.map(String.init).joined(separator: ", "))"
                           + (sreq.fragment ? " (not contiguous fragments)" : ""))
                }
            }
        }

        // Reliable: every matching event between the start and the last delivered revision.
        if let cs = chainStart, maxDelivered >= cs {
            for rev in cs...maxDelivered where !isExcused(rev) {
                for (k, e) in matching(in: rev) where !delivered.contains(k) {
                    let stream = chain.first { s in s.responses.contains { $0.events.contains { $0.kv.modRevision >= rev } } }?.id ?? first.id
                    report(.missingEvent, stream, rev, nil,
                           "matching \(e) was never delivered (chain start \(cs), last delivered revision \(maxDelivered))")
                }
            }
        }
        return out
    }
}
