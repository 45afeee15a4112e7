import Dispatch
import EtcdProto
import Foundation
import Locks
import Logging
import PeerTransport

/// etcd's corruption detection (`etcdserver/corrupt.go`):
///
/// - the initial check (`--experimental-initial-corrupt-check`, 3.6's
///   `--feature-gates=InitialCorruptCheck=true`): before a member with data
///   serves, it asks every peer for its HashKV at our revision and refuses
///   to start when one differs at the same compaction revision;
/// - the periodic check (`--experimental-corrupt-check-time`): every
///   interval the leader compares its HashKV with its followers' (the
///   rules are `CorruptionCheck`'s) and on a fault raises the CORRUPT
///   alarm through raft, with member id 0 as etcd does ("it isn't clear
///   which member's data is corrupted"); from then on every member's apply
///   refuses writes with `etcdserver: corrupt cluster` (`Applier`).
///
/// Peers are asked over the peer transport, one connection per question,
/// as etcd asks a peer's `/members/hashkv`; a member answers from any
/// thread but its event loops.
extension Member {
    // MARK: - Answering peers

    /// The answer to a peer's hash question: a marshaled HashKVResponse
    /// (the hash at the asked revision, our compaction revision, and our
    /// current revision in the header), or the error's text (etcd answers
    /// 400 with it; the asker looks for the compacted and future-revision
    /// texts).
    package func answerHashKV(_ request: Data) -> Result<Data, PeerRefusal> {
        guard let question = try? Etcdserverpb_HashKVRequest(serializedBytes: request) else {
            return .failure(PeerRefusal("error unmarshalling request"))
        }
        do {
            let hashed = try hashKV(revision: question.revision)
            var answer = Etcdserverpb_HashKVResponse()
            answer.header = header(revision: hashed.currentRevision)
            answer.hash = hashed.hash
            answer.compactRevision = hashed.compactRevision
            return .success(try answer.serializedData())
        } catch {
            return .failure(PeerRefusal("\(error)"))
        }
    }

    // MARK: - Asking peers

    /// A peer's answer, or why there is none.
    enum PeerHashOutcome: Sendable {
        case answered(CorruptionCheck.PeerHash)
        /// The peer has not reached the revision yet (etcd's ErrFutureRev).
        case peerBehind
        /// The revision is compacted on the peer: we are behind (ErrCompacted).
        case localBehind
        case failed(String)
    }

    /// Asks every other member for its HashKV at `revision`; `completion`
    /// gets the answers by member id (on any thread; at once without peers).
    func fetchPeerHashes(revision: Int64, completion: @escaping @Sendable ([(UInt64, PeerHashOutcome)]) -> Void) {
        let others = membership.members.filter { $0.id != memberID && !$0.peerURLs.isEmpty }.map(\.id)
        guard !others.isEmpty else { return completion([]) }
        var question = Etcdserverpb_HashKVRequest()
        question.revision = revision
        let request = (try? question.serializedData()) ?? Data()
        let gathered = Mutex<[(UInt64, PeerHashOutcome)]>([])
        let (logger, localID) = (self.logger, memberID)
        for id in others {
            peers.fetchHashKV(request, from: id, timeout: requestTimeout) { result in
                let outcome = Self.outcome(of: result, from: id)
                if case .failed(let reason) = outcome {
                    logger.warning("failed hash kv request", metadata: [
                        "local-member-id": "\(String(localID, radix: 16))", "requested-revision": "\(revision)",
                        "remote-peer-id": "\(String(id, radix: 16))", "error": "\(reason)"])
                }
                let all = gathered.withLock { answers -> [(UInt64, PeerHashOutcome)]? in
                    answers.append((id, outcome))
                    return answers.count == others.count ? answers.sorted { $0.0 < $1.0 } : nil
                }
                if let all { completion(all) }
            }
        }
    }

    private static func outcome(of result: Result<Data, any Error>, from id: UInt64) -> PeerHashOutcome {
        switch result {
        case .success(let data):
            guard let answer = try? Etcdserverpb_HashKVResponse(serializedBytes: data) else {
                return .failed("cannot decode the hash response")
            }
            return .answered(CorruptionCheck.PeerHash(memberID: id, hash: answer.hash, compactRevision: answer.compactRevision,
                                                      currentRevision: answer.header.revision))
        case .failure(let error):
            let text = "\(error)"
            if text.contains("required revision has been compacted") { return .localBehind }
            if text.contains("required revision is a future revision") { return .peerBehind }
            return .failed(text)
        }
    }

    /// Our HashKV now: the hash at the current revision.
    func localHash() throws -> CorruptionCheck.LocalHash {
        let hashed = try hashKV(revision: 0)
        return CorruptionCheck.LocalHash(hash: hashed.hash, revision: hashed.hashRevision, compactRevision: hashed.compactRevision)
    }

    // MARK: - The initial check

    /// Compares our HashKV with every peer's at our revision; throws etcd's
    /// "found data inconsistency with peers" when one differs at the same
    /// compaction revision. Peers that cannot answer are only warned about.
    func checkInitialHashKV() async throws {
        let id = String(memberID, radix: 16)
        logger.info("starting initial corruption check", metadata: [
            "local-member-id": "\(id)", "timeout": "\(requestTimeout)"])
        let local: CorruptionCheck.LocalHash
        do { local = try localHash() } catch { throw EtcdError(.dataLoss, "\(id) failed to fetch hash (\(error))") }
        let outcomes = await withCheckedContinuation { continuation in
            fetchPeerHashes(revision: local.revision) { continuation.resume(returning: $0) }
        }
        var answers: [CorruptionCheck.PeerHash] = []
        for (peer, outcome) in outcomes {
            var fields: Logger.Metadata = [
                "local-member-id": "\(id)", "local-member-revision": "\(local.revision)",
                "local-member-compact-revision": "\(local.compactRevision)", "local-member-hash": "\(local.hash)",
                "remote-peer-id": "\(String(peer, radix: 16))"]
            switch outcome {
            case .answered(let answer):
                answers.append(answer)
                fields["remote-peer-revision"] = "\(answer.currentRevision)"
                fields["remote-peer-compact-revision"] = "\(answer.compactRevision)"
                fields["remote-peer-hash"] = "\(answer.hash)"
                if answer.hash != local.hash {
                    logger.warning(answer.compactRevision == local.compactRevision
                                   ? "found different hash values from remote peer"
                                   : "found different compact revision values from remote peer", metadata: fields)
                }
            case .peerBehind: logger.warning("cannot fetch hash from slow remote peer", metadata: fields)
            case .localBehind: logger.warning("cannot fetch hash from remote peer; local member is behind", metadata: fields)
            case .failed: break
            }
        }
        if !CorruptionCheck.initialMismatches(local: local, peers: answers).isEmpty {
            throw EtcdError(.dataLoss, "\(id) found data inconsistency with peers")
        }
        logger.info("initial corruption checking passed; no corruption", metadata: ["local-member-id": "\(id)"])
    }

    // MARK: - The periodic check

    /// One pass of the leader's check: our hash, the peers' at our
    /// revision, a linearizable barrier, our hash again, then etcd's rules;
    /// on a fault the CORRUPT alarm is proposed. `completion` gets the
    /// faults found (on any thread; on the driving thread for manual-loop
    /// members, which is how the simulation runs it).
    package func checkHashKV(completion: @escaping @Sendable (Result<[CorruptionCheck.Fault], any Error>) -> Void) {
        let before: CorruptionCheck.LocalHash
        do { before = try localHash() } catch { return completion(.failure(error)) }
        fetchPeerHashes(revision: before.revision) { outcomes in
            self.readBarrier { barrier in
                // The loop's thread completes the barrier: hash elsewhere.
                self.offLoop {
                    completion(Result {
                        try barrier.get()
                        let answers = outcomes.compactMap { if case .answered(let answer) = $0.1 { answer } else { nil } }
                        let faults = CorruptionCheck.periodicFaults(leaderID: self.memberID, before: before,
                                                                    after: try self.localHash(), peers: answers)
                        self.report(faults, before: before, answers: answers)
                        return faults
                    })
                }
            }
        }
    }

    /// The async form of `checkHashKV(completion:)`.
    func checkHashKV() async throws -> [CorruptionCheck.Fault] {
        try await withCheckedThrowingContinuation { continuation in
            checkHashKV { continuation.resume(with: $0) }
        }
    }

    private func report(_ faults: [CorruptionCheck.Fault], before: CorruptionCheck.LocalHash, answers: [CorruptionCheck.PeerHash]) {
        for fault in faults {
            logger.warning("\(fault.reason)", metadata: [
                "leader-revision": "\(before.revision)", "leader-compact-revision": "\(before.compactRevision)",
                "leader-hash": "\(before.hash)", "member-id": "\(String(fault.memberID, radix: 16))"])
        }
        // As etcd 3.4.23+/3.5.7+: member id 0, the whole cluster.
        if !faults.isEmpty { raiseCorruptAlarm(member: 0) }
        logger.info("finished peer corruption check", metadata: ["number-of-peers-checked": "\(answers.count)"])
    }

    /// Runs `body` off the raft loop's thread (on it for manual-loop
    /// members: their owner drives everything on one thread).
    private func offLoop(_ body: @escaping @Sendable () -> Void) {
        if environment.manualLoop { body() } else { DispatchQueue.global().async(execute: body) }
    }

    // MARK: - The compaction hash check

    /// One pass of etcd 3.6's CompactHashCheck: the leader takes the hashes
    /// it recorded at its last compactions (`KVStore.compactionHashes`) not
    /// yet checked, newest first, and asks every peer for its hash at the
    /// same revision; answers for another previous compaction revision (or
    /// none) are skipped. When the hashes that answered differ it raises
    /// CORRUPT (for the members outside a majority, or member 0 without one)
    /// and stops; when every peer matched it remembers the revision and
    /// stops; otherwise it tries the next older hash. `completion` gets the
    /// verdicts in the order reached (on any thread; on the driving thread
    /// for manual-loop members).
    package func checkCompactionHashes(completion: @escaping @Sendable ([CorruptionCheck.CompactionVerdict]) -> Void) {
        let id = String(memberID, radix: 16)
        logger.info("starting compact hash check", metadata: ["local-member-id": "\(id)", "timeout": "\(requestTimeout)"])
        let hashes = CorruptionCheck.unchecked(store.compactionHashes.map {
            CorruptionCheck.CompactionHash(hash: $0.hash, revision: $0.revision, compactRevision: $0.compactRevision)
        }, after: corruptionMonitor.latestCompactionChecked)
        checkCompactionHashes(hashes[...], verdicts: []) { [logger] verdicts in
            logger.info("finished compaction hash check", metadata: ["number-of-hashes-checked": "\(hashes.count)"])
            completion(verdicts)
        }
    }

    private func checkCompactionHashes(_ hashes: ArraySlice<CorruptionCheck.CompactionHash>,
                                       verdicts: [CorruptionCheck.CompactionVerdict],
                                       done: @escaping @Sendable ([CorruptionCheck.CompactionVerdict]) -> Void) {
        guard let hash = hashes.first else { return done(verdicts) }
        fetchPeerHashes(revision: hash.revision) { outcomes in
            guard !outcomes.isEmpty else {
                return self.checkCompactionHashes(hashes.dropFirst(), verdicts: verdicts, done: done)
            }
            let answers = outcomes.map { outcome -> (id: UInt64, answer: CorruptionCheck.PeerHash?) in
                if case .answered(let answer) = outcome.1 { (outcome.0, answer) } else { (outcome.0, nil) }
            }
            let verdict = CorruptionCheck.compactionVerdict(leaderID: self.memberID, leader: hash, peers: answers)
            self.report(verdict, for: hash, answers: answers)
            if case .incomplete = verdict {
                return self.checkCompactionHashes(hashes.dropFirst(), verdicts: verdicts + [verdict], done: done)
            }
            done(verdicts + [verdict])
        }
    }

    private func report(_ verdict: CorruptionCheck.CompactionVerdict, for hash: CorruptionCheck.CompactionHash,
                        answers: [(id: UInt64, answer: CorruptionCheck.PeerHash?)]) {
        let leaderID = String(memberID, radix: 16)
        for (peer, answer) in answers where answer?.compactRevision != hash.compactRevision {
            let reason = answer.map {
                "the peer's CompactRevision \($0.compactRevision) doesn't match leader's CompactRevision \(hash.compactRevision)"
            } ?? "no response"
            logger.warning("Skipped peer's hash", metadata: [
                "number-of-peers": "\(answers.count)", "leader-id": "\(leaderID)",
                "peer-id": "\(String(peer, radix: 16))", "reason": "\(reason)"])
        }
        let fields: Logger.Metadata = ["revision": "\(hash.revision)", "compactRevision": "\(hash.compactRevision)"]
        switch verdict {
        case .consistent(let checked):
            logger.info("successfully checked hash on whole cluster",
                        metadata: fields.merging(["number-of-peers-checked": "\(checked)"]) { $1 })
            corruptionMonitor.markCompactionChecked(hash.revision)
        case .incomplete(let checked):
            logger.warning("skipped revision in compaction hash check; was not able to check all peers", metadata: fields.merging([
                "number-of-peers-checked": "\(checked)", "number-of-peers": "\(answers.count)"]) { $1 })
        case .mismatch(let alarmed, let minority):
            let leader: Logger.Metadata = [
                "leader-id": "\(leaderID)", "leader-revision": "\(hash.revision)",
                "leader-compact-revision": "\(hash.compactRevision)", "leader-hash": "\(hash.hash)"]
            if alarmed == [0] {
                logger.error("Detected compaction hash mismatch but cannot identify the corrupted members, so intentionally set the memberID as 0",
                             metadata: leader)
            }
            for group in minority {
                logger.error("Detected compaction hash mismatch", metadata: leader.merging([
                    "peer-hash": "\(group.hash)",
                    "peer-ids": "[\(group.members.map { String($0, radix: 16) }.joined(separator: ","))]"]) { $1 })
            }
            for member in alarmed { raiseCorruptAlarm(member: member) }
        }
    }

    /// Proposes the CORRUPT alarm for `member` (0: the whole cluster)
    /// unless it is active already.
    private func raiseCorruptAlarm(member: UInt64) {
        guard !alarms.isActive(.corrupt, member: member) else { return }
        var alarm = Etcdserverpb_InternalRaftRequest()
        alarm.alarm.action = .activate
        alarm.alarm.memberID = member
        alarm.alarm.alarm = .corrupt
        propose(.other(alarm), checking: {}, as: { $0 }) { _ in }
    }

    /// The async form of `checkCompactionHashes(completion:)`.
    func checkCompactionHashes() async -> [CorruptionCheck.CompactionVerdict] {
        await withCheckedContinuation { continuation in
            checkCompactionHashes { continuation.resume(returning: $0) }
        }
    }

    /// Starts etcd's `monitorCompactHash` (`CompactHashCheck`): every
    /// `--experimental-compact-hash-check-time` the member, when it leads,
    /// runs `checkCompactionHashes`. Not for manual-loop members (the
    /// simulation schedules the checks itself).
    func startCompactHashMonitor() {
        let interval = config.compactHashCheckTimeMilliseconds
        guard config.compactHashCheck, interval > 0, !environment.manualLoop else { return }
        logger.info("enabled compact hash check", metadata: [
            "local-member-id": "\(String(memberID, radix: 16))", "interval": "\(Duration.milliseconds(interval))"])
        whileLeading(every: interval) { member in _ = await member.checkCompactionHashes() }
    }

    /// Runs `check` every `milliseconds` while this member runs and leads,
    /// until it stops.
    private func whileLeading(every milliseconds: Int, _ check: @escaping @Sendable (Member) async -> Void) {
        corruptionMonitor.start { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(milliseconds))
                guard let self, !Task.isCancelled, !self.mailbox.isFinished else { return }
                guard self.raftStatus().leader == self.memberID else { continue }
                await check(self)
            }
        }
    }

    /// Starts etcd's `monitorKVHash`: every `--experimental-corrupt-check-time`
    /// the member, when it leads, runs `checkHashKV`. Not for manual-loop
    /// members (the simulation schedules the checks itself).
    func startCorruptionMonitor() {
        let interval = config.corruptCheckTimeMilliseconds
        guard interval > 0, !environment.manualLoop else { return }
        logger.info("enabled corruption checking", metadata: [
            "local-member-id": "\(String(memberID, radix: 16))", "interval": "\(Duration.milliseconds(interval))"])
        whileLeading(every: interval) { member in
            do { _ = try await member.checkHashKV() } catch {
                member.logger.warning("failed to check hash KV", metadata: ["error": "\(error)"])
            }
        }
    }
}

/// The leader's corruption checks' tasks (cancelled when the member
/// stops) and the compaction hash check's progress.
final class CorruptionMonitor: Sendable {
    private let tasks = Mutex<[Task<Void, Never>]>([])
    /// etcd's `latestRevisionChecked`: the newest compaction revision whose
    /// hash every peer matched.
    private let compactionChecked = Mutex<Int64>(0)

    func start(_ body: @escaping @Sendable () async -> Void) {
        tasks.withLock { $0.append(Task(operation: body)) }
    }

    func stop() {
        tasks.withLock { tasks in tasks.forEach { $0.cancel() } }
    }

    var latestCompactionChecked: Int64 { compactionChecked.withLock { $0 } }

    func markCompactionChecked(_ revision: Int64) {
        compactionChecked.withLock { $0 = max($0, revision) }
    }
}
