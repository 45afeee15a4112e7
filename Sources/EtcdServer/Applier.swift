import Auth
import Backend
import EtcdMetrics
import EtcdProto
import Foundation
import Lease
import Logging
import MVCC
import PeerTransport
import Raft
import SwiftProtobuf

/// A request as the member applies it: the KV writes on their own (so a
/// proposal need not build an InternalRaftRequest), anything else as the
/// InternalRaftRequest that carries it.
enum ProposedRequest {
    case put(Etcdserverpb_PutRequest)
    case deleteRange(Etcdserverpb_DeleteRangeRequest)
    case txn(Etcdserverpb_TxnRequest)
    case other(Etcdserverpb_InternalRaftRequest)

    /// The request an entry carries (exactly one per entry).
    init(_ request: Etcdserverpb_InternalRaftRequest) {
        if request.hasPut {
            self = .put(request.put)
        } else if request.hasDeleteRange {
            self = .deleteRange(request.deleteRange)
        } else if request.hasTxn {
            self = .txn(request.txn)
        } else {
            self = .other(request)
        }
    }
}

/// What applying one request produced.
public enum ApplyResult: Sendable {
    case put(Etcdserverpb_PutResponse)
    case deleteRange(Etcdserverpb_DeleteRangeResponse)
    case txn(Etcdserverpb_TxnResponse)
    case compaction(Etcdserverpb_CompactionResponse)
    case leaseGrant(Etcdserverpb_LeaseGrantResponse)
    case leaseRevoke(Etcdserverpb_LeaseRevokeResponse)
    case alarm(Etcdserverpb_AlarmResponse)
    case authenticate(Etcdserverpb_AuthenticateResponse)
    case none
}

/// Why a request was not applied. `rejected`: the request's own outcome (a
/// failed check, an unknown lease); every member rejects it alike, nothing
/// changed, and the proposer hears the error. `fatal`: storage failed, so
/// nothing more can be made durable and the member stops (the WAL still
/// holds every acknowledged entry).
enum ApplyFailure: Error {
    case rejected(EtcdError)
    case fatal(any Error)
}

/// Turns committed requests into effects on the state machines: the MVCC
/// store (and through it the watchers), the lessor, the membership table.
/// Every write's events go to the lessor (key attachments) and the
/// watchable store.
///
/// Owner: the raft loop's thread (it holds the backend's write batch); no
/// other thread calls it.
final class Applier: @unchecked Sendable {
    let memberID: UInt64
    let store: KVStore
    let watchable: WatchableStore
    let lessor: Lessor
    let backend: Backend
    let membership: MembershipTable
    let alarms: AlarmStore
    /// Users, roles and permissions; the applier changes them and checks
    /// every request against them (etcd's auth applier).
    let auth: AuthStore
    /// The simple tokens Authenticate entries assign.
    let tokens: SimpleTokens
    let peers: any RaftTransport
    let leaseClock: LeaseClock
    let logger: Logger
    let observeApply: (@Sendable (UInt64, Int64, [Mvccpb_Event]) -> Void)?
    /// For `corruptPut`, which makes this member's data diverge.
    let failpoints: Failpoints
    let observeCompaction: (@Sendable (UInt64, Int64) -> Void)?
    /// etcd_mvcc_{put,delete,range,txn}_total (nil: not recorded).
    let metrics: EtcdMetrics?

    init(memberID: UInt64, store: KVStore, watchable: WatchableStore, lessor: Lessor, backend: Backend,
         membership: MembershipTable, alarms: AlarmStore, auth: AuthStore, tokens: SimpleTokens, peers: any RaftTransport, leaseClock: LeaseClock, logger: Logger,
         failpoints: Failpoints, metrics: EtcdMetrics?, observeApply: (@Sendable (UInt64, Int64, [Mvccpb_Event]) -> Void)?,
         observeCompaction: (@Sendable (UInt64, Int64) -> Void)?) {
        self.memberID = memberID
        self.store = store
        self.watchable = watchable
        self.lessor = lessor
        self.backend = backend
        self.membership = membership
        self.alarms = alarms
        self.auth = auth
        self.tokens = tokens
        self.peers = peers
        self.leaseClock = leaseClock
        self.logger = logger
        self.failpoints = failpoints
        self.metrics = metrics
        self.observeApply = observeApply
        self.observeCompaction = observeCompaction
    }

    /// Applies one request to the state machines, as the user `info` names
    /// (the entry's header; nil: none), at raft `index`.
    func apply(_ proposed: ProposedRequest, as info: AuthInfo?, index: UInt64) -> Result<ApplyResult, ApplyFailure> {
        // While a CORRUPT alarm is raised every member refuses writes,
        // compactions and lease grants and revokes, as etcd's corrupt
        // applier does (reads are served outside the log and go on).
        if alarms.isCorruptActive && Self.refusedWhenCorrupt(proposed) { return .failure(.rejected(.corrupt)) }
        // While a NOSPACE alarm is raised every member refuses what grows
        // the store, as etcd's capped applier does.
        if alarms.isNoSpaceActive && Member.quotaCost(proposed) > 0 { return .failure(.rejected(.noSpace)) }
        do { try authorize(proposed, as: info) } catch { return .failure(.rejected(EtcdError(error))) }
        let leaseExists: (Int64) -> Bool = { [lessor] in lessor.contains($0) }
        switch proposed {
        case .put(var put):
            if failpoints.fires(.corruptPut) { put.value = Self.flipped(put.value) }
            metrics?.mvccPut.increment()
            return storeWrite { .put(published(try store.put(put, leaseExists: leaseExists))) }
        case .deleteRange(let delete):
            metrics?.mvccDelete.increment()
            return storeWrite { .deleteRange(published(try store.deleteRange(delete))) }
        case .txn(let txn):
            return storeWrite {
                let response = published(try store.txn(txn, leaseExists: leaseExists))
                if let metrics { Self.count(txn, response, into: metrics) }
                return .txn(response)
            }
        case .other(let request):
            if request.hasCompaction {
                return storeWrite {
                    let response = try store.compact(request.compaction.revision)
                    if request.compaction.physical { try store.finishCompaction() }
                    observeCompaction?(memberID, request.compaction.revision)
                    return .compaction(response)
                }
            }
            if request.hasLeaseGrant || request.hasLeaseRevoke || request.hasLeaseCheckpoint {
                return applyLease(request)
            }
            if request.hasAlarm {
                return applyAlarm(request.alarm)
            }
            if request.hasClusterMemberAttrSet {
                return applyMemberAttributes(request.clusterMemberAttrSet)
            }
            if request.hasClusterVersionSet || request.hasDowngradeInfoSet {
                return applyClusterVersion(request)
            }
            if let result = applyAuth(request, index: index) { return result }
            return .failure(.rejected(EtcdError(.unimplemented, "etcdserver: request type not supported yet")))
        }
    }

    /// A transaction's operations as etcd's mvcc counts them: each compare
    /// is a range, then the operations of the branch taken (nested
    /// transactions' too); a transaction of more than one operation also
    /// counts as a txn.
    static func count(_ txn: Etcdserverpb_TxnRequest, _ response: Etcdserverpb_TxnResponse, into metrics: EtcdMetrics) {
        var counts = (ranges: 0, puts: 0, deletes: 0)
        func add(_ txn: Etcdserverpb_TxnRequest, _ response: Etcdserverpb_TxnResponse) {
            counts.ranges += txn.compare.count
            for (index, op) in (response.succeeded ? txn.success : txn.failure).enumerated() {
                switch op.request {
                case .requestRange: counts.ranges += 1
                case .requestPut: counts.puts += 1
                case .requestDeleteRange: counts.deletes += 1
                case .requestTxn(let inner):
                    if index < response.responses.count, case .responseTxn(let innerResponse)? = response.responses[index].response {
                        add(inner, innerResponse)
                    }
                case nil: break
                }
            }
        }
        add(txn, response)
        if counts.ranges + counts.puts + counts.deletes > 1 { metrics.mvccTxn.increment() }
        if counts.ranges > 0 { metrics.mvccRange.increment(by: Int64(counts.ranges)) }
        if counts.puts > 0 { metrics.mvccPut.increment(by: Int64(counts.puts)) }
        if counts.deletes > 0 { metrics.mvccDelete.increment(by: Int64(counts.deletes)) }
    }

    /// What etcd's corrupt applier refuses: Put, DeleteRange, Txn (read-only
    /// ones too, when they come through the log), Compaction, LeaseGrant and
    /// LeaseRevoke. Alarms, checkpoints and membership go on, so an operator
    /// can still disarm.
    static func refusedWhenCorrupt(_ proposed: ProposedRequest) -> Bool {
        switch proposed {
        case .put, .deleteRange, .txn: true
        case .other(let request): request.hasCompaction || request.hasLeaseGrant || request.hasLeaseRevoke
        }
    }

    /// The `corruptPut` failpoint's damage: the value with its first byte's
    /// bits flipped (an empty value becomes one 0xff byte).
    static func flipped(_ value: Data) -> Data {
        guard let first = value.first else { return Data([0xFF]) }
        var damaged = value
        damaged[damaged.startIndex] = first ^ 0xFF
        return damaged
    }

    /// Runs an MVCC write: a backend failure is fatal, any other MVCC error
    /// is the request's own outcome.
    private func storeWrite(_ body: () throws -> ApplyResult) -> Result<ApplyResult, ApplyFailure> {
        do {
            return .success(try body())
        } catch let error as MVCCError {
            if case .backend = error { return .failure(.fatal(error)) }
            return .failure(.rejected(EtcdError(error)))
        } catch {
            return .failure(.fatal(error))
        }
    }

    /// Hands a write's events to the lessor and the watchers; returns its response.
    func published<R>(_ write: WriteResult<R>) -> R {
        if !write.events.isEmpty {
            lessor.apply(events: write.events)
            watchable.notify(write.events, revision: write.revision)
            observeApply?(memberID, write.revision, write.events)
        }
        return write.response
    }

    // MARK: - Leases

    /// Applies LeaseGrant, LeaseRevoke (its keys are deleted in one
    /// revision, with delete events) and LeaseCheckpoint.
    private func applyLease(_ request: Etcdserverpb_InternalRaftRequest) -> Result<ApplyResult, ApplyFailure> {
        do {
            if request.hasLeaseGrant {
                let info = try lessor.grant(id: request.leaseGrant.id, ttlSeconds: request.leaseGrant.ttl, now: leaseClock.now())
                var response = Etcdserverpb_LeaseGrantResponse()
                response.id = info.id
                response.ttl = info.grantedTTL
                return .success(.leaseGrant(response))
            }
            if request.hasLeaseRevoke {
                let keys = try lessor.revoke(id: request.leaseRevoke.id)
                return storeWrite {
                    _ = published(try store.deleteKeys(keys))
                    return .leaseRevoke(Etcdserverpb_LeaseRevokeResponse())
                }
            }
            for checkpoint in request.leaseCheckpoint.checkpoints {
                // A checkpoint of a lease revoked meanwhile is moot.
                do {
                    try lessor.checkpoint(id: checkpoint.id, remainingTTLSeconds: checkpoint.remainingTtl, now: leaseClock.now())
                } catch {
                    if case .backend = error { return .failure(.fatal(error)) }
                }
            }
            return .success(.none)
        } catch {
            // The lease's own outcome, except a storage failure.
            if case .backend = error { return .failure(.fatal(error)) }
            return .failure(.rejected(EtcdError(error)))
        }
    }

    // MARK: - Cluster version and downgrade

    /// ClusterVersionSet (the leader's version monitor) and DowngradeInfoSet
    /// (Maintenance.Downgrade ENABLE / CANCEL), as etcd applies them.
    private func applyClusterVersion(_ request: Etcdserverpb_InternalRaftRequest) -> Result<ApplyResult, ApplyFailure> {
        let versions = membership.versions
        do {
            if request.hasClusterVersionSet {
                guard let version = ClusterVersion(parsing: request.clusterVersionSet.ver) else {
                    return .failure(.rejected(.wrongDowngradeVersionFormat))
                }
                let old = try versions.setVersion(version, in: backend)
                if old != version {
                    logger.info("updated cluster version", metadata: ["from": "\(old)", "to": "\(version)"])
                }
            } else {
                let set = request.downgradeInfoSet
                var downgrade = ClusterVersionStore.Downgrade(enabled: set.enabled)
                if set.enabled {
                    guard let target = ClusterVersion(parsing: set.ver) else { return .failure(.rejected(.wrongDowngradeVersionFormat)) }
                    downgrade.target = target
                }
                try versions.setDowngrade(downgrade, in: backend)
                if set.enabled {
                    logger.info("The server is ready to downgrade", metadata: ["target-version": "\(set.ver)"])
                } else {
                    logger.info("The downgrade is cancelled")
                }
            }
            return .success(.none)
        } catch {
            return .failure(.fatal(error))
        }
    }

    // MARK: - Alarms

    /// GET lists, ACTIVATE raises, DEACTIVATE disarms (etcd's Alarm apply).
    private func applyAlarm(_ request: Etcdserverpb_AlarmRequest) -> Result<ApplyResult, ApplyFailure> {
        var response = Etcdserverpb_AlarmResponse()
        do {
            switch request.action {
            case .get:
                response.alarms = alarms.get(request.alarm)
            case .activate:
                guard request.alarm != .none else { break }
                if let raised = try alarms.activate(request.alarm, member: request.memberID, in: backend) {
                    response.alarms = [raised]
                    logger.warning("alarm raised", metadata: [
                        "alarm": "\(raised.alarm.etcdName)", "from": "\(String(raised.memberID, radix: 16))"])
                }
            case .deactivate:
                if let disarmed = try alarms.deactivate(request.alarm, member: request.memberID, in: backend) {
                    response.alarms = [disarmed]
                    logger.warning("alarm disarmed", metadata: [
                        "alarm": "\(disarmed.alarm.etcdName)", "from": "\(String(disarmed.memberID, radix: 16))"])
                }
            case .UNRECOGNIZED:
                break
            }
        } catch {
            return .failure(.fatal(error))
        }
        return .success(.alarm(response))
    }

    // MARK: - Membership

    /// ClusterMemberAttrSet: the member's name and client URLs.
    private func applyMemberAttributes(_ request: Membershippb_ClusterMemberAttrSetRequest) -> Result<ApplyResult, ApplyFailure> {
        guard var record = membership.member(request.memberID) else { return .success(.none) }
        record.name = request.memberAttributes.name
        record.clientURLs = request.memberAttributes.clientUrls
        do { try membership.save(record, to: backend) } catch { return .failure(.fatal(error)) }
        return .success(.none)
    }

    /// A committed conf change: the membership table, the backend and the
    /// transport follow it. Returns true when this member was removed.
    /// Errors are fatal (a change raft committed must take effect).
    func applyMembership(_ change: ConfChange) throws -> Bool {
        switch change.type {
        case .addNode, .addLearnerNode, .updateNode:
            guard var record = MemberRecord(json: change.context), record.id == change.nodeID else {
                throw EtcdError(.dataLoss, "etcdserver: conf change for \(String(change.nodeID, radix: 16)) carries no member record")
            }
            if let existing = membership.member(record.id) {
                // Promotion and updates keep the published attributes.
                if record.name.isEmpty { record.name = existing.name }
                if record.clientURLs.isEmpty { record.clientURLs = existing.clientURLs }
            }
            try membership.save(record, to: backend)
            if record.id != memberID { peers.setPeer(id: record.id, urls: record.peerURLs) }
            logger.info(change.type == .updateNode ? "updated member" : "added member", metadata: [
                "updated-remote-peer-id": "\(String(record.id, radix: 16))",
                "updated-remote-peer-urls": "\(record.peerURLs)",
            ])
        case .removeNode:
            try membership.remove(change.nodeID, from: backend)
            peers.removePeer(id: change.nodeID)
            logger.info("removed member", metadata: ["removed-remote-peer-id": "\(String(change.nodeID, radix: 16))"])
            return change.nodeID == memberID
        }
        return false
    }

    // MARK: - Snapshots

    /// Swaps in the backend a leader sent (at `path`) and rebuilds
    /// everything that lives over it: the store's index, the leases, the
    /// watchers, the membership and the transport's peers.
    func restore(fromBackendAt path: String, electionTimeout: Duration) throws {
        let before = Set(membership.members.map(\.id))
        do {
            // The swap happens under the store's write lock, so no read
            // sees the new data through the old index.
            try store.reload { [backend] in try backend.replace(withFileAt: path) }
            try lessor.reload(now: leaseClock.now(), extend: electionTimeout)
        } catch {
            throw EtcdError(.dataLoss, "etcdserver: cannot load the received snapshot: \(error)")
        }
        lessor.restoreAttachments(store.restoredLeases)
        watchable.restore()
        try membership.load(from: backend)
        try alarms.load(from: backend)
        try auth.load(from: backend)
        if !auth.isEnabled { tokens.removeAll() }
        let after = membership.members
        for id in before.subtracting(after.map(\.id)) { peers.removePeer(id: id) }
        for record in after where record.id != memberID { peers.setPeer(id: record.id, urls: record.peerURLs) }
    }
}

/// The monotonic time leases are measured in: the environment's clock,
/// counted from when the member started.
struct LeaseClock: Sendable {
    let clock: @Sendable () -> ContinuousClock.Instant
    let origin: ContinuousClock.Instant

    init(_ clock: @escaping @Sendable () -> ContinuousClock.Instant) {
        self.clock = clock
        origin = clock()
    }

    func now() -> Duration { clock() - origin }
}

extension EtcdError {
    init(_ error: MVCCError) {
        switch error {
        case .compacted: self = .compacted
        case .futureRevision: self = .futureRevision
        case .duplicateKey: self = .duplicateKey
        case .keyNotFound: self = .keyNotFound
        case .emptyKey: self = .emptyKey
        case .tooManyOperations: self = .tooManyOps
        case .valueProvided: self = .valueProvided
        case .leaseProvided: self = .leaseProvided
        case .leaseNotFound: self = .leaseNotFound
        case .backend(.quotaExceeded): self = .noSpace
        case .backend, .corruptEntry: self = EtcdError(.internal, error.message)
        }
    }

    init(_ error: LeaseError) {
        switch error {
        case .notFound: self = .leaseNotFound
        case .alreadyExists: self = .leaseExists
        case .ttlTooLarge: self = .leaseTTLTooLarge
        case .notPrimary: self = .notPrimary
        case .tooManyLeases: self = EtcdError(.resourceExhausted, error.description)
        case .backend(let message): self = EtcdError(.internal, "etcdserver: lease backend: \(message)")
        }
    }
}
