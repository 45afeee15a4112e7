import EtcdProto
import EtcdServer
import Raft
import Foundation

/// The space quota, as an operator meets it: every seed runs with a small
/// `--quota-backend-bytes` (320–640 KiB; the workload alone stays near
/// 100 KiB). A fill fault writes 48 KiB values under `fill/` until a
/// member refuses one with `database space exceeded` (NOSPACE raised
/// through raft by the member itself). Later the keeper does what the
/// runbook says: delete the filler, compact, defragment every member over
/// the threshold, and disarm — and keeps at it, because a member that was
/// down, or an activation still in a deposed leader's log, brings it back.
struct QuotaState {
    enum Phase: Equatable {
        case idle
        case filling
        case deleting
        case compacting(revision: Int64)
        case settling
    }

    let bytes: Int
    var phase = Phase.idle
    var filled = 0
    var keeperRunning = false
    var keeperRounds = 0
    var cleanRounds = 0
    var defragmenting: Set<UInt64> = []
    /// Fill puts refused with NOSPACE, and reclaims finished (every member
    /// back under the threshold, no NOSPACE shown for ten rounds).
    var refusals = 0
    var cleared = 0

    /// Fill values: large enough that a handful reach the quota.
    static let fillValueBytes = 48 << 10
    static let fillPrefix = "fill/"
    /// A member whose usage passes this share of the quota is defragmented.
    var defragThreshold: Int { bytes * 3 / 4 }
}

extension SimWorld {
    /// This seed's quota, from a generator of its own.
    static func chooseQuota(seed: UInt64) -> Int {
        var choice = SplitMix64(seed: seed &* 0x94D0_49BB_1331_11EB &+ 0x0A70)
        return Int(choice.int(320...640)) << 10
    }

    /// Fills the store through one member until it refuses a put for want
    /// of space (at most 64 puts), then lets the keeper reclaim the space
    /// after `duration`.
    func startFill(duration: Int64) {
        guard quota.phase == .idle, pickNode() != nil else { return }
        count("fill")
        quota.phase = .filling
        log("filling the store toward the \(quota.bytes >> 10) KiB quota")
        fillStep(0, reclaimAfter: duration)
        startQuotaKeeper()
    }

    private func fillStep(_ step: Int, reclaimAfter duration: Int64) {
        let reclaim = { [self] in schedule(after: duration) { [self] in if quota.phase == .filling { quota.phase = .deleting } } }
        guard step < 64, !clientsStopped, let node = pickNode(), let member = node.member else { return reclaim() }
        quota.filled += 1
        var request = Etcdserverpb_InternalRaftRequest()
        request.put.key = Data("\(QuotaState.fillPrefix)\(quota.filled)".utf8)
        request.put.value = Data(repeating: UInt8(ascii: "f"), count: QuotaState.fillValueBytes)
        submit(request, on: member) { [self] result in
            if case .failure(let error as EtcdError) = result, error == .noSpace {
                quota.refusals += 1
                log("\(node.name) refused a fill put: \(error.message) (usage \(member.quotaUsageBytes >> 10) KiB)")
                return reclaim()
            }
            log("fill put \(step) on \(node.name): \(result.map { _ in "ok" }), usage \(member.quotaUsageBytes >> 10) KiB")
            schedule(after: random.int(5_000...50_000)) { [self] in fillStep(step + 1, reclaimAfter: duration) }
        }
    }

    /// One keeper per run, from the first fill to the end: every 300 ms it
    /// moves the reclaim along, defragments members over the threshold,
    /// and disarms NOSPACE wherever a member shows it. It stops once the
    /// clients have stopped and ten rounds in a row found nothing to do.
    private func startQuotaKeeper() {
        guard !quota.keeperRunning else { return }
        quota.keeperRunning = true
        schedule(after: 300_000) { [self] in keepQuota() }
    }

    private func keepQuota() {
        quota.keeperRounds += 1
        let next = { [self] in schedule(after: 300_000) { [self] in keepQuota() } }
        guard quota.keeperRounds < 2_000 else { return }
        if clientsStopped && quota.phase == .filling { quota.phase = .deleting }
        guard let node = pickNode(), let member = node.member else { return next() }
        switch quota.phase {
        case .idle, .filling:
            settleQuota(on: member, next: next)
        case .deleting:
            var request = Etcdserverpb_InternalRaftRequest()
            request.deleteRange.key = Data(QuotaState.fillPrefix.utf8)
            request.deleteRange.rangeEnd = Data("fill0".utf8)
            submit(request, on: member) { [self] result in
                if case .success(.deleteRange(let response)) = result {
                    log("filler deleted at revision \(response.header.revision)")
                    quota.phase = .compacting(revision: response.header.revision)
                } else {
                    log("deleting the filler through \(node.name): \(result)")
                }
                next()
            }
        case .compacting(let revision):
            var request = Etcdserverpb_InternalRaftRequest()
            request.compaction.revision = revision
            request.compaction.physical = true
            submit(request, on: member) { [self] result in
                switch result {
                case .success(.compaction):
                    compactedAt.insert(revision)
                    quota.phase = .settling
                    quota.cleanRounds = 0
                case .failure(let error as EtcdError) where error == .compacted:
                    quota.phase = .settling
                    quota.cleanRounds = 0
                default:
                    break
                }
                next()
            }
        case .settling:
            settleQuota(on: member, next: next)
        }
    }

    /// Defragments members over the threshold and disarms every NOSPACE
    /// shown; after ten quiet rounds a reclaim counts as done (and a new
    /// fill may start); after the clients stop, the keeper ends there.
    private func settleQuota(on member: Member, next: @escaping () -> Void) {
        var busy = false
        for node in liveNodes {
            guard let target = node.member, target.quotaUsageBytes > quota.defragThreshold else { continue }
            busy = true
            guard quota.phase == .settling || quota.phase == .idle, !quota.defragmenting.contains(node.id) else { continue }
            quota.defragmenting.insert(node.id)
            count("quota-defrag")
            log("\(node.name) defragments (usage \(target.quotaUsageBytes >> 10) KiB)")
            let id = node.id
            let done = SimThreadOnly { [self] (_: Result<Void, any Error>) in quota.defragmenting.remove(id) }
            target.submitDefragment { done.value($0) }
        }
        let shown = Set(liveNodes.flatMap { node in
            (node.member?.activeAlarms() ?? []).filter { $0.alarm == .nospace }.map(\.memberID)
        })
        if quota.phase != .filling {
            for id in shown.sorted() {
                log("disarming NOSPACE of \(String(id, radix: 16))")
                submit(Self.alarm(.deactivate, id), on: member) { _ in }
            }
        }
        quota.cleanRounds = busy || !shown.isEmpty ? 0 : quota.cleanRounds + 1
        if quota.phase == .settling && quota.cleanRounds >= 10 {
            quota.phase = .idle
            quota.cleared += 1
            log("quota reclaimed: every member under \(quota.defragThreshold >> 10) KiB, no NOSPACE shown")
        }
        if clientsStopped && quota.phase == .idle && quota.cleanRounds >= 10 {
            quota.keeperRunning = false
            return
        }
        next()
    }
}
