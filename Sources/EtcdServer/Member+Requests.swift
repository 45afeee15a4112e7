import Auth
import EtcdMetrics
import EtcdProto
import Foundation
import Locks
import MVCC
import Raft

/// Client requests. Writes take one path: `propose(_:checking:as:_:)`
/// checks the request, encodes it, and queues it in the mailbox with a
/// completion that runs on the raft loop's thread once the entry is applied
/// (or at once on a refusal). The async calls are thin wrappers over it.
/// Linearizable reads queue for a ReadIndex round the same way.
extension Member {
    // MARK: - Writes with completions (the client API's hot path)

    /// Puts `request` as the user `info` names (nil: none; see
    /// `authInfo(token:commonName:)`); `completion` runs once, on the raft
    /// loop's thread once the entry is applied (or at once on a refusal).
    public func put(_ request: Etcdserverpb_PutRequest, as info: AuthInfo? = nil,
                    completion: @escaping @Sendable (Result<Etcdserverpb_PutResponse, any Error>) -> Void) {
        propose(.put(request), auth: info, checking: { try RequestValidation.check(request) },
                as: { if case let .put(response) = $0 { response } else { nil } }, completion)
    }

    /// As `put(_:as:completion:)`, for a DeleteRange.
    public func deleteRange(_ request: Etcdserverpb_DeleteRangeRequest, as info: AuthInfo? = nil,
                            completion: @escaping @Sendable (Result<Etcdserverpb_DeleteRangeResponse, any Error>) -> Void) {
        propose(.deleteRange(request), auth: info, checking: { try RequestValidation.check(request) },
                as: { if case let .deleteRange(response) = $0 { response } else { nil } }, completion)
    }

    /// A txn that writes (see `put(_:as:completion:)`). Read-only txns go
    /// through `readBarrier` and `readOnlyTxnNow` instead.
    public func writeTxn(_ request: Etcdserverpb_TxnRequest, as info: AuthInfo? = nil,
                         completion: @escaping @Sendable (Result<Etcdserverpb_TxnResponse, any Error>) -> Void) {
        propose(.txn(request), auth: info, checking: { try checkTxn(request) },
                as: { if case let .txn(response) = $0 { response } else { nil } }, completion)
    }

    /// The proposal path: checks (`check`, the user's permissions as the
    /// applier will check them, then the space quota), encodes and queues
    /// `request` with the user in its header; `completion` gets the applied
    /// result as `extract` reads it (nil: not the kind of result expected).
    /// Returns the request's id once it is queued (to stop waiting for it).
    @discardableResult
    func propose<Response>(_ request: ProposedRequest, auth info: AuthInfo? = nil, checking check: () throws -> Void,
                           as extract: @escaping @Sendable (ApplyResult) -> Response?,
                           _ completion: @escaping @Sendable (Result<Response, any Error>) -> Void) -> UInt64? {
        let proposal: QueuedProposal
        do {
            try validate(check)
            try authorize(request, as: info)
            try checkQuota(request)
            try mailbox.checkAccepting()
            proposal = try encoder.encode(request, auth: info)
        } catch {
            completion(.failure(error))
            return nil
        }
        mailbox.enqueue(proposal, deadline: environment.now() + requestTimeout) { result in
            completion(result.flatMap { extract($0).map { .success($0) } ?? .failure(EtcdError(.internal, "unexpected apply result")) })
        }
        return proposal.id
    }

    /// Proposes `request` and waits until it is applied (or refused, or
    /// etcd's request timeout passes). Cancelling the task stops the wait;
    /// the entry may still commit.
    func propose(_ request: ProposedRequest, auth info: AuthInfo? = nil) async throws -> ApplyResult {
        let id = Mutex<UInt64?>(nil)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let queued = propose(request, auth: info, checking: {}, as: { $0 }) { continuation.resume(with: $0) }
                id.withLock { $0 = queued }
            }
        } onCancel: {
            if let queued = id.withLock({ $0 }) { mailbox.cancel(queued) }
        }
    }

    /// Manual-loop members: propose `request` (its id is set here);
    /// `completion` runs on the driving thread once it is applied, fails or
    /// times out.
    package func submit(_ request: Etcdserverpb_InternalRaftRequest, auth info: AuthInfo? = nil,
                        completion: @escaping @Sendable (Result<ApplyResult, any Error>) -> Void) {
        propose(ProposedRequest(request), auth: info, checking: {}, as: { $0 }, completion)
    }

    /// etcd's space quota, checked before a request that grows the store is
    /// proposed: the backend's size (at its last commit, plus what the open
    /// batch adds) plus the request's cost (etcd's estimate) may not pass
    /// `--quota-backend-bytes`. Deletes, compaction
    /// and reads always pass, so an operator can make room.
    func checkQuota(_ request: ProposedRequest) throws(EtcdError) {
        let cost = Self.quotaCost(request)
        guard cost > 0 else { return }
        if backend.estimatedSizeBytes + cost > config.quotaBackendBytes {
            // As etcd: the member raises NOSPACE through raft (once), and
            // from then on every member refuses growth until it is disarmed.
            if !alarms.isActive(.nospace, member: memberID) {
                var alarm = Etcdserverpb_InternalRaftRequest()
                alarm.alarm.action = .activate
                alarm.alarm.memberID = memberID
                alarm.alarm.alarm = .nospace
                propose(.other(alarm), checking: {}, as: { $0 }) { _ in }
            }
            throw EtcdError.noSpace
        }
    }

    /// etcd's cost estimates: a put is its key and value plus 256 bytes of
    /// metadata; a txn the larger of its branches' puts; a lease grant 64.
    static func quotaCost(_ request: ProposedRequest) -> Int {
        let kvOverhead = 256, leaseOverhead = 64
        func cost(_ put: Etcdserverpb_PutRequest) -> Int { kvOverhead + put.key.count + put.value.count }
        func cost(_ txn: Etcdserverpb_TxnRequest) -> Int {
            func branch(_ ops: [Etcdserverpb_RequestOp]) -> Int {
                ops.reduce(0) { sum, op in
                    switch op.request {
                    case .requestPut(let put)?: sum + cost(put)
                    case .requestTxn(let nested)?: sum + cost(nested)
                    default: sum
                    }
                }
            }
            return max(branch(txn.success), branch(txn.failure))
        }
        switch request {
        case .put(let put): return cost(put)
        case .txn(let txn): return cost(txn)
        case .deleteRange: return 0
        case .other(let other): return other.hasLeaseGrant ? leaseOverhead : 0
        }
    }

    // MARK: - Async writes

    public func put(_ request: Etcdserverpb_PutRequest) async throws -> Etcdserverpb_PutResponse {
        try validate { try RequestValidation.check(request) }
        guard case let .put(response) = try await propose(.put(request)) else { throw EtcdError(.internal, "unexpected apply result") }
        return response
    }

    public func deleteRange(_ request: Etcdserverpb_DeleteRangeRequest) async throws -> Etcdserverpb_DeleteRangeResponse {
        try validate { try RequestValidation.check(request) }
        guard case let .deleteRange(response) = try await propose(.deleteRange(request)) else { throw EtcdError(.internal, "unexpected apply result") }
        return response
    }

    public func txn(_ request: Etcdserverpb_TxnRequest) async throws -> Etcdserverpb_TxnResponse {
        try checkTxn(request)
        if KVStore.isReadOnly(request) {
            try await linearizableBarrier()
            return try readOnlyTxnNow(request)
        }
        guard case let .txn(response) = try await propose(.txn(request)) else { throw EtcdError(.internal, "unexpected apply result") }
        return response
    }

    public func compact(_ request: Etcdserverpb_CompactionRequest) async throws -> Etcdserverpb_CompactionResponse {
        var internalRequest = Etcdserverpb_InternalRaftRequest()
        internalRequest.compaction = request
        guard case let .compaction(response) = try await propose(.other(internalRequest)) else { throw EtcdError(.internal, "unexpected apply result") }
        return response
    }

    // MARK: - Defragmentation

    /// Maintenance.Defragment: rewrites this member's backend without its
    /// free pages while reads and writes go on (unlike etcd, which blocks
    /// both for the whole defragmentation). Calls during one join it.
    public func defragment() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            mailbox.enqueueDefragment { continuation.resume(with: $0) }
        }
    }

    /// Manual-loop members: the same; `done` runs on the driving thread.
    package func submitDefragment(_ done: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        mailbox.enqueueDefragment(done)
    }

    // MARK: - Alarms

    /// Maintenance.Alarm: GET, ACTIVATE or DEACTIVATE, through raft as etcd does.
    public func alarm(_ request: Etcdserverpb_AlarmRequest) async throws -> Etcdserverpb_AlarmResponse {
        var internalRequest = Etcdserverpb_InternalRaftRequest()
        internalRequest.alarm = request
        guard case var .alarm(response) = try await propose(.other(internalRequest)) else { throw EtcdError(.internal, "unexpected apply result") }
        response.header = header()
        return response
    }

    /// The alarms this member has applied, for Status.
    public func activeAlarms() -> [Etcdserverpb_AlarmMember] { alarms.get(.none) }

    /// The size the space quota is checked against (the backend file at its
    /// last commit plus what the open batch adds).
    package var quotaUsageBytes: Int { backend.estimatedSizeBytes }

    // MARK: - Membership changes

    /// Proposes a membership change and waits until it is applied.
    func proposeConfChange(_ change: ConfChange) async throws {
        _ = try await withCheckedThrowingContinuation { continuation in
            submitConfChange(change) { continuation.resume(with: $0) }
        }
    }

    /// Proposes a membership change; `completion` runs on the loop's (or
    /// the driving) thread once it is applied, fails or times out.
    package func submitConfChange(_ change: ConfChange,
                                  completion: @escaping @Sendable (Result<ApplyResult, any Error>) -> Void) {
        mailbox.enqueue(confChange: encoder.identified(change), deadline: environment.now() + requestTimeout, completion)
    }

    // MARK: - Reads

    public func range(_ request: Etcdserverpb_RangeRequest) async throws -> Etcdserverpb_RangeResponse {
        try validate { try RequestValidation.check(request) }
        if !request.serializable { try await linearizableBarrier() }
        return try rangeNow(request)
    }

    /// The linearizable-read barrier with a completion: `done` runs (on the
    /// raft loop's thread) once everything committed before the call has
    /// been applied; reads queued together share one ReadIndex round.
    public func readBarrier(_ done: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        if config.failpoints.isOn(.bugLocalLinearizableReads) { return done(.success(())) }
        mailbox.enqueueRead(done)
    }

    /// Manual-loop members: the same barrier; `done` runs on the driving thread.
    package func submitReadBarrier(_ done: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        readBarrier(done)
    }

    /// Returns once everything committed before the call has been applied.
    func linearizableBarrier() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            readBarrier { continuation.resume(with: $0) }
        }
    }

    /// A range over what this member has applied, validated, without any
    /// barrier: a serializable read, or a linearizable one after `readBarrier`.
    public func rangeNow(_ request: Etcdserverpb_RangeRequest) throws -> Etcdserverpb_RangeResponse {
        try validate { try RequestValidation.check(request) }
        let response = try validate { try store.range(request) }
        metricsRecorder?.mvccRange.increment()
        return response
    }

    /// Checks a txn's shape and size (etcd's limits, with `--max-txn-ops`)
    /// before it is routed.
    public func checkTxn(_ request: Etcdserverpb_TxnRequest) throws {
        try validate { try RequestValidation.check(request, maxOperations: config.maxTxnOps) }
    }

    /// A read-only txn over what this member has applied (after `readBarrier`).
    public func readOnlyTxnNow(_ request: Etcdserverpb_TxnRequest) throws -> Etcdserverpb_TxnResponse {
        let response = try validate { try store.readOnlyTxn(request) }
        if let metricsRecorder { Applier.count(request, response, into: metricsRecorder) }
        return response
    }

    /// etcd's HashKV: a hash of the MVCC key space up to `revision` (0: now),
    /// equal on members with the same history.
    public func hashKV(revision: Int64) throws -> (hash: UInt32, compactRevision: Int64, hashRevision: Int64, currentRevision: Int64) {
        let (result, current) = try validate { try store.hashKV(revision) }
        return (result.hash, result.compactRevision, result.revision, current)
    }

    /// etcd's Hash: a hash over the whole backend.
    public func backendHash() throws -> (hash: UInt32, revision: Int64) {
        try validate { try store.hash() }
    }

    func validate<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as MVCCError { throw EtcdError(error) }
    }
}
