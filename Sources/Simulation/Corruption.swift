import EtcdProto
import EtcdServer
import Foundation
import PeerTransport

/// A corrupted member and etcd's corruption checks.
///
/// The leader runs `checkHashKV` (the periodic check) every check interval
/// for the whole run, and `checkCompactionHashes` (3.6's CompactHashCheck,
/// which compares the hashes members record as they compact) every interval
/// half an interval later, their hash questions travelling over the
/// simulated network. The compaction hash check is what catches a damaged
/// member once auto-compaction has compacted up to the last revision: then
/// the periodic check's question is answered "compacted". In some runs
/// one member is restarted with the `corruptPut` failpoint armed: the first
/// put it applies afterwards is stored damaged. From then on that member
/// takes no client requests and leaves the data checks (its reads, its
/// applied events and revisions, convergence), as a removed member does;
/// everything else is checked as before. Writes refused with `etcdserver:
/// corrupt cluster` once the alarm is raised are definite outcomes (not
/// applied). After the heal: a CORRUPT alarm without a corrupted member is a
/// false positive, and a corrupted member whose hash differs from the
/// others' at the same revision must have been caught.
extension SimWorld {
    func scheduleCorruptionChecks() {
        schedule(after: corruptCheckIntervalMicroseconds) { [self] in
            runCorruptionCheck()
            scheduleCorruptionChecks()
        }
    }

    private func runCorruptionCheck() {
        // A check cut short by a crash never completes; give up on it.
        if let started = hashCheckStartedAt, now - started < 20_000_000 { return }
        guard let leader, let member = leader.member else { return }
        hashCheckStartedAt = now
        report.hashChecks += 1
        let done = SimThreadOnly { [self] (result: Result<[CorruptionCheck.Fault], any Error>) in
            hashCheckStartedAt = nil
            if case .success(let faults) = result, !faults.isEmpty {
                log("\(leader.name)'s corruption check: \(faults.map { "\(String($0.memberID, radix: 16)): \($0.reason)" })")
            }
            // Called from inside the leader's loop (its read barrier): step
            // it again from an event of its own.
            schedule(after: 0) { [self] in settle(leader) }
        }
        member.checkHashKV { done.value($0) }
        settle(leader)
    }

    func scheduleCompactionHashChecks(after delay: Int64) {
        schedule(after: delay) { [self] in
            runCompactionHashCheck()
            scheduleCompactionHashChecks(after: corruptCheckIntervalMicroseconds)
        }
    }

    private func runCompactionHashCheck() {
        if let started = compactHashCheckStartedAt, now - started < 20_000_000 { return }
        guard let leader, let member = leader.member else { return }
        compactHashCheckStartedAt = now
        report.compactHashChecks += 1
        let done = SimThreadOnly { [self] (verdicts: [CorruptionCheck.CompactionVerdict]) in
            compactHashCheckStartedAt = nil
            for case .mismatch(let alarms, let minority) in verdicts {
                report.compactHashMismatches += 1
                log("\(leader.name)'s compaction hash check: mismatch \(minority.map { $0.members.map { String($0, radix: 16) } }), "
                    + "alarms for \(alarms.map { String($0, radix: 16) })")
            }
            // The alarm's proposal (if any) waits in the leader's mailbox.
            schedule(after: 0) { [self] in settle(leader) }
        }
        member.checkCompactionHashes { done.value($0) }
        settle(leader)
    }

    /// The member restarts with its next applied put corrupted.
    func corruptMember() {
        guard !clientsStopped, corruptVictim == nil, liveNodes.count >= 3, let victim = pickNode() else { return }
        count("corrupt-member")
        log("\(victim.name) restarts with its next applied put corrupted")
        crash(victim)
        victim.corrupted = true
        corruptVictim = victim
        let bug = options.bug == .localReads ? "bugLocalLinearizableReads=on;" : ""
        victim.config.failpoints = Failpoints(specification: bug + "corruptPut=on@1")
        start(victim)
    }

    /// `node` installs a snapshot of a corrupted member's backend: it is
    /// corrupted too from now on, and its watch streams move elsewhere.
    func spreadCorruption(to node: SimNode) {
        count("corruption-spread")
        log("\(node.name) installs a corrupted member's snapshot")
        node.corrupted = true
        streamsOfCrashed(node)
    }

    /// A hash question from `from` to `to`, answered by the peer's member
    /// after the link's delay, unless the link is cut or the peer down.
    func askHash(_ request: Data, from: UInt64, to: UInt64,
                 completion: @escaping @Sendable (Result<Data, any Error>) -> Void) {
        let reply = { [self] (result: Result<Data, any Error>, delay: Int64) in
            schedule(after: delay) { [self] in
                completion(result)
                if let asker = node(id: from) { settle(asker) }
            }
        }
        if faults.isBlocked(from, to) || faults.isBlocked(to, from) {
            return reply(.failure(PeerTransportError.timeout), 1_000_000)
        }
        func answer() {
            guard let target = node(id: to), let member = target.member else {
                return reply(.failure(PeerTransportError.connectionClosed), 1_000)
            }
            if now < target.pausedUntil {
                return queue.schedule(at: target.pausedUntil) { answer() }
            }
            let result = member.answerHashKV(request).mapError { PeerTransportError.rejected(reason: $0.reason) as any Error }
            reply(result, random.int(100...2_000) + (faults.slowSender[to] ?? 0))
        }
        schedule(after: random.int(100...2_000) + (faults.slowSender[from] ?? 0)) { answer() }
    }

    /// After the heal: no false alarm, and no missed corruption.
    func checkCorruptionDetection() {
        let members = liveNodes.filter { !$0.corrupted }.compactMap(\.member)
        func alarmed() -> Bool { members.contains { $0.activeAlarms().contains { $0.alarm == .corrupt } } }
        guard let victim = corruptVictim else {
            if alarmed() { violation("CORRUPT raised, but no member was corrupted: \(members.first?.activeAlarms() ?? [])") }
            return
        }
        guard !victim.removed, victim.member != nil, let reference = members.first else { return }
        // The victim catches up (it is left out of the convergence wait).
        run(until: now + 10_000_000) {
            victim.member.map { $0.raftStatus().appliedIndex >= reference.raftStatus().appliedIndex } ?? true
        }
        guard let damaged = victim.member else { return }
        let revision = reference.header().revision
        guard damaged.header().revision == revision,
              let expected = try? reference.hashKV(revision: revision).hash,
              let actual = try? damaged.hashKV(revision: revision).hash, expected != actual else {
            log("\(victim.name) cannot be told apart (revision \(damaged.header().revision) vs \(revision)); no detection expected")
            return
        }
        report.corruptionsToDetect += 1
        log("\(victim.name) diverged at revision \(revision): the check must catch it")
        let deadline = now + 10 * corruptCheckIntervalMicroseconds + 5_000_000
        run(until: deadline) { alarmed() && members.allSatisfy { $0.activeAlarms().contains { $0.alarm == .corrupt } } }
        if !alarmed() {
            let compacted = (try? reference.hashKV(revision: 0).compactRevision).map(String.init) ?? "?"
            violation("\(victim.name)'s corrupted data (hash \(String(actual, radix: 16)) vs \(String(expected, radix: 16)) at revision \(revision)) "
                + "was not detected (compacted to \(compacted))")
        }
    }
}
