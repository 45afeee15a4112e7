import EtcdProto
import Foundation
import Locks

public typealias Event = Mvccpb_Event

/// What to watch and how.
public struct WatchOptions: Sendable {
    public var range: KeyRange = .single
    /// The first revision to report (0: changes after now).
    public var startRevision: Int64 = 0
    /// Include each event's previous key-value.
    public var prevKV = false
    /// Ask the server for periodic progress notifications.
    public var progressNotify = false
    /// Do not report puts.
    public var noPut = false
    /// Do not report deletes.
    public var noDelete = false
    /// Also deliver the server's "created" response.
    public var createdNotify = false

    public init(range: KeyRange = .single, startRevision: Int64 = 0, prevKV: Bool = false, progressNotify: Bool = false,
                noPut: Bool = false, noDelete: Bool = false, createdNotify: Bool = false) {
        self.range = range
        self.startRevision = startRevision
        self.prevKV = prevKV
        self.progressNotify = progressNotify
        self.noPut = noPut
        self.noDelete = noDelete
        self.createdNotify = createdNotify
    }
}

/// One batch of a watch: events at one revision range, or a progress notification.
public struct WatchResponse: Sendable {
    public var header: ResponseHeader
    public var events: [Event]
    public var created: Bool
    public var canceled: Bool
    public var compactRevision: Int64
    public var cancelReason: String

    init(_ r: Etcdserverpb_WatchResponse) {
        header = r.header
        events = r.events
        created = r.created
        canceled = r.canceled
        compactRevision = r.compactRevision
        cancelReason = r.cancelReason
    }

    /// A progress notification: no events, only the current revision.
    public var isProgressNotify: Bool {
        events.isEmpty && !created && !canceled && compactRevision == 0 && header.revision != 0
    }
}

/// A running watch: an `AsyncSequence` of ``WatchResponse``s.
///
/// The watch survives connection loss and server restarts: it reconnects (to
/// the next endpoint if needed) and resumes from the last revision it
/// delivered plus one, so no event is lost or repeated. It ends by throwing
/// ``EtcdClientError/watchCompacted(compactRevision:)`` when the revision it
/// needs is compacted, or ``EtcdClientError/watchCanceled(reason:)`` when the
/// server cancels it. Cancel it with ``cancel()`` or by ending the iteration.
public final class EtcdWatch: AsyncSequence, Sendable {
    public typealias Element = WatchResponse

    /// The watch's responses in order; taking one makes room for the next.
    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncThrowingStream<WatchResponse, any Error>.Iterator
        let taken: TakenSignal

        public mutating func next() async throws -> WatchResponse? {
            let response = try await base.next()
            taken.signal()
            return response
        }
    }

    private let stream: AsyncThrowingStream<WatchResponse, any Error>
    private let control: Control
    private let task: Mutex<Task<Void, Never>?> = Mutex(nil)

    final class Control: Sendable {
        struct State {
            var outgoing: AsyncStream<Etcdserverpb_WatchRequest>.Continuation?
            var nextRevision: Int64
            var created: CheckedContinuation<Void, any Error>?
            var createdDone = false
            var createdError: (any Error)?
        }
        let state: Mutex<State>
        /// Signalled by the iterator after each response it takes.
        let taken = TakenSignal()
        init(startRevision: Int64) { state = Mutex(State(nextRevision: startRevision)) }

        func signalCreated(_ error: (any Error)?) {
            let waiter = state.withLock { s -> CheckedContinuation<Void, any Error>? in
                if s.createdDone { return nil }
                s.createdDone = true
                s.createdError = error
                defer { s.created = nil }
                return s.created
            }
            if let error { waiter?.resume(throwing: error) } else { waiter?.resume() }
        }

        func waitCreated() async throws {
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                    let done = state.withLock { s -> (Bool, (any Error)?) in
                        if s.createdDone { return (true, s.createdError) }
                        s.created = c
                        return (false, nil)
                    }
                    if done.0 { if let e = done.1 { c.resume(throwing: e) } else { c.resume() } }
                }
            } onCancel: {
                signalCreated(CancellationError())
            }
        }
    }

    init(client: EtcdClient, key: Data, options: WatchOptions) {
        // Bounded: while it is full the watch stops reading its stream, and
        // flow control makes the server wait (no event is dropped).
        let (stream, continuation) = AsyncThrowingStream<WatchResponse, any Error>.makeStream(bufferingPolicy: .bufferingOldest(Self.bufferedResponses))
        self.stream = stream
        let control = Control(startRevision: options.startRevision)
        self.control = control
        let task = Task {
            await Self.run(client: client, key: key, options: options, control: control, continuation: continuation)
        }
        self.task.withLock { $0 = task }
        continuation.onTermination = { _ in
            task.cancel()
            control.taken.signal()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(base: stream.makeAsyncIterator(), taken: control.taken) }

    /// Responses held for a consumer that is behind.
    static let bufferedResponses = 64

    /// The revision the watch resumes from after a reconnect.
    public var nextRevision: Int64 { control.state.withLock { $0.nextRevision } }

    /// Asks the server for a progress notification (delivered as a ``WatchResponse`` with ``WatchResponse/isProgressNotify``).
    public func requestProgress() {
        var request = Etcdserverpb_WatchRequest()
        request.progressRequest = Etcdserverpb_WatchProgressRequest()
        _ = control.state.withLock { $0.outgoing }?.yield(request)
    }

    /// Stops the watch; the sequence ends.
    public func cancel() {
        task.withLock { $0 }?.cancel()
    }

    private static func run(client: EtcdClient, key: Data, options: WatchOptions, control: Control,
                            continuation: AsyncThrowingStream<WatchResponse, any Error>.Continuation) async {
        let clock = ContinuousClock()
        let start = clock.now
        var pause = Duration.milliseconds(50)
        while !Task.isCancelled {
            let index = client.currentIndex
            let connection = client.connections[index]
            // Requests after the create (progress requests), bounded: one
            // waiting is as good as many.
            let (outgoing, outgoingContinuation) = AsyncStream<Etcdserverpb_WatchRequest>.makeStream(bufferingPolicy: .bufferingOldest(16))
            var create = Etcdserverpb_WatchCreateRequest()
            (create.key, create.rangeEnd) = options.range.resolve(key)
            create.startRevision = control.state.withLock { $0.nextRevision }
            create.prevKv = options.prevKV
            create.progressNotify = options.progressNotify
            if options.noPut { create.filters.append(.noput) }
            if options.noDelete { create.filters.append(.nodelete) }
            var request = Etcdserverpb_WatchRequest()
            request.createRequest = create
            control.state.withLock { $0.outgoing = outgoingContinuation }
            do {
                let token = try await client.token()
                let metadata: [(name: String, value: String)] = client.options.requireLeader ? [("hasleader", "true")] : []
                let stream = try await connection.stream("/etcdserverpb.Watch/Watch", token: token, metadata: metadata,
                                                         of: Etcdserverpb_WatchResponse.self)
                defer { stream.cancel() }
                try await stream.send(request)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for await request in outgoing { try await stream.send(request) }
                    }
                    try await stream.forEach { message in
                        try await handle(message, options: options, control: control, continuation: continuation)
                    }
                    group.cancelAll()
                }
                outgoingContinuation.finish()
                // The server ended the stream: reconnect.
            } catch {
                outgoingContinuation.finish()
                if Task.isCancelled { break }
                let mapped = EtcdClientError(error)
                switch mapped {
                case .watchCompacted, .watchCanceled, .canceled, .closed:
                    control.signalCreated(mapped)
                    continuation.finish(throwing: mapped)
                    return
                case .invalidAuthToken:
                    client.clearToken()
                    continue
                default:
                    let created = control.state.withLock { $0.createdDone }
                    let retryable = EtcdClient.neverSent(error) || EtcdClient.connectionLost(error) || mapped.isEndpointUnavailable
                        || mapped == .deadlineExceeded
                    if !retryable || (!created && clock.now - start >= client.options.dialTimeout) {
                        let failure: EtcdClientError = retryable ? .deadlineExceeded : mapped
                        control.signalCreated(failure)
                        continuation.finish(throwing: failure)
                        return
                    }
                    client.advance(from: index)
                }
            }
            try? await Task.sleep(for: pause)
            pause = Swift.min(pause * 2, .seconds(1))
        }
        control.signalCreated(EtcdClientError.canceled)
        continuation.finish()
    }

    private static func handle(_ message: Etcdserverpb_WatchResponse, options: WatchOptions, control: Control,
                               continuation: AsyncThrowingStream<WatchResponse, any Error>.Continuation) async throws {
        if message.canceled || message.compactRevision != 0 {
            if message.compactRevision != 0 { throw EtcdClientError.watchCompacted(compactRevision: message.compactRevision) }
            throw EtcdClientError.watchCanceled(reason: message.cancelReason)
        }
        let response = WatchResponse(message)
        if message.created {
            control.state.withLock { s in
                if s.nextRevision == 0 { s.nextRevision = message.header.revision + 1 }
            }
            control.signalCreated(nil)
            if options.createdNotify { await continuation.yieldWaiting(response, taken: control.taken) }
            return
        }
        control.state.withLock { s in
            if let last = message.events.last {
                s.nextRevision = last.kv.modRevision + 1
            } else if message.header.revision + 1 > s.nextRevision {
                s.nextRevision = message.header.revision + 1
            }
        }
        await continuation.yieldWaiting(response, taken: control.taken)
    }
}

extension EtcdClient {
    /// Starts watching `key` (or a range) and returns once the server has created the watch.
    ///
    /// ```swift
    /// let watch = try await client.watch("config/", options: WatchOptions(range: .prefix))
    /// for try await response in watch {
    ///     for event in response.events { print(event.type, event.kv.key) }
    /// }
    /// ```
    /// - Throws: ``EtcdClientError/watchCompacted(compactRevision:)`` when `startRevision` is compacted,
    ///   or ``EtcdClientError/deadlineExceeded`` when no endpoint answers within the dial timeout.
    public func watch(_ key: some EtcdBytes, options: WatchOptions = WatchOptions()) async throws -> EtcdWatch {
        let watch = EtcdWatch(client: self, key: key.etcdBytes, options: options)
        do {
            try await watch.waitCreated()
        } catch {
            watch.cancel()
            throw EtcdClientError(error)
        }
        return watch
    }

    var currentIndex: Int { stateCurrent() }
}

extension EtcdWatch {
    func waitCreated() async throws { try await control.waitCreated() }
}

extension AsyncThrowingStream.Continuation where Element: Sendable {
    /// Yields `element` to a stream with a bounded `.bufferingOldest`
    /// buffer, waiting while the buffer is full instead of dropping it (the
    /// consumer's iterator signals `taken` after each response it takes):
    /// the producer slows to the consumer's pace. Returns false when the
    /// stream has ended or the task is cancelled.
    @discardableResult
    func yieldWaiting(_ element: Element, taken: TakenSignal) async -> Bool {
        var pending = element
        while true {
            switch yield(pending) {
            case .enqueued: return true
            case .terminated: return false
            case .dropped(let back):
                pending = back
                await withTaskCancellationHandler {
                    await taken.wait()
                } onCancel: {
                    taken.signal()
                }
                if Task.isCancelled { return false }
            @unknown default: return false
            }
        }
    }
}

/// "The consumer took a response": wakes a producer waiting for room. A
/// signal with nobody waiting is kept for the next wait (so one taken
/// between a refused yield and the wait is not missed; at worst the
/// producer retries once for nothing).
final class TakenSignal: Sendable {
    private let state = Mutex<(pending: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.pending = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                if state.pending {
                    state.pending = false
                    return true
                }
                state.waiter = continuation
                return false
            }
            if now { continuation.resume() }
        }
    }
}
