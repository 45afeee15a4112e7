import Checkers
import EtcdProto
import EtcdServer
import Foundation
import MVCC

/// One watch stream on one member instance: what was asked and every
/// response it got. A logical watcher is a chain of streams: when its
/// member crashes (or the client moves), it resumes on another member
/// from the revision after the last one it was given.
struct SimWatchStream {
    var id: String
    var request: RecordedWatchRequest
    var responses: [RecordedWatchResponse] = []
    var resumes: String?
    var node: Int
    var generation: Int
    var handle: WatcherHandle?
    var active = true
    /// The revision every event up to which has been delivered.
    var deliveredThrough: Int64
}

/// Records a stream's deliveries (always accepts: the simulation's
/// streams are never slow).
final class SimWatchSink: WatchSink, @unchecked Sendable {
    unowned let world: SimWorld
    let stream: Int

    init(world: SimWorld, stream: Int) {
        self.world = world
        self.stream = stream
    }

    func offer(_ delivery: WatchDelivery) -> Bool {
        world.delivered(delivery, to: stream)
        return true
    }
}

extension SimWorld {
    // MARK: - The reference history

    /// Every member reports each write it applies; the first report of a
    /// revision is the reference, and every later one (another member, or
    /// a replay after a crash) must be identical.
    func observed(_ member: UInt64, _ revision: Int64, _ events: [Mvccpb_Event]) {
        if node(id: member)?.corrupted == true { return }
        let converted = events.map { Self.event($0, prevKV: false) }
        if let existing = appliedEvents[revision] {
            if existing != converted {
                violation("member \(String(member, radix: 16)) applied different events at revision \(revision): \(converted) vs \(existing)")
            }
        } else {
            appliedEvents[revision] = converted
        }
    }

    /// An MVCC event as the checkers see it (a delete carries only the key
    /// and its revision); `prevKV`: keep the event's prev_kv when it has one.
    static func event(_ event: Mvccpb_Event, prevKV: Bool) -> KVEvent {
        let prev = prevKV && event.hasPrevKv ? record(event.prevKv) : nil
        if event.type == .delete {
            let kv = KVRecord(key: KVBytes(Array(event.kv.key)), value: KVBytes([]), modRevision: event.kv.modRevision)
            return KVEvent(type: .delete, kv: kv, prevKV: prev)
        }
        return KVEvent(type: .put, kv: record(event.kv), prevKV: prev)
    }

    // MARK: - Streams

    func startWatchers() {
        let count = Int(random.int(1...3))
        for w in 0..<count {
            schedule(after: random.int(100_000...3_000_000)) { [self] in openWatcher(w) }
        }
    }

    /// A new logical watcher: a key, a prefix or everything; maybe with
    /// prev_kv, a filter, or a start in the past.
    func openWatcher(_ w: Int) {
        guard !clientsStopped, let node = pickNode(), let member = node.member else { return }
        let range: KVRange
        switch random.next() % 4 {
        case 0: range = .single(KVBytes(keys[random.index(keys.count)]))
        case 1: range = .prefix("lease/")
        default: range = .prefix("k")
        }
        let current = member.header().revision
        let start = random.chance(0.5) ? 0 : max(1, current - random.int(0...50))
        let request = RecordedWatchRequest(range: range, startRevision: start, prevKV: random.chance(0.5),
                                           filterNoPut: random.chance(0.1), filterNoDelete: random.chance(0.1))
        open(request, on: node, member, logical: w, resumes: nil)
    }

    func open(_ request: RecordedWatchRequest, on node: SimNode, _ member: Member, logical: Int, resumes: String?) {
        let index = watchStreams.count
        let id = "w\(logical).\(index)"
        let header = member.header().revision
        var stream = SimWatchStream(id: id, request: request, resumes: resumes, node: node.index, generation: node.generation,
                                    deliveredThrough: request.startRevision > 0 ? request.startRevision - 1 : header)
        stream.responses.append(.created(header: header))
        watchStreams.append(stream)
        watchLogical[index] = logical
        var filters: WatchFilters = []
        if request.filterNoPut { filters.insert(.noPut) }
        if request.filterNoDelete { filters.insert(.noDelete) }
        let handle = member.watchable.watch(
            watchID: Int64(index), key: Data(request.range.key.bytes), rangeEnd: Data(request.range.rangeEnd.bytes),
            startRevision: request.startRevision, prevKV: request.prevKV, filters: filters,
            sink: SimWatchSink(world: self, stream: index))
        watchStreams[index].handle = handle
        report.watchStreams += 1
        log("watch \(id) on \(node.name) from \(request.startRevision) (\(request.range))")
    }

    func delivered(_ delivery: WatchDelivery, to index: Int) {
        guard watchStreams[index].active else { return }
        if delivery.compactRevision != 0 {
            watchStreams[index].responses.append(.compacted(delivery.compactRevision, header: delivery.revision))
            watchStreams[index].active = false
            // The client starts over from now (etcd's clients get ErrCompacted).
            let logical = watchLogical[index]!
            schedule(after: 100_000) { [self] in openWatcher(logical) }
            return
        }
        let events = delivery.events.map { Self.event($0, prevKV: true) }
        let response = events.isEmpty ? RecordedWatchResponse.progress(delivery.revision)
            : RecordedWatchResponse.events(events, header: delivery.revision)
        watchStreams[index].responses.append(response)
        watchStreams[index].deliveredThrough = max(watchStreams[index].deliveredThrough, delivery.revision)
    }

    /// On each tick of a member: catch up its unsynced watchers (what the
    /// server's watch-sync thread does), now and then ask for progress, and
    /// now and then move a stream to another member.
    func serviceWatchers(on node: SimNode, _ member: Member) {
        member.watchable.syncUnsynced()
        member.watchable.retryVictims()
        for index in watchStreams.indices where watchStreams[index].active && watchStreams[index].node == node.index {
            guard let handle = watchStreams[index].handle else { continue }
            if clientsStopped || random.chance(0.05) { member.watchable.requestProgress(handle) }
            if !clientsStopped, nodes.count > 1, random.chance(0.01) {
                member.watchable.cancel(handle)
                endStream(index, reason: "moves")
            }
        }
    }

    /// The stream's member is gone (or the client moves): resume the
    /// logical watcher elsewhere from the revision after its last delivery.
    func endStream(_ index: Int, reason: String) {
        watchStreams[index].active = false
        let logical = watchLogical[index]!
        var request = watchStreams[index].request
        request.startRevision = watchStreams[index].deliveredThrough + 1
        let previous = watchStreams[index].id
        log("watch \(previous) \(reason); resuming from \(request.startRevision)")
        schedule(after: random.int(10_000...500_000)) { [self] in
            guard let node = pickNode(), let member = node.member else {
                // Nobody is up: try again later (the heal restarts everyone).
                schedule(after: 200_000) { [self] in resume(request, logical: logical, after: previous) }
                return
            }
            open(request, on: node, member, logical: logical, resumes: previous)
        }
    }

    private func resume(_ request: RecordedWatchRequest, logical: Int, after previous: String) {
        guard let node = pickNode(), let member = node.member else {
            schedule(after: 200_000) { [self] in resume(request, logical: logical, after: previous) }
            return
        }
        open(request, on: node, member, logical: logical, resumes: previous)
    }

    func streamsOfCrashed(_ node: SimNode) {
        for index in watchStreams.indices where watchStreams[index].active && watchStreams[index].node == node.index {
            endStream(index, reason: "lost its member")
        }
    }

    /// After convergence: every live stream must have been given everything
    /// up to the final revision; then every stream is checked.
    func checkWatches() {
        let finalRevision = liveNodes.filter { !$0.corrupted }.compactMap { $0.member?.header().revision }.max() ?? 0
        let deadline = now + 5_000_000
        run(until: deadline) {
            watchStreams.indices.allSatisfy { !watchStreams[$0].active || watchStreams[$0].deliveredThrough >= finalRevision }
        }
        for stream in watchStreams where stream.active && stream.deliveredThrough < finalRevision {
            violation("watch \(stream.id) stalled at revision \(stream.deliveredThrough) of \(finalRevision)")
        }
        let revisions = appliedEvents.keys.sorted().map { CommittedRevision(revision: $0, events: appliedEvents[$0]!) }
        let history: CommittedHistory
        do {
            history = try CommittedHistory(revisions: revisions)
        } catch {
            violation("the members' applied writes do not form one history: \(error)")
            return
        }
        let recorded = watchStreams.map {
            RecordedWatch(id: $0.id, request: $0.request, responses: $0.responses, resumes: $0.resumes)
        }
        report.watchEvents = watchStreams.reduce(0) { $0 + $1.responses.reduce(0) { $0 + $1.events.count } }
        let problems = WatchChecker(history: history).check(recorded).filter { problem in
            // As etcd: a put or delete at exactly a compaction revision has
            // no prev_kv (the record before it is compacted away).
            !(problem.kind == .wrongPrevKV && problem.message.contains("is absent")
                && problem.revision.map { compactedAt.contains($0) } == true)
        }
        for problem in problems.prefix(5) {
            violation("watch: \(problem)")
        }
    }
}
