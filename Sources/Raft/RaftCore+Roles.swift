import FoundationEssentials

// Per-role message handlers. `step` has already dealt with terms.
extension RaftCore {
    mutating func stepLeader(_ m: Message) throws(RaftError) {
        switch m.type {
        case .msgBeat:
            broadcastHeartbeat()
            return
        case .msgCheckQuorum:
            tracker[id]?.recentActive = true
            if !tracker.quorumActive() {
                becomeFollower(term: term, lead: noNode)
            }
            for peer in tracker.ids where peer != id { tracker[existing: peer].recentActive = false }
            return
        case .msgProp:
            try handleProposal(m)
            return
        case .msgReadIndex:
            handleReadIndexAsLeader(m)
            return
        default:
            break
        }

        // Everything else is a response from (or about) a peer.
        guard tracker[m.from] != nil else { return }
        switch m.type {
        case .msgAppResp:
            handleAppendResponse(m)
        case .msgHeartbeatResp:
            handleHeartbeatResponse(m)
        case .msgSnapStatus:
            guard tracker[existing: m.from].state == .snapshot else { return }
            if m.reject { tracker[existing: m.from].pendingSnapshot = 0 }
            // Either way probe next; wait for a heartbeat response before
            // sending, as the follower may still be applying the snapshot.
            tracker[existing: m.from].becomeProbe()
            tracker[existing: m.from].probeSent = true
        case .msgUnreachable:
            // Optimistic sending is pointless while the peer is unreachable.
            if tracker[existing: m.from].state == .replicate { tracker[existing: m.from].becomeProbe() }
        case .msgTransferLeader:
            handleTransferLeader(m)
        default:
            break
        }
    }

    private mutating func handleProposal(_ m: Message) throws(RaftError) {
        precondition(!m.entries.isEmpty, "\(id) stepped empty MsgProp")
        // A leader that removed itself keeps leading until it steps down but
        // takes no new work; so does one that is handing over leadership.
        if tracker[id] == nil || leadTransferee != noNode { throw .proposalDropped }
        var entries = m.entries
        for i in entries.indices where entries[i].isConfChange {
            guard let cc = try? codec.decode(entries[i]) else {
                entries[i] = Entry()
                continue
            }
            let alreadyPending = pendingConfIndex > log.applied
            let alreadyJoint = tracker.config.voters.isJoint
            let wantsLeaveJoint = cc.asV2.changes.isEmpty
            if alreadyPending || (alreadyJoint && !wantsLeaveJoint) || (!alreadyJoint && wantsLeaveJoint) {
                // Refused: keep the slot (callers may count entries) but make
                // it a no-op.
                entries[i] = Entry()
            } else {
                pendingConfIndex = log.lastIndex + UInt64(i) + 1
            }
        }
        guard appendEntries(entries) else { throw .proposalDropped }
        broadcastAppend()
    }

    private mutating func handleAppendResponse(_ m: Message) {
        let peer = m.from
        tracker[existing: peer].recentActive = true
        if m.reject {
            // Fast back-off: the follower told us the last index where its
            // term is <= the term we sent; skip everything our log says
            // cannot match there.
            var matchHint = m.rejectHint
            if m.logTerm > 0 {
                matchHint = log.findConflictByTerm(index: m.rejectHint, term: m.logTerm).index
            }
            if tracker[existing: peer].maybeDecrement(rejected: m.index, matchHint: matchHint) {
                if tracker[existing: peer].state == .replicate { tracker[existing: peer].becomeProbe() }
                sendAppend(to: peer)
            }
            return
        }
        let wasPaused = tracker[existing: peer].isPaused
        guard tracker[existing: peer].maybeUpdate(m.index) else { return }
        switch tracker[existing: peer].state {
        case .probe:
            tracker[existing: peer].becomeReplicate()
        case .snapshot where tracker[existing: peer].match >= tracker[existing: peer].pendingSnapshot:
            // The follower caught up past the snapshot: resume normal replication.
            tracker[existing: peer].becomeProbe()
            tracker[existing: peer].becomeReplicate()
        case .replicate:
            tracker[existing: peer].inflights.freeLE(m.index)
        case .snapshot:
            break
        }
        if maybeCommit() {
            releasePendingReadIndexMessages()
            broadcastAppend()
        } else if wasPaused {
            // It was paused and may be able to take more now.
            sendAppend(to: peer)
        }
        // Keep streaming while the window and the size limit allow.
        while maybeSendAppend(to: peer, sendIfEmpty: false) {}
        if peer == leadTransferee && tracker[existing: peer].match == log.lastIndex {
            sendTimeoutNow(to: peer)
        }
    }

    private mutating func handleHeartbeatResponse(_ m: Message) {
        let peer = m.from
        tracker[existing: peer].recentActive = true
        tracker[existing: peer].probeSent = false
        // A full window probably lost a message: free one slot so the next
        // MsgApp can go out.
        if tracker[existing: peer].state == .replicate && tracker[existing: peer].inflights.isFull {
            tracker[existing: peer].inflights.freeFirstOne()
        }
        if tracker[existing: peer].match < log.lastIndex { sendAppend(to: peer) }

        guard readOnly.option == .safe, !m.context.isEmpty,
              let acks = readOnly.receiveAck(from: peer, context: m.context),
              tracker.config.voters.voteResult(acks) == .won
        else { return }
        for rs in readOnly.advance(through: m.context) {
            respondToReadIndex(rs.request, index: rs.index)
        }
    }

    private mutating func handleTransferLeader(_ m: Message) {
        let transferee = m.from
        if tracker[existing: transferee].isLearner { return }
        if leadTransferee != noNode {
            if leadTransferee == transferee { return }  // already in progress
            abortLeaderTransfer()
        }
        if transferee == id { return }
        // The transfer must finish within an election timeout.
        electionElapsed = 0
        leadTransferee = transferee
        if tracker[existing: transferee].match == log.lastIndex {
            sendTimeoutNow(to: transferee)
        } else {
            sendAppend(to: transferee)
        }
    }

    // MARK: read index

    private var committedEntryInCurrentTerm: Bool {
        log.termOrZero(log.committed) == term
    }

    private mutating func handleReadIndexAsLeader(_ m: Message) {
        if tracker.isSingleton {
            respondToReadIndex(m, index: log.committed)
            return
        }
        // Until the leader has committed an entry of its term it does not
        // know the true commit index (§6.4 of the thesis); hold the request.
        guard committedEntryInCurrentTerm else {
            pendingReadIndexMessages.append(m)
            return
        }
        serveReadIndex(m)
    }

    private mutating func serveReadIndex(_ m: Message) {
        switch readOnly.option {
        case .safe:
            let ctx = m.entries[0].data
            readOnly.addRequest(index: log.committed, message: m)
            _ = readOnly.receiveAck(from: id, context: ctx)
            broadcastHeartbeat(context: ctx)
        case .leaseBased:
            respondToReadIndex(m, index: log.committed)
        }
    }

    private mutating func releasePendingReadIndexMessages() {
        guard !pendingReadIndexMessages.isEmpty, committedEntryInCurrentTerm else { return }
        let held = pendingReadIndexMessages
        pendingReadIndexMessages.removeAll()
        for m in held { serveReadIndex(m) }
    }

    /// Local requests become a ReadState; forwarded ones get a response.
    private mutating func respondToReadIndex(_ request: Message, index: UInt64) {
        if request.from == noNode || request.from == id {
            readStates.append(ReadState(index: index, requestContext: request.entries[0].data))
        } else {
            send(Message(type: .msgReadIndexResp, to: request.from, index: index, entries: request.entries))
        }
    }

    // MARK: candidate and follower

    mutating func stepCandidate(_ m: Message) throws(RaftError) {
        let myVoteResponse: MessageType = role == .preCandidate ? .msgPreVoteResp : .msgVoteResp
        switch m.type {
        case .msgProp:
            throw .proposalDropped
        case .msgApp:
            becomeFollower(term: m.term, lead: m.from)
            handleAppendEntries(m)
        case .msgHeartbeat:
            becomeFollower(term: m.term, lead: m.from)
            handleHeartbeat(m)
        case .msgSnap:
            becomeFollower(term: m.term, lead: m.from)
            handleSnapshot(m)
        case myVoteResponse:
            tracker.recordVote(m.from, granted: !m.reject)
            switch tracker.tallyVotes().result {
            case .won:
                if role == .preCandidate {
                    campaign(.election)
                } else {
                    becomeLeader()
                    broadcastAppend()
                }
            case .lost:
                // Wait out a fresh election timeout as a follower.
                becomeFollower(term: term, lead: noNode)
            case .pending:
                break
            }
        default:
            break  // MsgTimeoutNow and the rest are ignored
        }
    }

    mutating func stepFollower(_ m: Message) throws(RaftError) {
        switch m.type {
        case .msgProp:
            if lead == noNode || disableProposalForwarding { throw .proposalDropped }
            var fwd = m
            fwd.to = lead
            send(fwd)
        case .msgApp:
            electionElapsed = 0
            lead = m.from
            handleAppendEntries(m)
        case .msgHeartbeat:
            electionElapsed = 0
            lead = m.from
            handleHeartbeat(m)
        case .msgSnap:
            electionElapsed = 0
            lead = m.from
            handleSnapshot(m)
        case .msgTransferLeader:
            guard lead != noNode else { return }
            var fwd = m
            fwd.to = lead
            send(fwd)
        case .msgTimeoutNow:
            // The leader asked us to take over: campaign at once, even
            // through leases and without a pre-vote.
            hup(.transfer)
        case .msgReadIndex:
            guard lead != noNode else { return }
            var fwd = m
            fwd.to = lead
            send(fwd)
        case .msgReadIndexResp:
            guard m.entries.count == 1 else { return }
            readStates.append(ReadState(index: m.index, requestContext: m.entries[0].data))
        default:
            break
        }
    }

    mutating func handleAppendEntries(_ m: Message) {
        if m.index < log.committed {
            // Everything up to our commit index already matches.
            send(Message(type: .msgAppResp, to: m.from, index: log.committed))
            return
        }
        if let lastNew = log.maybeAppend(index: m.index, logTerm: m.logTerm, committed: m.commit, entries: m.entries) {
            send(Message(type: .msgAppResp, to: m.from, index: lastNew))
            return
        }
        // Log mismatch at m.index. Hint the leader at the last index whose
        // term is <= m.logTerm: entries above it cannot match.
        let hint = log.findConflictByTerm(index: min(m.index, log.lastIndex), term: m.logTerm)
        send(Message(type: .msgAppResp, to: m.from, logTerm: hint.term, index: m.index, reject: true, rejectHint: hint.index))
    }

    mutating func handleHeartbeat(_ m: Message) {
        log.commit(to: m.commit)
        send(Message(type: .msgHeartbeatResp, to: m.from, context: m.context))
    }

    mutating func handleSnapshot(_ m: Message) {
        guard let snapshot = m.snapshot else { return }
        if restore(snapshot) {
            send(Message(type: .msgAppResp, to: m.from, index: log.lastIndex))
        } else {
            send(Message(type: .msgAppResp, to: m.from, index: log.committed))
        }
    }

    /// Installs a snapshot from the leader. Returns false if it is stale or
    /// already covered by our log (in which case we just fast-forward commit).
    mutating func restore(_ snapshot: Snapshot) -> Bool {
        let meta = snapshot.metadata
        if meta.index <= log.committed { return false }
        if role != .follower {
            // Never expected; refuse rather than corrupt state.
            becomeFollower(term: term + 1, lead: noNode)
            return false
        }
        let cs = meta.confState
        guard cs.voters.contains(id) || cs.learners.contains(id) || cs.votersOutgoing.contains(id) else {
            return false
        }
        if log.matchTerm(meta.index, meta.term) {
            log.commit(to: meta.index)
            return false
        }
        log.restore(snapshot)
        tracker = ProgressTracker(maxInflight: tracker.maxInflight)
        let restored: ConfChanger.Result
        do {
            restored = try ConfChanger.restore(cs, tracker: tracker, lastIndex: log.lastIndex)
        } catch {
            preconditionFailure("unable to restore config \(cs): \(error)")
        }
        let applied = switchToConfig(restored.config, restored.progress)
        precondition(applied.isEquivalent(to: cs), "restored conf state \(applied) differs from \(cs)")
        let next = tracker[existing: id].next
        _ = tracker[existing: id].maybeUpdate(next - 1)
        return true
    }

    // MARK: membership

    /// Applies a committed conf change and returns the new membership.
    mutating func applyConfChange(_ cc: ConfChangeV2) throws(RaftError) -> ConfState {
        let changer = ConfChanger(tracker: tracker, lastIndex: log.lastIndex)
        let result: ConfChanger.Result
        if cc.isLeaveJoint {
            result = try changer.leaveJoint()
        } else if case let (autoLeave, true) = cc.enterJoint {
            result = try changer.enterJoint(autoLeave: autoLeave, cc.changes)
        } else {
            result = try changer.simple(cc.changes)
        }
        return switchToConfig(result.config, result.progress)
    }

    mutating func switchToConfig(_ config: TrackerConfig, _ progress: ProgressMap) -> ConfState {
        tracker.config = config
        tracker.setProgress(progress)
        let cs = tracker.confState
        let me = tracker[id]
        isLearner = me?.isLearner ?? false
        if (me == nil || isLearner) && role == .leader {
            // Removed or demoted leader.
            if stepDownOnRemoval { becomeFollower(term: term, lead: noNode) }
            return cs
        }
        guard role == .leader, !cs.voters.isEmpty else { return cs }
        // The quorum changed: the commit index may move, and new members
        // need their first MsgApp.
        if maybeCommit() {
            broadcastAppend()
        } else {
            for peer in tracker.ids where peer != id { maybeSendAppend(to: peer, sendIfEmpty: false) }
        }
        if leadTransferee != noNode && !tracker.config.voters.allIDs.contains(leadTransferee) {
            abortLeaderTransfer()
        }
        return cs
    }
}
