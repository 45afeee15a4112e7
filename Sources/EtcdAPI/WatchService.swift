import Auth
import EtcdGRPC
import EtcdProto
import EtcdServer
import Foundation
import GRPCCore
import Locks
import MVCC
import SwiftProtobuf

/// etcdserverpb.Watch: one bidirectional stream carries many watchers,
/// created, canceled and asked for progress in-band.
struct WatchService: Etcdserverpb_Watch.SimpleServiceProtocol {
    let member: Member

    func watch(
        request: RPCAsyncSequence<Etcdserverpb_WatchRequest, any Error>,
        response: RPCWriter<Etcdserverpb_WatchResponse>,
        context: ServerContext
    ) async throws {
        try await watch(request: request, response: response, context: context, token: nil)
    }

    /// The stream, for a caller sending `token` (nil: none) or presenting
    /// a client certificate named `commonName`.
    func watch(
        request: RPCAsyncSequence<Etcdserverpb_WatchRequest, any Error>,
        response: RPCWriter<Etcdserverpb_WatchResponse>,
        context: ServerContext,
        token: String?,
        commonName: String? = nil
    ) async throws {
        let stream = WatchStream(member: member, token: token, commonName: commonName)
        defer { stream.close() }
        // gRPC reports a cancelled call (the client went away, the server
        // shuts down) through this handler, not by cancelling the task.
        try await withRPCCancellationHandler {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await stream.sendLoop(response) }
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

/// One client watch stream: the watchers it created and its outgoing
/// queue. The store offers deliveries without blocking; the queue holds at
/// most `maxQueuedDeliveries` of them (a full queue refuses, and the store
/// parks the watcher as a victim until there is room). Control responses
/// (created, canceled) share the queue so their order with events is kept.
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
    }

    struct State {
        var queue: [Outgoing] = []
        var queuedDeliveries = 0
        var waiter: CheckedContinuation<Void, Never>?
        var closed = false
        var watchers: [Int64: Watcher] = [:]
        var nextWatchID: Int64 = 0
        /// A progress request made while some watcher was behind: answered
        /// once all are synced (never with a revision not yet delivered).
        var deferredProgress = false
    }

    let member: Member
    /// The caller's token: each create is checked as the user it names
    /// (else as its client certificate's Common Name).
    let token: String?
    let commonName: String?
    private let state = Mutex(State())

    init(member: Member, token: String? = nil, commonName: String? = nil) {
        self.commonName = commonName
        self.member = member
        self.token = token
    }

    // MARK: - WatchSink

    func offer(_ delivery: WatchDelivery) -> Bool {
        let (accepted, waiter) = state.withLock { state -> (Bool, CheckedContinuation<Void, Never>?) in
            if state.closed { return (true, nil) }
            if state.queuedDeliveries >= Self.maxQueuedDeliveries { return (false, nil) }
            state.queue.append(.delivery(delivery))
            state.queuedDeliveries += 1
            if !delivery.events.isEmpty { state.watchers[delivery.watchID]?.idle = false }
            if delivery.compactRevision != 0 { state.watchers[delivery.watchID] = nil }
            defer { state.waiter = nil }
            return (true, state.waiter)
        }
        waiter?.resume()
        return accepted
    }

    private func enqueue(_ response: Etcdserverpb_WatchResponse) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.closed { return nil }
            state.queue.append(.control(response))
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
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
            state.watchers[id] = Watcher(handle: nil, progressNotify: create.progressNotify, fragment: create.fragment)
            return .success(id)
        }
        switch chosen {
        case .failure(let error):
            response.watchID = -1
            response.canceled = true
            response.cancelReason = error.rawValue
            enqueue(response)
        case .success(let id):
            wake()
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

    private func wake() {
        let waiter = state.withLock { state in
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    // MARK: - Sending

    /// Writes queued responses in order until the call ends.
    func sendLoop(_ writer: RPCWriter<Etcdserverpb_WatchResponse>) async throws {
        while !Task.isCancelled {
            let batch = await nextBatch()
            if batch.isEmpty { if state.withLock({ $0.closed }) { return } else { continue } }
            // One write for the whole batch: grpc-swift then hops to the
            // event loop and flushes once, not once per response.
            var responses: [Etcdserverpb_WatchResponse] = []
            responses.reserveCapacity(batch.count)
            for item in batch {
                switch item {
                case .control(let response): responses.append(response)
                case .delivery(let delivery): append(delivery, to: &responses)
                }
            }
            try await writer.write(contentsOf: responses)
        }
    }

    private func nextBatch() async -> [Outgoing] {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                // Checked under the lock that wake() takes, so a cancellation
                // either is seen here or finds the waiter to resume.
                let ready = state.withLock { state -> Bool in
                    if !state.queue.isEmpty || state.closed || Task.isCancelled { return true }
                    state.waiter = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
            return state.withLock { state in
                defer { state.queue.removeAll(keepingCapacity: true); state.queuedDeliveries = 0 }
                return state.queue
            }
        } onCancel: {
            wake()
        }
    }

    private func append(_ delivery: WatchDelivery, to responses: inout [Etcdserverpb_WatchResponse]) {
        var response = Etcdserverpb_WatchResponse()
        response.header = member.header(revision: delivery.revision)
        response.watchID = delivery.watchID
        response.events = delivery.events
        if delivery.compactRevision != 0 {
            response.compactRevision = delivery.compactRevision
            response.canceled = true
        }
        let fragment = state.withLock { $0.watchers[delivery.watchID]?.fragment ?? false }
        if fragment && response.events.count > 1 {
            responses += Self.fragments(of: response, maxBytes: member.config.maxRequestBytes)
        } else {
            responses.append(response)
        }
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
