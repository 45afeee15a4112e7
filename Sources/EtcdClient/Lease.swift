import EtcdProto
import Foundation
import Locks

public typealias LeaseGrantResponse = Etcdserverpb_LeaseGrantResponse
public typealias LeaseRevokeResponse = Etcdserverpb_LeaseRevokeResponse
public typealias LeaseKeepAliveResponse = Etcdserverpb_LeaseKeepAliveResponse
public typealias LeaseTimeToLiveResponse = Etcdserverpb_LeaseTimeToLiveResponse
public typealias LeaseLeasesResponse = Etcdserverpb_LeaseLeasesResponse

extension EtcdClient {
    static let keepAlivePath = "/etcdserverpb.Lease/LeaseKeepAlive"

    /// Grants a lease of `ttl` seconds (`id` 0: the server picks the ID).
    public func leaseGrant(ttl: Int64, id: Int64 = 0) async throws -> LeaseGrantResponse {
        var r = Etcdserverpb_LeaseGrantRequest()
        r.ttl = ttl
        r.id = id
        let response: LeaseGrantResponse = try await unary("/etcdserverpb.Lease/LeaseGrant", r, .mutating)
        if !response.error.isEmpty { throw EtcdClientError.rpc(code: .unknown, message: response.error) }
        return response
    }

    /// Revokes a lease; its keys are deleted.
    @discardableResult
    public func leaseRevoke(id: Int64) async throws -> LeaseRevokeResponse {
        var r = Etcdserverpb_LeaseRevokeRequest()
        r.id = id
        return try await unary("/etcdserverpb.Lease/LeaseRevoke", r, .idempotent)
    }

    /// The lease's remaining and granted TTL (and its keys when `keys`). An expired lease has TTL -1.
    public func leaseTimeToLive(id: Int64, keys: Bool = false) async throws -> LeaseTimeToLiveResponse {
        var r = Etcdserverpb_LeaseTimeToLiveRequest()
        r.id = id
        r.keys = keys
        return try await unary("/etcdserverpb.Lease/LeaseTimeToLive", r, .idempotent)
    }

    /// All leases.
    public func leases() async throws -> LeaseLeasesResponse {
        try await unary("/etcdserverpb.Lease/LeaseLeases", Etcdserverpb_LeaseLeasesRequest(), .idempotent)
    }

    /// Renews a lease once.
    /// - Throws: ``EtcdClientError/leaseNotFound`` when the lease is gone.
    public func leaseKeepAliveOnce(id: Int64) async throws -> LeaseKeepAliveResponse {
        var r = Etcdserverpb_LeaseKeepAliveRequest()
        r.id = id
        let response = try await call(.idempotent) { [r] connection, context in
            let stream = try await connection.stream(Self.keepAlivePath, token: context.token, deadline: context.deadline,
                                                     of: LeaseKeepAliveResponse.self)
            defer { stream.cancel() }
            try await stream.send(r)
            var iterator = stream.wire.makeAsyncIterator()
            guard let message = try await stream.next(&iterator) else {
                throw EtcdClientError.rpc(code: .unavailable, message: "keep-alive stream ended")
            }
            return message
        }
        if response.ttl <= 0 { throw EtcdClientError.leaseNotFound }
        return response
    }

    /// Keeps a lease alive until the sequence is cancelled or the lease expires.
    ///
    /// Renews every third of the TTL, reconnecting (to another endpoint if
    /// needed) when the stream breaks. Each renewal's response is yielded; the
    /// sequence finishes when the server reports the lease gone (TTL 0) or when
    /// the lease's TTL passes without a successful renewal.
    public func leaseKeepAlive(id: Int64) -> AsyncThrowingStream<LeaseKeepAliveResponse, any Error> {
        // Renewals go on whether or not the responses are read: a consumer
        // that is behind gets the newest 16 (Go's clientv3 keeps 16 too).
        let (stream, continuation) = AsyncThrowingStream<LeaseKeepAliveResponse, any Error>.makeStream(bufferingPolicy: .bufferingNewest(16))
        let task = Task { await self.runKeepAlive(id: id, continuation: continuation) }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    private func runKeepAlive(id: Int64, continuation: AsyncThrowingStream<LeaseKeepAliveResponse, any Error>.Continuation) async {
        let clock = ContinuousClock()
        let progress = KeepAliveProgress(now: clock.now)
        var pause = Duration.milliseconds(100)
        while !Task.isCancelled {
            let index = currentIndex
            let connection = connections[index]
            do {
                let stream = try await connection.stream(Self.keepAlivePath, token: try await token(), of: LeaseKeepAliveResponse.self)
                defer { stream.cancel() }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        var request = Etcdserverpb_LeaseKeepAliveRequest()
                        request.id = id
                        while !Task.isCancelled {
                            try await stream.send(request)
                            try await Task.sleep(for: .milliseconds(Self.interval(forTTL: progress.ttl)))
                        }
                    }
                    try await stream.forEach { message in
                        if message.ttl <= 0 { throw EtcdClientError.leaseNotFound }
                        progress.renewed(ttl: message.ttl, at: clock.now)
                        continuation.yield(message)
                    }
                    group.cancelAll()
                }
            } catch {
                if Task.isCancelled { break }
                let mapped = EtcdClientError(error)
                if mapped == .leaseNotFound || mapped == .closed { continuation.finish(); return }
                if mapped == .invalidAuthToken { clearToken() } else { advance(from: index) }
                let (ttl, last) = progress.snapshot
                if ttl > 0, clock.now - last > .seconds(ttl) { continuation.finish(); return }
            }
            try? await Task.sleep(for: pause)
            pause = Swift.min(pause * 2, .seconds(1))
        }
        continuation.finish()
    }

    /// Milliseconds between renewals: a third of the TTL (at least 100 ms; 500 ms until the TTL is known).
    static func interval(forTTL ttl: Int64) -> Int {
        ttl <= 0 ? 500 : max(100, Int(ttl) * 1000 / 3)
    }
}

/// The TTL and time of the last renewal of a keep-alive loop.
final class KeepAliveProgress: Sendable {
    private let state: Mutex<(ttl: Int64, last: ContinuousClock.Instant)>
    init(now: ContinuousClock.Instant) { state = Mutex((0, now)) }
    var ttl: Int64 { state.withLock { $0.ttl } }
    var snapshot: (Int64, ContinuousClock.Instant) { state.withLock { ($0.ttl, $0.last) } }
    func renewed(ttl: Int64, at now: ContinuousClock.Instant) { state.withLock { $0 = (ttl, now) } }
}
