import Auth
import EtcdProto
import EtcdServer
import Foundation
import Locks
import MVCC

/// The key-value calls the Lock and Election services make, as their caller
/// (etcd runs those services over an in-process client that carries the
/// caller's token, so the caller's permissions apply to every key they
/// touch). Reads are linearizable; every response has the member's full
/// header.
struct RecipeKV: Sendable {
    let member: Member
    let info: AuthInfo?

    /// The TTL of the lease a Lock or Campaign without one gets (etcd's
    /// session default; nothing keeps it alive).
    static let sessionTTL: Int64 = 60

    func txn(_ request: Etcdserverpb_TxnRequest) async throws -> Etcdserverpb_TxnResponse {
        try member.checkTxn(request)
        if KVStore.isReadOnly(request) {
            try member.authorize(request, as: info)
            return try await member.txn(request).stamped(by: member)
        }
        let (member, info) = (self.member, self.info)
        return try await withCheckedThrowingContinuation { continuation in
            member.writeTxn(request, as: info) { continuation.resume(with: $0) }
        }.stamped(by: member)
    }

    func range(_ request: Etcdserverpb_RangeRequest) async throws -> Etcdserverpb_RangeResponse {
        try member.authorize(request, as: info)
        return try await member.range(request).stamped(by: member)
    }

    func delete(_ key: Data) async throws -> Etcdserverpb_DeleteRangeResponse {
        var request = Etcdserverpb_DeleteRangeRequest()
        request.key = key
        let (member, info) = (self.member, self.info)
        return try await withCheckedThrowingContinuation { continuation in
            member.deleteRange(request, as: info) { continuation.resume(with: $0) }
        }.stamped(by: member)
    }

    /// The session lease of a call: `lease` itself, or a new one of
    /// `sessionTTL` seconds when 0.
    func sessionLease(_ lease: Int64) async throws -> Int64 {
        if lease != 0 { return lease }
        var grant = Etcdserverpb_LeaseGrantRequest()
        grant.ttl = Self.sessionTTL
        return try await member.leaseGrant(grant).id
    }

    /// The key under `prefix` created first (clientv3's WithFirstCreate),
    /// or with `maxCreateRevision`, the one created last at or below it.
    func firstCreated(_ prefix: Data) -> Etcdserverpb_RangeRequest {
        var request = Etcdserverpb_RangeRequest()
        request.key = prefix
        request.rangeEnd = Self.prefixEnd(prefix)
        request.sortTarget = .create
        request.sortOrder = .ascend
        request.limit = 1
        return request
    }

    /// Waits until every key under `prefix` created at or below
    /// `maxCreateRevision` is gone (clientv3 concurrency's waitDeletes);
    /// returns the header of the last look, which found none.
    func waitDeletes(_ prefix: Data, maxCreateRevision: Int64) async throws -> Etcdserverpb_ResponseHeader {
        var request = firstCreated(prefix)
        request.sortOrder = .descend
        request.maxCreateRevision = maxCreateRevision
        while true {
            try Task.checkCancellation()
            let response = try await range(request)
            guard let last = response.kvs.first else { return response.header }
            try await waitDelete(last.key, from: response.header.revision)
        }
    }

    /// Waits for a delete of `key` at or after `revision`.
    func waitDelete(_ key: Data, from revision: Int64) async throws {
        let sink = DeleteSink()
        let handle = member.watchable.watch(watchID: 0, key: key, rangeEnd: Data(), startRevision: revision, prevKV: false,
                                            filters: .noPut, sink: sink)
        defer { member.watchable.cancel(handle) }
        try await withTaskCancellationHandler {
            try await sink.wait()
        } onCancel: {
            sink.fail(CancellationError())
        }
    }

    /// Watches a key (or, with `rangeEnd`, a range) from `revision`: each
    /// delivery's events, in order, until the task is cancelled. The stream
    /// holds at most `DeliveryStream.limit` deliveries; a watcher that falls
    /// further behind is offered them again later by the store.
    func watch(_ key: Data, rangeEnd: Data = Data(), from revision: Int64,
               _ body: (WatchDelivery) async throws -> Bool) async throws {
        let sink = DeliveryStream()
        let handle = member.watchable.watch(watchID: 0, key: key, rangeEnd: rangeEnd, startRevision: revision, prevKV: false,
                                            filters: [], sink: sink)
        defer {
            member.watchable.cancel(handle)
            sink.finish()
        }
        for await delivery in sink.deliveries {
            sink.taken()
            try Task.checkCancellation()
            if delivery.compactRevision != 0 { throw EtcdError.compacted }
            if !(try await body(delivery)) { return }
        }
        try Task.checkCancellation()
    }

    /// The end of the range of every key with `prefix` (clientv3's GetPrefixRangeEnd).
    static func prefixEnd(_ prefix: Data) -> Data {
        var end = Array(prefix)
        while let last = end.last {
            if last < 0xFF {
                end[end.count - 1] = last + 1
                return Data(end)
            }
            end.removeLast()
        }
        return Data([0])
    }
}

/// Resumes one waiter at the first delete (or compaction notice) it is offered.
private final class DeleteSink: WatchSink, @unchecked Sendable {
    private struct State {
        var outcome: Result<Void, any Error>?
        var waiter: CheckedContinuation<Void, any Error>?
    }
    private let state = Mutex(State())

    func offer(_ delivery: WatchDelivery) -> Bool {
        if delivery.compactRevision != 0 {
            fail(EtcdError.compacted)
        } else if delivery.events.contains(where: { $0.type == .delete }) {
            resolve(.success(()))
        }
        return true
    }

    func fail(_ error: any Error) { resolve(.failure(error)) }

    private func resolve(_ outcome: Result<Void, any Error>) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            guard state.outcome == nil else { return nil }
            state.outcome = outcome
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(with: outcome)
    }

    func wait() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let ready = state.withLock { state -> Result<Void, any Error>? in
                if state.outcome == nil { state.waiter = continuation }
                return state.outcome
            }
            if let ready { continuation.resume(with: ready) }
        }
    }
}

/// Deliveries as an async sequence, bounded: when full, the store keeps the
/// delivery and offers it again.
private final class DeliveryStream: WatchSink, @unchecked Sendable {
    static let limit = 64
    let deliveries: AsyncStream<WatchDelivery>
    private let continuation: AsyncStream<WatchDelivery>.Continuation
    private let queued = Mutex(0)

    init() {
        (deliveries, continuation) = AsyncStream.makeStream(of: WatchDelivery.self, bufferingPolicy: .unbounded)
    }

    func offer(_ delivery: WatchDelivery) -> Bool {
        let room = queued.withLock { count -> Bool in
            guard count < Self.limit else { return false }
            count += 1
            return true
        }
        guard room else { return false }
        continuation.yield(delivery)
        return true
    }

    /// The consumer took one.
    func taken() { queued.withLock { $0 -= 1 } }

    func finish() { continuation.finish() }
}
