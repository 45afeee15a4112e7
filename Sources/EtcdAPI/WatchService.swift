import Auth
import EtcdGRPC
import EtcdProto
import EtcdServer
import Foundation
import GRPCCore
import GRPCWire
import Locks
import MVCC
import NIOCore
import SwiftProtobuf

/// etcdserverpb.Watch: one bidirectional stream carries many watchers,
/// created, canceled and asked for progress in-band.
struct WatchService {
    let member: Member

    /// The stream, for a caller sending `token` (nil: none) or presenting
    /// a client certificate named `commonName`; responses go to `output`.
    func watch(
        request: RPCAsyncSequence<Etcdserverpb_WatchRequest, any Error>,
        output: any WatchOutput,
        token: String?,
        commonName: String? = nil
    ) async throws {
        let stream = WatchStream(member: member, output: output, token: token, commonName: commonName)
        defer { stream.close() }
        // gRPC reports a cancelled call (the client went away, the server
        // shuts down) through this handler, not by cancelling the task.
        try await withRPCCancellationHandler {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await stream.untilClosed() }
                group.addTask { await stream.progressLoop() }
                for try await message in request {
                    stream.handle(message)
                }
                // The client closed its side: etcd keeps sending until the
                // call itself ends (then the stream is closed).
                try await group.next()
                group.cancelAll()
            }
        } onCancelRPC: {
            stream.close()
        }
    }
}

/// Where a watch stream's responses go (the gRPC call).
protocol WatchOutput: Sendable {
    /// Runs `body` on the output's event loop in a later turn, after work
    /// scheduled before it, flushing what it writes.
    func schedule(_ body: @escaping @Sendable () -> Void)
    /// Sends framed gRPC messages (from the event loop); `done` runs on the
    /// event loop once they have left for the socket (flow control
    /// included), with the error if they cannot.
    func send(_ frames: ByteBuffer, done: @escaping @Sendable ((any Error)?) -> Void)
}

/// A watch stream's output on a GRPCWire call.
struct WireWatchOutput: WatchOutput {
    let call: WireCall

    // Both go through the connection's queue for a later turn, which ends
    // with a flush: a drain run inline (a write completes inside a flush, an
    // offer may come while the connection reads) could leave its bytes
    // waiting for some later flush.
    func schedule(_ body: @escaping @Sendable () -> Void) {
        call.onEventLoopLater(body)
    }

    func send(_ frames: ByteBuffer, done: @escaping @Sendable ((any Error)?) -> Void) {
        let call = call
        call.send(frames).whenComplete { result in
            call.onEventLoopLater {
                if case .failure(let error) = result { done(error) } else { done(nil) }
            }
        }
    }
}

/// One client watch stream: the watchers it created and its outgoing
/// queue. The store offers deliveries without blocking; the queue holds at
/// most `maxQueuedDeliveries` of them (a full queue refuses, and the store
/// parks the watcher as a victim until there is room). Control responses
/// (created, canceled) share the queue so their order with events is kept.
///
/// The notify path: whoever queues into an idle stream (the raft apply
/// thread, for live events) schedules a drain on the call's event loop; the
/// drain takes the whole queue, encodes it into one buffer of gRPC messages
/// (one HTTP/2 DATA write) and sends it; when that has left for the socket,
/// the next drain takes whatever queued meanwhile. No task, timer or batch
/// interval sits in between. Each response's bytes are its header's (one
/// per revision per drain), its watch id's (one per watcher) and the
/// events' (`SharedEvents`: one per revision for all streams), joined.
final class WatchStream: WatchSink, @unchecked Sendable {
    static let maxQueuedDeliveries = 256

    enum Outgoing {
        case delivery(WatchDelivery)
        case control(Etcdserverpb_WatchResponse)
    }

    struct Watcher {
        /// Nil only while the store registers it.
        var handle: WatcherHandle?
        var progressNotify: Bool
        var fragment: Bool
        /// Whether nothing was sent to it since the last progress tick.
        var idle = true
        /// A `WatchResponse` holding only its watch id, serialised.
        var encodedID: [UInt8]
    }

    struct State {
        var queue: [Outgoing] = []
        var queuedDeliveries = 0
        /// A drain is scheduled, or its bytes have not left yet: whoever
        /// queues meanwhile leaves them to the next drain.
        var draining = false
        /// The task waiting in `untilClosed`.
        var waiter: CheckedContinuation<Void, any Error>?
        /// Why the output failed (the call ended).
        var failure: (any Error)?
        var closed = false
        var watchers: [Int64: Watcher] = [:]
        var nextWatchID: Int64 = 0
        /// A progress request made while some watcher was behind: answered
        /// once all are synced (never with a revision not yet delivered).
        var deferredProgress = false
    }

    let member: Member
    let output: any WatchOutput
    /// The caller's token: each create is checked as the user it names
    /// (else as its client certificate's Common Name).
    let token: String?
    let commonName: String?
    private let state = Mutex(State())

    init(member: Member, output: any WatchOutput, token: String? = nil, commonName: String? = nil) {
        self.commonName = commonName
        self.member = member
        self.output = output
        self.token = token
    }

    // MARK: - WatchSink

    func offer(_ delivery: WatchDelivery) -> Bool {
        let (accepted, schedule) = state.withLock { state -> (Bool, Bool) in
            if state.closed { return (true, false) }
            if state.queuedDeliveries >= Self.maxQueuedDeliveries { return (false, false) }
            state.queue.append(.delivery(delivery))
            state.queuedDeliveries += 1
            if !delivery.events.isEmpty { state.watchers[delivery.watchID]?.idle = false }
            if delivery.compactRevision != 0 { state.watchers[delivery.watchID] = nil }
            return (true, Self.startDrain(&state))
        }
        if schedule { scheduleDrain() }
        return accepted
    }

    private func enqueue(_ response: Etcdserverpb_WatchResponse) {
        let schedule = state.withLock { state -> Bool in
            if state.closed { return false }
            state.queue.append(.control(response))
            return Self.startDrain(&state)
        }
        if schedule { scheduleDrain() }
    }

    /// Whether the caller, having queued something, must schedule a drain.
    private static func startDrain(_ state: inout State) -> Bool {
        if state.draining { return false }
        state.draining = true
        return true
    }

    // MARK: - Requests

    func handle(_ message: Etcdserverpb_WatchRequest) {
        switch message.requestUnion {
        case .createRequest(let create)?: self.create(create)
        case .cancelRequest(let cancel)?: self.cancel(cancel.watchID)
        case .progressRequest?: requestProgress()
        case nil: break
        }
    }

    private func create(_ create: Etcdserverpb_WatchCreateRequest) {
        var key = create.key
        if key.isEmpty { key = Data([0]) }  // the smallest key
        let rangeEnd = create.rangeEnd
        // The revision the watchable store has been told about: "created"
        // announces it and a watch from now starts after it.
        let currentRevision = member.watchable.currentRevision
        var response = Etcdserverpb_WatchResponse()
        response.header = member.header(revision: currentRevision)
        response.created = true

        // Read permission on the whole watched range (etcd checks a from-key
        // watch as its first key only; we check all it would see). A refusal
        // is a created-and-canceled answer with etcd's reason.
        if token != nil || member.isAuthEnabled {
            do {
                try member.authorizeWatch(key: key, rangeEnd: rangeEnd, as: member.authInfo(token: token, commonName: commonName))
            } catch {
                response.watchID = -1
                response.canceled = true
                response.cancelReason = error.message
                enqueue(response)
                return
            }
        }
        let rangeIsEmpty = WatchableStore.isEmptyRange(key: key, rangeEnd: rangeEnd)
        // Pick the id and enqueue "created" before the store can deliver anything.
        let chosen: Result<Int64, WatchCreateError> = state.withLock { state in
            if rangeIsEmpty { return .failure(.emptyRange) }
            if state.watchers.count >= member.config.maxWatchersPerStream { return .failure(.tooManyWatchers) }
            var id = create.watchID
            if id == 0 {
                while state.watchers[state.nextWatchID] != nil { state.nextWatchID += 1 }
                id = state.nextWatchID
                state.nextWatchID += 1
            } else if state.watchers[id] != nil {
                return .failure(.duplicateID)
            }
            response.watchID = id
            state.queue.append(.control(response))
            state.watchers[id] = Watcher(handle: nil, progressNotify: create.progressNotify, fragment: create.fragment,
                                         encodedID: Self.encodedID(id))
            return .success(id)
        }
        switch chosen {
        case .failure(let error):
            response.watchID = -1
            response.canceled = true
            response.cancelReason = error.rawValue
            enqueue(response)
        case .success(let id):
            if state.withLock({ Self.startDrain(&$0) }) { scheduleDrain() }
            // Registered with the lock released: the store may offer at once.
            let handle = member.watchable.watch(
                watchID: id, key: key, rangeEnd: rangeEnd,
                startRevision: create.startRevision <= 0 ? currentRevision + 1 : create.startRevision,
                prevKV: create.prevKv, filters: WatchFilters(create.filters), sink: self)
            state.withLock { state in
                // A compaction notice may already have removed it.
                state.watchers[id]?.handle = handle
            }
        }
    }

    private func cancel(_ id: Int64) {
        guard let watcher = state.withLock({ $0.watchers.removeValue(forKey: id) }) else { return }
        if let handle = watcher.handle { _ = member.watchable.cancel(handle) }
        var response = Etcdserverpb_WatchResponse()
        response.header = member.header()
        response.watchID = id
        response.canceled = true
        enqueue(response)
    }

    private func requestProgress() {
        let alreadyDeferred = state.withLock { state in
            defer { state.deferredProgress = true }
            return state.deferredProgress
        }
        if alreadyDeferred { return }
        if member.watchable.requestProgressAll(sink: self) {
            state.withLock { $0.deferredProgress = false }
        }
    }

    /// Ends the stream: every watcher leaves the store.
    func close() {
        let (watchers, waiter) = state.withLock { state in
            state.closed = true
            defer { state.watchers.removeAll(); state.queue.removeAll(); state.waiter = nil }
            return (Array(state.watchers.values), state.waiter)
        }
        for handle in watchers.compactMap(\.handle) { _ = member.watchable.cancel(handle) }
        waiter?.resume()
    }

    /// Returns once the stream is closed or the task cancelled; throws the
    /// output's error if sending failed (the call ended).
    func untilClosed() async throws {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                // Checked under the lock the cancellation handler takes, so a
                // cancellation either is seen here or finds the waiter.
                let ready = state.withLock { state -> Result<Void, any Error>? in
                    if let failure = state.failure { return .failure(failure) }
                    if state.closed || Task.isCancelled { return .success(()) }
                    state.waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(with: ready) }
            }
        } onCancel: {
            let waiter = state.withLock { state in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }
    }

    // MARK: - Sending

    private func scheduleDrain() {
        output.schedule { [self] in drain() }
    }

    /// On the event loop: sends everything queued as one write; once it has
    /// left, drains again (or goes idle when nothing queued meanwhile).
    private func drain() {
        let batch = state.withLock { state -> [(Outgoing, Watcher?)]? in
            if state.closed || state.failure != nil || state.queue.isEmpty {
                state.draining = false
                return nil
            }
            let queue = state.queue
            state.queue = []
            state.queuedDeliveries = 0
            return queue.map { item in
                if case .delivery(let delivery) = item { return (item, state.watchers[delivery.watchID]) }
                return (item, nil)
            }
        }
        guard let batch else { return }
        let frames: ByteBuffer
        do {
            frames = try encode(batch)
        } catch {
            return failed(error)
        }
        output.send(frames) { [self] error in
            if let error { failed(error) } else { drain() }
        }
    }

    private func failed(_ error: any Error) {
        let waiter = state.withLock { state in
            state.failure = error
            state.draining = false
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(throwing: error)
    }

    /// The batch's responses, each a gRPC message, in one buffer.
    private func encode(_ batch: [(Outgoing, Watcher?)]) throws -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: 256)
        // One header per revision in the batch (the term read once).
        var header = member.header(revision: 0)
        var encodedHeader: (revision: Int64, bytes: [UInt8])?
        for (item, watcher) in batch {
            switch item {
            case .control(let response):
                var framed = try response.framed()
                buffer.writeBuffer(&framed)
            case .delivery(let delivery):
                let fragment = watcher?.fragment ?? false
                if let shared = delivery.shared, delivery.compactRevision == 0, !(fragment && shared.events.count > 1) {
                    if encodedHeader?.revision != delivery.revision {
                        header.revision = delivery.revision
                        var response = Etcdserverpb_WatchResponse()
                        response.header = header
                        encodedHeader = (delivery.revision, try response.serializedBytes())
                    }
                    let id = watcher?.encodedID ?? Self.encodedID(delivery.watchID)
                    let events = shared.encodedResponse
                    let head = encodedHeader!.bytes
                    buffer.writeInteger(UInt8(0))
                    buffer.writeInteger(UInt32(head.count + id.count + events.count))
                    buffer.writeBytes(head)
                    buffer.writeBytes(id)
                    buffer.writeBytes(events)
                } else {
                    header.revision = delivery.revision
                    for response in responses(for: delivery, header: header, fragment: fragment) {
                        var framed = try response.framed()
                        buffer.writeBuffer(&framed)
                    }
                }
            }
        }
        return buffer
    }

    /// A `WatchResponse` holding only `id`, serialised (empty for id 0,
    /// which protobuf leaves out).
    static func encodedID(_ id: Int64) -> [UInt8] {
        var response = Etcdserverpb_WatchResponse()
        response.watchID = id
        return (try? response.serializedBytes()) ?? []
    }

    /// A delivery's response, or its fragments when the watcher asked for them.
    private func responses(for delivery: WatchDelivery, header: Etcdserverpb_ResponseHeader,
                           fragment: Bool) -> [Etcdserverpb_WatchResponse] {
        var response = Etcdserverpb_WatchResponse()
        response.header = header
        response.watchID = delivery.watchID
        response.events = delivery.events
        if delivery.compactRevision != 0 {
            response.compactRevision = delivery.compactRevision
            response.canceled = true
        }
        if fragment && response.events.count > 1 {
            return Self.fragments(of: response, maxBytes: member.config.maxRequestBytes)
        }
        return [response]
    }

    /// Splits a response whose events exceed `maxBytes` into several, each
    /// under the limit (or one event alone), all but the last marked
    /// `fragment` — etcd's fragmentation, for watchers that asked for it.
    static func fragments(of response: Etcdserverpb_WatchResponse, maxBytes: Int) -> [Etcdserverpb_WatchResponse] {
        let total = (try? response.serializedBytes() as [UInt8])?.count ?? 0
        if total < maxBytes || response.events.count < 2 { return [response] }
        var empty = response
        empty.events = []
        let overhead = ((try? empty.serializedBytes() as [UInt8])?.count ?? 0) + 8
        var pieces: [Etcdserverpb_WatchResponse] = []
        var current = empty
        var size = overhead
        for event in response.events {
            let eventSize = ((try? event.serializedBytes() as [UInt8])?.count ?? 0) + 6
            if !current.events.isEmpty && size + eventSize >= maxBytes {
                current.fragment = true
                pieces.append(current)
                current = empty
                size = overhead
            }
            current.events.append(event)
            size += eventSize
        }
        pieces.append(current)
        return pieces
    }

    /// Progress notifications: every `--experimental-watch-progress-notify-
    /// interval` for idle watchers that asked for them, and (each 100 ms) a
    /// deferred stream-wide progress request once every watcher is synced.
    func progressLoop() async {
        let interval = Duration.milliseconds(member.config.watchProgressNotifyIntervalMilliseconds)
        var sinceNotify = Duration.zero
        let step = Duration.milliseconds(100)
        while !Task.isCancelled && !state.withLock({ $0.closed }) {
            try? await Task.sleep(for: step)
            if state.withLock({ $0.deferredProgress }) && member.watchable.requestProgressAll(sink: self) {
                state.withLock { $0.deferredProgress = false }
            }
            sinceNotify += step
            guard sinceNotify >= interval else { continue }
            sinceNotify = .zero
            let due = state.withLock { state -> [WatcherHandle] in
                var due: [WatcherHandle] = []
                for (id, watcher) in state.watchers where watcher.progressNotify {
                    if watcher.idle, let handle = watcher.handle { due.append(handle) }
                    state.watchers[id]?.idle = true
                }
                return due
            }
            for handle in due { _ = member.watchable.requestProgress(handle) }
        }
    }
}

/// Why a watcher could not be created, in etcd's words.
enum WatchCreateError: String, Error {
    case emptyRange = "mvcc: watcher range is empty"
    case duplicateID = "mvcc: duplicate watch ID provided on the WatchStream"
    case tooManyWatchers = "etcdserver: too many watchers on this stream"
}
