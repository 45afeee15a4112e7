import Checkers
import Testing

@Suite("Watch checker")
struct WatchCheckerTests {
    static func makeHistory() throws -> CommittedHistory {
        try CommittedHistory.build(from: [
            AcknowledgedWrite(revision: 2, changes: [.put(key: "a", value: "1")]),
            AcknowledgedWrite(revision: 3, changes: [.put(key: "b", value: "1")]),
            AcknowledgedWrite(revision: 4, changes: [.put(key: "a", value: "2"), .delete(key: "b")]),
            AcknowledgedWrite(revision: 5, changes: [.put(key: "c", value: "1")]),
            AcknowledgedWrite(revision: 6, changes: [.delete(key: "a")]),
            AcknowledgedWrite(revision: 7, changes: [.put(key: "a", value: "3")]),
            AcknowledgedWrite(revision: 8, changes: [.put(key: "b", value: "2"), .put(key: "c", value: "2")]),
            AcknowledgedWrite(revision: 9, changes: [.put(key: "d", value: "1")]),
        ])
    }

    /// What a correct server sends: one response per revision with matching events.
    static func correctResponses(_ h: CommittedHistory, _ req: RecordedWatchRequest, from: Int64, to: Int64) -> [RecordedWatchResponse] {
        var out: [RecordedWatchResponse] = []
        guard from <= to else { return out }
        for rev in from...to {
            let evs = h.events(at: rev).filter { req.matches($0) }.map { e -> KVEvent in
                var e = e
                if !req.prevKV { e.prevKV = nil }
                return e
            }
            if !evs.isEmpty { out.append(.events(evs, header: rev)) }
        }
        return out
    }

    static let all = RecordedWatchRequest(range: .prefix(""), startRevision: 2, prevKV: true)

    func check(_ streams: [RecordedWatch]) throws -> [WatchViolation] {
        WatchChecker(history: try Self.makeHistory()).check(streams)
    }

    func kinds(_ v: [WatchViolation]) -> Set<WatchViolation.Kind> { Set(v.map(\.kind)) }

    @Test func correctStreamsPass() throws {
        let h = try Self.makeHistory()
        var streams: [RecordedWatch] = []
        let reqs: [RecordedWatchRequest] = [
            Self.all,
            RecordedWatchRequest(range: .single("a"), startRevision: 2),
            RecordedWatchRequest(range: .range("b", "d"), startRevision: 4, prevKV: true, filterNoDelete: true),
            RecordedWatchRequest(range: .prefix(""), startRevision: 3, filterNoPut: true),
        ]
        for (i, req) in reqs.enumerated() {
            streams.append(RecordedWatch(id: "w\(i)", request: req,
                                         responses: [.created(header: 1)] + Self.correctResponses(h, req, from: req.startRevision, to: 9)
                                             + [.progress(9)]))
        }
        // "From now": start taken from the created response's header.
        let now = RecordedWatchRequest(range: .prefix(""))
        streams.append(RecordedWatch(id: "now", request: now,
                                     responses: [.created(header: 6)] + Self.correctResponses(h, now, from: 7, to: 9)))
        // Fragmented delivery of revision 8 (two events) is fine when requested.
        var frag = RecordedWatchRequest(range: .prefix(""), startRevision: 8, fragment: true)
        frag.prevKV = false
        let e8 = h.events(at: 8).map { e -> KVEvent in var e = e; e.prevKV = nil; return e }
        streams.append(RecordedWatch(id: "frag", request: frag, responses: [
            .events([e8[0]], header: 8, fragment: true), .events([e8[1]], header: 8),
        ]))
        let v = WatchChecker(history: h).check(streams)
        #expect(v.isEmpty, "\(v)")
    }

    @Test func droppedEventIsMissing() throws {
        let h = try Self.makeHistory()
        var rs = Self.correctResponses(h, Self.all, from: 2, to: 9)
        rs.remove(at: 3)  // revision 5
        let v = try check([RecordedWatch(id: "s", request: Self.all, responses: rs)])
        #expect(kinds(v) == [.missingEvent])
        #expect(v.first?.revision == 5)
        #expect(v.first?.description.contains("stream s") == true)
    }

    @Test func duplicatedEventIsReported() throws {
        let h = try Self.makeHistory()
        var rs = Self.correctResponses(h, Self.all, from: 2, to: 9)
        rs.insert(rs[1], at: 2)
        let v = try check([RecordedWatch(id: "s", request: Self.all, responses: rs)])
        #expect(kinds(v) == [.duplicateEvent])
    }

    @Test func reorderedEventsAreReported() throws {
        let h = try Self.makeHistory()
        var rs = Self.correctResponses(h, Self.all, from: 2, to: 9)
        rs.swapAt(3, 4)
        #expect(kinds(try check([RecordedWatch(id: "s", request: Self.all, responses: rs)])).contains(.outOfOrder))
        // Within one revision, the write order must be kept too.
        var rs2 = Self.correctResponses(h, Self.all, from: 2, to: 9)
        rs2[2].events.reverse()  // revision 4: put a, delete b
        #expect(kinds(try check([RecordedWatch(id: "s", request: Self.all, responses: rs2)])) == [.outOfOrder])
    }

    @Test func splitRevisionIsReported() throws {
        let h = try Self.makeHistory()
        var rs = Self.correctResponses(h, Self.all, from: 2, to: 9)
        let r4 = rs[2]
        rs.replaceSubrange(2...2, with: [.events([r4.events[0]], header: 4), .events([r4.events[1]], header: 4)])
        #expect(kinds(try check([RecordedWatch(id: "s", request: Self.all, responses: rs)])) == [.splitRevision])
        // With fragmentation requested, only a split marked as fragments is fine.
        var fragReq = Self.all
        fragReq.fragment = true
        #expect(kinds(try check([RecordedWatch(id: "s", request: fragReq, responses: rs)])) == [.splitRevision])
        rs[2].fragment = true
        #expect(try check([RecordedWatch(id: "s", request: fragReq, responses: rs)]).isEmpty)
    }

    @Test func wrongPrevKVIsReported() throws {
        let h = try Self.makeHistory()
        var rs = Self.correctResponses(h, Self.all, from: 2, to: 9)
        rs[2].events[0].prevKV = KVRecord(key: "a", value: "0", createRevision: 2, modRevision: 2, version: 1)  // was a=1
        var v = try check([RecordedWatch(id: "s", request: Self.all, responses: rs)])
        #expect(kinds(v) == [.wrongPrevKV])
        #expect(v.first?.message.contains("a=1") == true)
        // A prev_kv on a key that did not exist before.
        rs = Self.correctResponses(h, Self.all, from: 2, to: 9)
        rs[0].events[0].prevKV = KVRecord(key: "a", value: "x", modRevision: 1)
        v = try check([RecordedWatch(id: "s", request: Self.all, responses: rs)])
        #expect(kinds(v) == [.wrongPrevKV])
        // Not requested, but sent.
        var noPrev = Self.all
        noPrev.prevKV = false
        v = try check([RecordedWatch(id: "s", request: noPrev, responses: Self.correctResponses(h, Self.all, from: 2, to: 9))])
        #expect(kinds(v) == [.unexpectedPrevKV])
    }

    @Test func filteredEventsMustNotBeDelivered() throws {
        let h = try Self.makeHistory()
        let noPut = RecordedWatchRequest(range: .prefix(""), startRevision: 2, prevKV: true, filterNoPut: true)
        var rs = Self.correctResponses(h, noPut, from: 2, to: 9)
        rs.insert(.events(h.events(at: 5), header: 5), at: 1)  // put c=1
        #expect(kinds(try check([RecordedWatch(id: "s", request: noPut, responses: rs)])) == [.filteredEventDelivered])
        let noDelete = RecordedWatchRequest(range: .prefix(""), startRevision: 2, prevKV: true, filterNoDelete: true)
        // Deliver revision 4 unfiltered (put a=2 + delete b).
        let rs2 = Self.correctResponses(h, Self.all, from: 2, to: 9)
        #expect(kinds(try check([RecordedWatch(id: "s", request: noDelete, responses: rs2)])) == [.filteredEventDelivered])
    }

    @Test func progressNotifyPastAnUndeliveredEvent() throws {
        let h = try Self.makeHistory()
        // Progress at 6 sent before revision 5's event, which comes later.
        var rs = Self.correctResponses(h, Self.all, from: 2, to: 9)
        let late = rs.remove(at: 3)  // revision 5
        rs.insert(.progress(6), at: 3)
        rs.insert(late, at: 4)
        let v = try check([RecordedWatch(id: "s", request: Self.all, responses: rs)])
        #expect(kinds(v).contains(.progressBeforeEvents))
        #expect(v.contains { $0.kind == .progressBeforeEvents && $0.revision == 5 })
        // A progress notification below an already delivered event.
        var rs2 = Self.correctResponses(h, Self.all, from: 2, to: 9)
        rs2.append(.progress(7))
        #expect(kinds(try check([RecordedWatch(id: "s", request: Self.all, responses: rs2)])) == [.progressBehindDelivered])
        // A correct bookmark in the middle.
        var rs3 = Self.correctResponses(h, Self.all, from: 2, to: 9)
        rs3.insert(.progress(5), at: 4)
        #expect(try check([RecordedWatch(id: "s", request: Self.all, responses: rs3)]).isEmpty)
    }

    @Test func resumedStreams() throws {
        let h = try Self.makeHistory()
        let first = RecordedWatch(id: "s1", request: Self.all, responses: Self.correctResponses(h, Self.all, from: 2, to: 5))
        // Correct: resume at last seen + 1.
        var r6 = Self.all
        r6.startRevision = 6
        let good = RecordedWatch(id: "s2", request: r6, responses: Self.correctResponses(h, r6, from: 6, to: 9), resumes: "s1")
        #expect(try check([first, good]).isEmpty)
        // Resumed after a progress notification: last seen is the notification's revision.
        // (Key c changes at revisions 5 and 8 only.)
        let c2 = RecordedWatchRequest(range: .single("c"), startRevision: 2)
        let c8 = RecordedWatchRequest(range: .single("c"), startRevision: 8)
        let cFirst = RecordedWatch(id: "c1", request: c2, responses: Self.correctResponses(h, c2, from: 2, to: 6) + [.progress(7)])
        let cNext = RecordedWatch(id: "c2", request: c8, responses: Self.correctResponses(h, c8, from: 8, to: 9), resumes: "c1")
        #expect(try check([cFirst, cNext]).isEmpty)
        var r7 = Self.all
        r7.startRevision = 7
        // Gap: resumed at 7, revision 6 (delete a) lost.
        let gap = RecordedWatch(id: "s2", request: r7, responses: Self.correctResponses(h, r7, from: 7, to: 9), resumes: "s1")
        let v = try check([first, gap])
        #expect(kinds(v) == [.resumeGap])
        #expect(v.first?.streamID == "s2")
        #expect(v.first?.revision == 6)
        // Overlap: resumed at 5, revision 5 delivered twice.
        var r5 = Self.all
        r5.startRevision = 5
        let overlap = RecordedWatch(id: "s2", request: r5, responses: Self.correctResponses(h, r5, from: 5, to: 9), resumes: "s1")
        #expect(kinds(try check([first, overlap])) == [.duplicateEvent])
        // Three-stream chain, order of the input irrelevant.
        var r8 = Self.all
        r8.startRevision = 8
        let mid = RecordedWatch(id: "s2", request: r6, responses: Self.correctResponses(h, r6, from: 6, to: 7), resumes: "s1")
        let last = RecordedWatch(id: "s3", request: r8, responses: Self.correctResponses(h, r8, from: 8, to: 9), resumes: "s2")
        #expect(try check([last, first, mid]).isEmpty)
        #expect(kinds(try check([last, first])).contains(.malformedStreams))
    }

    @Test func compactionEndsAStreamWithoutAGap() throws {
        let h = try Self.makeHistory()
        let s1 = RecordedWatch(id: "s1", request: Self.all, responses: [.compacted(6, header: 9)])
        var r6 = Self.all
        r6.startRevision = 6
        let s2 = RecordedWatch(id: "s2", request: r6, responses: Self.correctResponses(h, r6, from: 6, to: 9), resumes: "s1")
        #expect(try check([s1, s2]).isEmpty)
        // Events after the cancel are a violation.
        let s1bad = RecordedWatch(id: "s1", request: Self.all,
                                  responses: [.compacted(6, header: 9)] + Self.correctResponses(h, Self.all, from: 6, to: 6))
        #expect(kinds(try check([s1bad])) == [.responseAfterCancel])
        // Canceled for compaction although its next revision was not compacted.
        let spurious = RecordedWatch(id: "s1", request: Self.all,
                                     responses: Self.correctResponses(h, Self.all, from: 2, to: 6) + [.compacted(4, header: 9)])
        #expect(kinds(try check([spurious])) == [.unexpectedCompaction])
    }

    @Test func phantomAndAlteredEvents() throws {
        let h = try Self.makeHistory()
        var rs = Self.correctResponses(h, Self.all, from: 2, to: 9)
        rs.append(.events([.put(KVRecord(key: "z", value: "1", modRevision: 10))], header: 10))
        #expect(kinds(try check([RecordedWatch(id: "s", request: Self.all, responses: rs)])) == [.unknownEvent])
        var rs2 = Self.correctResponses(h, Self.all, from: 2, to: 9)
        rs2[0].events[0].kv.value = "not-1"
        #expect(kinds(try check([RecordedWatch(id: "s", request: Self.all, responses: rs2)])) == [.eventMismatch])
        let onlyA = RecordedWatchRequest(range: .single("a"), startRevision: 2)
        let rs3 = Self.correctResponses(h, RecordedWatchRequest(range: .prefix(""), startRevision: 2), from: 2, to: 3)
        #expect(kinds(try check([RecordedWatch(id: "s", request: onlyA, responses: rs3)])) == [.eventOutsideRange])
        var rs4 = Self.correctResponses(h, Self.all, from: 2, to: 9)
        rs4[3].headerRevision = 4
        #expect(kinds(try check([RecordedWatch(id: "s", request: Self.all, responses: rs4)])) == [.headerBehindEvents])
        var late = Self.all
        late.startRevision = 4
        #expect(kinds(try check([RecordedWatch(id: "s", request: late, responses: Self.correctResponses(h, Self.all, from: 3, to: 9))]))
                == [.eventBeforeStart])
    }
}
