import EtcdProto
import Foundation
import Logging

/// Auto-compaction's shell (`--auto-compaction-mode`,
/// `--auto-compaction-retention`): on every tick the loop asks its
/// `AutoCompactor` whether to compact, with the store's revision and
/// whether this member leads; a compaction is proposed as the KV Compact
/// RPC's is (an InternalRaftRequest with a `compaction`, queued in the
/// mailbox with a waiter and etcd's request timeout), applied by every
/// member, and its result handed back. The lines logged are etcd 3.5/3.6's.
///
/// Owner: the loop's thread — `check` runs in `iterate` and the waiter's
/// completion runs on the loop's thread too (or at once, inside `enqueue`,
/// when the member has stopped), never while `check` is running.
extension RaftLoop {
    func checkAutoCompaction(now: ContinuousClock.Instant) {
        guard let revision = autoCompactor?.check(now: now, revision: store.currentRevision, leading: isLeader),
              let compactor = autoCompactor else { return }
        let mode = Self.modeName(compactor.policy)
        let retention = compactor.retentionField
        logger.info("starting auto \(mode) compaction", metadata: ["revision": "\(revision)", "\(retention.name)": "\(retention.value)"])
        var request = Etcdserverpb_InternalRaftRequest()
        request.compaction.revision = revision
        let proposal: QueuedProposal
        do {
            proposal = try encoder.encode(.other(request))
        } catch {
            autoCompactionFinished(revision, .failure(error))
            return
        }
        mailbox.enqueue(proposal, deadline: now + requestTimeout) { [self] result in
            autoCompactionFinished(revision, result)
        }
    }

    private func autoCompactionFinished(_ revision: Int64, _ result: Result<ApplyResult, any Error>) {
        guard let compactor = autoCompactor, let started = compactor.inFlight?.started else { return }
        let now = environment.now()
        let outcome: AutoCompactor.Outcome
        switch result {
        case .success: outcome = .compacted
        case .failure(let error as EtcdError) where error == .compacted: outcome = .alreadyCompacted
        case .failure(let error): outcome = .failed("\(error)")
        }
        let mode = Self.modeName(compactor.policy)
        let retention = compactor.retentionField
        var metadata: Logger.Metadata = ["revision": "\(revision)", "\(retention.name)": "\(retention.value)"]
        if case .failure(let error as EtcdError) = result, error == .stopped {
            // Shutting down, as etcd stops its compactor: nothing to report.
        } else if case .failed(let error) = outcome {
            metadata["retry-interval"] = "\(GoDuration.string(compactor.checkInterval))"
            metadata["error"] = "\(error)"
            logger.warning("failed auto \(mode) compaction", metadata: metadata)
        } else {
            metadata["took"] = "\(GoDuration.string(now - started))"
            logger.info("completed auto \(mode) compaction", metadata: metadata)
            mailbox.publish { $0.autoCompactions += 1 }
        }
        autoCompactor?.finished(outcome, now: now, revision: store.currentRevision)
    }

    private static func modeName(_ policy: AutoCompactionPolicy) -> String {
        switch policy {
        case .periodic: return "periodic"
        case .revision: return "revision"
        }
    }
}
