import FoundationEssentials

/// The role a node plays; raw values follow etcd's StateType.
public enum RaftRole: Int, Sendable, Hashable, CustomStringConvertible {
    case follower = 0
    case candidate = 1
    case leader = 2
    case preCandidate = 3

    public var description: String {
        switch self {
        case .follower: "StateFollower"
        case .candidate: "StateCandidate"
        case .leader: "StateLeader"
        case .preCandidate: "StatePreCandidate"
        }
    }
}

/// Volatile state worth reporting: who leads and what we are.
public struct SoftState: Sendable, Hashable {
    public var lead: NodeID
    public var role: RaftRole
}

/// Why an election is being started.
enum CampaignKind {
    /// Pre-vote round: asks whether an election could be won, term unchanged.
    case preElection
    /// Real election: bumps the term and votes for itself.
    case election
    /// Election on the leader's request (MsgTimeoutNow): overrides leases.
    case transfer
}

/// Size bookkeeping for a queued MsgApp being extended (see coalescing).
struct QueuedAppend {
    var position: Int
    var firstIndex: UInt64
    var lastIndex: UInt64
    var bytes: UInt64
}

/// Context value that marks a leader-transfer election in vote requests.
let campaignTransferContext = Data("CampaignTransfer".utf8)

/// The raft state machine. All input arrives through `step` and `tick`;
/// all output accumulates in `messages`, `readStates` and the log, and is
/// collected by `RawNode` into a `Ready`.
///
/// Message handling runs in two stages: `step` deals with terms (which are
/// the same for every role), then hands the message to the role's handler.
struct RaftCore {
    let id: NodeID
    var term: UInt64 = 0
    var vote: NodeID = noNode
    var readStates: [ReadState] = []
    var log: RaftLog
    let maxMsgSizeBytes: UInt64
    let maxUncommittedSizeBytes: UInt64
    var tracker: ProgressTracker
    var role: RaftRole = .follower
    /// True when this node is a learner in the current configuration.
    var isLearner = false
    /// Outgoing messages, drained by RawNode.
    var messages: [Message] = []
    var lead: NodeID = noNode
    /// Target of an ongoing leadership transfer, or `noNode`.
    var leadTransferee: NodeID = noNode
    /// Index of the latest conf change proposed by this leader; a new one is
    /// accepted only once this one is applied.
    var pendingConfIndex: UInt64 = 0
    /// Payload bytes appended by this leader and not yet committed.
    var uncommittedSizeBytes: UInt64 = 0
    var readOnly: ReadOnly
    /// Encoded size of the queued MsgApp that `coalesceIntoPendingAppend`
    /// last extended, per peer, so extending it again costs O(new entries).
    /// Identified by position in `messages` and its index range (a leader
    /// never has two different entries at one index in a term).
    private var queuedAppendSize: [NodeID: QueuedAppend] = [:]
    /// Read requests that arrived before this leader committed an entry of
    /// its own term; answered once it has.
    var pendingReadIndexMessages: [Message] = []

    /// Ticks since the last election timeout (follower/candidate) or since
    /// the last check-quorum round (leader).
    var electionElapsed = 0
    var heartbeatElapsed = 0
    let checkQuorum: Bool
    let preVote: Bool
    let heartbeatTimeout: Int
    let electionTimeout: Int
    /// Randomised in [electionTimeout, 2 * electionTimeout) at every reset.
    var randomizedElectionTimeout: Int
    let disableProposalForwarding: Bool
    let stepDownOnRemoval: Bool
    private var random: SplitMix64
    let codec: any ConfChangeCodec

    init(config c: Config) throws(RaftError) {
        try c.validate()
        id = c.id
        let maxCommitted = c.maxCommittedSizePerReadyBytes == 0 ? c.maxSizePerMsgBytes : c.maxCommittedSizePerReadyBytes
        log = RaftLog(storage: c.storage, maxCommittedBytesPerReady: maxCommitted)
        maxMsgSizeBytes = c.maxSizePerMsgBytes
        maxUncommittedSizeBytes = c.maxUncommittedEntriesSizeBytes == 0 ? .max : c.maxUncommittedEntriesSizeBytes
        tracker = ProgressTracker(maxInflight: c.maxInflightMsgs)
        readOnly = ReadOnly(option: c.readOnlyOption)
        checkQuorum = c.checkQuorum
        preVote = c.preVote
        heartbeatTimeout = c.heartbeatTick
        electionTimeout = c.electionTick
        randomizedElectionTimeout = c.electionTick
        disableProposalForwarding = c.disableProposalForwarding
        stepDownOnRemoval = c.stepDownOnRemoval
        random = SplitMix64(seed: c.randomSeed)
        codec = c.confChangeCodec

        let (hardState, confState) = try c.storage.initialState()
        let restored = try ConfChanger.restore(confState, tracker: tracker, lastIndex: log.lastIndex)
        let applied = switchToConfig(restored.config, restored.progress)
        precondition(applied.isEquivalent(to: confState), "restored conf state \(applied) differs from \(confState)")
        if !hardState.isEmpty { loadState(hardState) }
        if c.applied > 0 { log.applied(to: c.applied) }
        becomeFollower(term: term, lead: noNode)
    }

    private mutating func loadState(_ state: HardState) {
        precondition(state.commit >= log.committed && state.commit <= log.lastIndex,
                     "\(id) state.commit \(state.commit) is out of range [\(log.committed), \(log.lastIndex)]")
        log.committed = state.commit
        term = state.term
        vote = state.vote
    }

    var softState: SoftState { SoftState(lead: lead, role: role) }
    var hardState: HardState { HardState(term: term, vote: vote, commit: log.committed) }

    /// Whether this node may become leader: a voter without a pending snapshot.
    var isPromotable: Bool {
        guard let pr = tracker[id] else { return false }
        return !pr.isLearner && !log.hasPendingSnapshot
    }

    var pastElectionTimeout: Bool { electionElapsed >= randomizedElectionTimeout }

    private mutating func resetRandomizedElectionTimeout() {
        randomizedElectionTimeout = electionTimeout + Int.random(in: 0..<electionTimeout, using: &random)
    }

    // MARK: sending

    /// Queues a message, stamping sender and (for non-local requests) term.
    /// A sender already set is kept: a forwarded MsgTransferLeader names the
    /// transferee there, not the node that forwards it.
    mutating func send(_ message: Message) {
        var m = message
        if m.from == noNode { m.from = id }
        switch m.type {
        case .msgVote, .msgVoteResp, .msgPreVote, .msgPreVoteResp:
            // Vote traffic carries the term it is about, which may differ
            // from ours (pre-votes ask about term + 1).
            precondition(m.term != 0, "term should be set when sending \(m.type)")
        default:
            precondition(m.term == 0, "term should not be set when sending \(m.type) (was \(m.term))")
            // Forwarded proposals and read requests travel without a term so
            // that the leader treats them as local.
            if m.type != .msgProp && m.type != .msgReadIndex { m.term = term }
        }
        messages.append(m)
    }

    mutating func sendAppend(to peer: NodeID) { _ = maybeSendAppend(to: peer, sendIfEmpty: true) }

    /// Sends entries (or a snapshot, if they are compacted) to `peer`.
    /// Returns whether a message was sent.
    @discardableResult
    mutating func maybeSendAppend(to peer: NodeID, sendIfEmpty: Bool) -> Bool {
        // Read fields, never hold a copy of the Progress: a live copy would
        // make the in-place updates below copy its inflight buffer.
        guard tracker.progress.contains(peer), !tracker[existing: peer].isPaused else { return false }
        let next = tracker[existing: peer].next
        let state = tracker[existing: peer].state
        // Fast path: the new entries are still in the unstable tail and can
        // extend a queued MsgApp without materialising an array.
        if state == .replicate, next >= log.unstable.offset, let last = log.unstable.lastIndexIfKnown, next <= last,
           coalesceIntoPendingAppend(to: peer, log.unstable.slice(next, last + 1)) {
            return true
        }
        let prevIndex = next - 1
        let prevTerm: UInt64
        let entries: [Entry]
        do {
            prevTerm = try log.term(prevIndex)
            entries = try log.entries(from: next, maxSizeBytes: maxMsgSizeBytes)
        } catch {
            return sendSnapshot(to: peer)
        }
        if entries.isEmpty && !sendIfEmpty { return false }
        if let last = entries.last?.index {
            switch state {
            case .replicate:
                tracker[existing: peer].optimisticUpdate(last)
                tracker[existing: peer].inflights.add(last)
            case .probe:
                tracker[existing: peer].probeSent = true
            case .snapshot:
                preconditionFailure("\(id) is sending append in unhandled state snapshot")
            }
        }
        send(Message(type: .msgApp, to: peer, logTerm: prevTerm, index: prevIndex, entries: entries, commit: log.committed))
        return true
    }

    /// Many proposals stepped between two Readys would each produce one
    /// MsgApp per follower. When the previous MsgApp to `peer` is still
    /// queued (not yet handed out) and `entries` continue it, extend that
    /// message instead, within the size limit. The inflight slot it holds
    /// moves to the new last index, so flow control is unchanged.
    private mutating func coalesceIntoPendingAppend(to peer: NodeID, _ entries: ArraySlice<Entry>) -> Bool {
        guard let first = entries.first, let last = entries.last else { return false }
        // broadcastAppend queues one message per peer, so the previous
        // MsgApp to this peer, if any, is among the last few.
        var k = messages.count - 1
        let stop = max(0, messages.count - tracker.ids.count - 1)
        while k >= stop {
            if messages[k].to == peer { break }
            k -= 1
        }
        guard k >= stop, messages[k].type == .msgApp, messages[k].term == term,
              let queuedLast = messages[k].entries.last, queuedLast.index + 1 == first.index,
              tracker[existing: peer].inflights.last == queuedLast.index
        else { return false }
        // (No local copy of the queued entries array: holding one would make
        // the append below copy it.)
        let queuedFirst = messages[k].entries[0].index
        var size: UInt64
        if let c = queuedAppendSize[peer], c.position == k, c.firstIndex == queuedFirst, c.lastIndex == queuedLast.index {
            size = c.bytes
        } else {
            size = 0
            for e in messages[k].entries { size += e.approximateEncodedSize }
        }
        for e in entries { size += e.approximateEncodedSize }
        guard size <= maxMsgSizeBytes else { return false }
        queuedAppendSize[peer] = QueuedAppend(position: k, firstIndex: queuedFirst, lastIndex: last.index, bytes: size)
        messages[k].entries.append(contentsOf: entries)
        messages[k].commit = log.committed
        tracker[existing: peer].optimisticUpdate(last.index)
        tracker[existing: peer].inflights.replaceLast(last.index)
        return true
    }

    private mutating func sendSnapshot(to peer: NodeID) -> Bool {
        guard tracker[existing: peer].recentActive else { return false }
        let snapshot: Snapshot
        do {
            snapshot = try log.snapshot()
        } catch {
            if error == .snapshotTemporarilyUnavailable { return false }
            preconditionFailure("unexpected error getting snapshot: \(error)")
        }
        precondition(!snapshot.isEmpty, "need non-empty snapshot")
        tracker[existing: peer].becomeSnapshot(snapshot.metadata.index)
        send(Message(type: .msgSnap, to: peer, snapshot: snapshot))
        return true
    }

    mutating func sendHeartbeat(to peer: NodeID, context: Data) {
        // Never advance a follower's commit past what it is known to have:
        // it might not have those entries yet.
        let commit = min(tracker[existing: peer].match, log.committed)
        send(Message(type: .msgHeartbeat, to: peer, commit: commit, context: context))
    }

    mutating func broadcastAppend() {
        for peer in tracker.ids where peer != id { sendAppend(to: peer) }
    }

    mutating func broadcastHeartbeat() {
        broadcastHeartbeat(context: readOnly.lastPendingRequestContext ?? Data())
    }

    mutating func broadcastHeartbeat(context: Data) {
        for peer in tracker.ids where peer != id { sendHeartbeat(to: peer, context: context) }
    }

    mutating func sendTimeoutNow(to peer: NodeID) {
        send(Message(type: .msgTimeoutNow, to: peer))
    }

    // MARK: state transitions

    private mutating func reset(term newTerm: UInt64) {
        if term != newTerm {
            term = newTerm
            vote = noNode
        }
        lead = noNode
        electionElapsed = 0
        heartbeatElapsed = 0
        resetRandomizedElectionTimeout()
        abortLeaderTransfer()
        tracker.resetVotes()
        let lastIndex = log.lastIndex
        var fresh = ProgressMap()
        for (peer, old) in tracker.progress {
            var pr = Progress(next: lastIndex + 1, maxInflight: tracker.maxInflight, isLearner: old.isLearner)
            if peer == id {
                pr.match = lastIndex
                pr.recentActive = true
            }
            fresh[peer] = pr
        }
        tracker.setProgress(fresh)
        pendingConfIndex = 0
        uncommittedSizeBytes = 0
        readOnly = ReadOnly(option: readOnly.option)
        pendingReadIndexMessages.removeAll()
    }

    mutating func becomeFollower(term newTerm: UInt64, lead newLead: NodeID) {
        reset(term: newTerm)
        lead = newLead
        role = .follower
    }

    mutating func becomeCandidate() {
        precondition(role != .leader, "invalid transition [leader -> candidate]")
        reset(term: term + 1)
        vote = id
        role = .candidate
    }

    mutating func becomePreCandidate() {
        precondition(role != .leader, "invalid transition [leader -> pre-candidate]")
        // Term and vote stay: a pre-vote changes nothing durable.
        tracker.resetVotes()
        lead = noNode
        role = .preCandidate
    }

    mutating func becomeLeader() {
        precondition(role != .follower, "invalid transition [follower -> leader]")
        reset(term: term)
        lead = id
        role = .leader
        tracker[existing: id].becomeReplicate()
        // Conf changes in the log tail may be uncommitted; treat the last
        // index as pending so no second change is proposed before it applies.
        pendingConfIndex = log.lastIndex
        // An empty entry of the new term lets the leader commit everything
        // before it (§5.4.2) and learn the commit index quickly.
        let appended = appendEntries([Entry()])
        precondition(appended, "empty entry was dropped")
    }

    /// Appends entries proposed to this leader. Returns false when the
    /// uncommitted-size budget refuses them.
    @discardableResult
    mutating func appendEntries(_ entries: [Entry]) -> Bool {
        guard increaseUncommittedSize(entries) else { return false }
        let newLast = log.appendAsLeader(entries, term: term)
        _ = tracker[existing: id].maybeUpdate(newLast)
        _ = maybeCommit()
        return true
    }

    private mutating func increaseUncommittedSize(_ entries: [Entry]) -> Bool {
        var size: UInt64 = 0
        for e in entries { size += e.payloadSize }
        if uncommittedSizeBytes > 0 && size > 0 && uncommittedSizeBytes + size > maxUncommittedSizeBytes {
            return false
        }
        uncommittedSizeBytes += size
        return true
    }

    mutating func reduceUncommittedSize(_ entries: [Entry]) {
        guard uncommittedSizeBytes > 0 else { return }
        var size: UInt64 = 0
        for e in entries { size += e.payloadSize }
        uncommittedSizeBytes = size > uncommittedSizeBytes ? 0 : uncommittedSizeBytes - size
    }

    /// Advances the commit index to what a quorum has; true if it moved.
    mutating func maybeCommit() -> Bool {
        log.maybeCommit(index: tracker.committed(), term: term)
    }

    mutating func abortLeaderTransfer() { leadTransferee = noNode }

    // MARK: ticks

    mutating func tick() {
        if role == .leader { tickHeartbeat() } else { tickElection() }
    }

    private mutating func tickElection() {
        electionElapsed += 1
        if isPromotable && pastElectionTimeout {
            electionElapsed = 0
            _ = try? step(Message(type: .msgHup, from: id))
        }
    }

    private mutating func tickHeartbeat() {
        heartbeatElapsed += 1
        electionElapsed += 1
        if electionElapsed >= electionTimeout {
            electionElapsed = 0
            if checkQuorum { _ = try? step(Message(type: .msgCheckQuorum, from: id)) }
            // A transfer that has not finished within an election timeout is abandoned.
            if role == .leader && leadTransferee != noNode { abortLeaderTransfer() }
        }
        guard role == .leader else { return }
        if heartbeatElapsed >= heartbeatTimeout {
            heartbeatElapsed = 0
            _ = try? step(Message(type: .msgBeat, from: id))
        }
    }

    // MARK: elections

    /// Starts an election unless this node cannot or should not.
    mutating func hup(_ kind: CampaignKind) {
        if role == .leader { return }
        guard isPromotable else { return }
        // Applying a committed conf change could make us unpromotable; wait.
        if log.committed > log.applied && hasUnappliedConfChange { return }
        campaign(kind)
    }

    private var hasUnappliedConfChange: Bool {
        guard let ents = try? log.slice(log.applied + 1, log.committed + 1, maxSizeBytes: .max) else { return false }
        return ents.contains { $0.isConfChange }
    }

    mutating func campaign(_ kind: CampaignKind) {
        guard isPromotable else { return }
        let voteType: MessageType
        let voteTerm: UInt64
        if kind == .preElection {
            becomePreCandidate()
            voteType = .msgPreVote
            // Ask about the term we would use, without moving to it.
            voteTerm = term + 1
        } else {
            becomeCandidate()
            voteType = .msgVote
            voteTerm = term
        }
        if poll(from: id, type: voteType.voteResponse, granted: true) == .won {
            // Single-voter cluster: we won on our own vote.
            if kind == .preElection { campaign(.election) } else { becomeLeader() }
            return
        }
        let context = kind == .transfer ? campaignTransferContext : Data()
        let lastIndex = log.lastIndex
        let lastTerm = log.lastTerm
        for peer in tracker.voterIDs where peer != id {
            send(Message(type: voteType, to: peer, term: voteTerm, logTerm: lastTerm, index: lastIndex, context: context))
        }
    }

    private mutating func poll(from peer: NodeID, type: MessageType, granted: Bool) -> VoteResult {
        tracker.recordVote(peer, granted: granted)
        return tracker.tallyVotes().result
    }

    // MARK: step

    /// Processes one message. Throws `.proposalDropped` for proposals that
    /// cannot be accepted.
    mutating func step(_ m: Message) throws(RaftError) {
        if m.term == 0 {
            // Local message.
        } else if m.term > term {
            if m.type == .msgVote || m.type == .msgPreVote {
                let force = m.context == campaignTransferContext
                // Leader lease: with check-quorum on, a node that heard from a
                // leader within the election timeout ignores votes, so a
                // partitioned node cannot depose a healthy leader.
                let inLease = checkQuorum && lead != noNode && electionElapsed < electionTimeout
                if !force && inLease { return }
            }
            switch m.type {
            case .msgPreVote:
                break  // a pre-vote never changes our term
            case .msgPreVoteResp where !m.reject:
                break  // we move to the new term only when we win the pre-vote
            default:
                if m.type == .msgApp || m.type == .msgHeartbeat || m.type == .msgSnap {
                    becomeFollower(term: m.term, lead: m.from)
                } else {
                    becomeFollower(term: m.term, lead: noNode)
                }
            }
        } else if m.term < term {
            if m.type == .msgHeartbeat || m.type == .msgApp {
                // A stale leader is told our term so that it steps down, as
                // in the paper. (etcd replies only with check-quorum or
                // pre-vote on and otherwise relies on our vote requests
                // reaching the leader; they do not if our — possibly stale —
                // configuration does not list it as a voter, and the cluster
                // stalls. The randomized simulation found that case.)
                send(Message(type: .msgAppResp, to: m.from))
            } else if m.type == .msgPreVote || m.type == .msgVote {
                // Reject with our term so the candidate catches up (etcd
                // answers only pre-votes; a candidate whose configuration
                // differs from ours may otherwise never hear our term).
                send(Message(type: m.type.voteResponse, to: m.from, term: term, reject: true))
            }
            return
        }

        switch m.type {
        case .msgHup:
            hup(preVote ? .preElection : .election)
        case .msgVote, .msgPreVote:
            handleVoteRequest(m)
        default:
            switch role {
            case .follower: try stepFollower(m)
            case .candidate, .preCandidate: try stepCandidate(m)
            case .leader: try stepLeader(m)
            }
        }
    }

    private mutating func handleVoteRequest(_ m: Message) {
        // We can vote if we already voted for this node (a repeat), if we
        // have no vote and no leader this term, or for a pre-vote of a
        // future term.
        let canVote = vote == m.from || (vote == noNode && lead == noNode) || (m.type == .msgPreVote && m.term > term)
        if canVote && log.isUpToDate(lastIndex: m.index, term: m.logTerm) {
            // Reply with the request's term: for a pre-vote that is a future
            // term and the candidate must recognise the reply as current.
            send(Message(type: m.type.voteResponse, to: m.from, term: m.term))
            if m.type == .msgVote {
                electionElapsed = 0
                vote = m.from
            }
        } else {
            send(Message(type: m.type.voteResponse, to: m.from, term: term, reject: true))
        }
    }
}
