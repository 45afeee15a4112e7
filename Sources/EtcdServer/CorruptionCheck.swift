/// etcd's rules for comparing KV hashes between members
/// (`etcdserver/corrupt.go`), without I/O: the member gathers the hashes
/// (`Member+Corruption.swift`) and these decide.
///
/// A HashKV is comparable only between members whose compaction revision
/// is the same: a compaction drops history from the hash. Within that, the
/// hash at one revision is a function of the history up to it, so a
/// difference is corruption.
package enum CorruptionCheck {
    /// One member's HashKV: the hash at `revision`, its compaction revision.
    package struct LocalHash: Equatable, Sendable {
        package var hash: UInt32
        package var revision: Int64
        package var compactRevision: Int64
    }

    /// A peer's answer to "your HashKV at revision R": its hash there, its
    /// compaction revision and its current revision (the header's).
    package struct PeerHash: Equatable, Sendable {
        package var memberID: UInt64
        package var hash: UInt32
        package var compactRevision: Int64
        package var currentRevision: Int64
    }

    /// What the periodic check found wrong, in etcd's log words.
    package struct Fault: Equatable, Sendable {
        /// The member the rule points at (the leader itself for its own
        /// hash changing under it).
        package var memberID: UInt64
        package var reason: String
    }

    /// The initial check: the peers whose hash at our revision differs from
    /// ours at the same compaction revision. A different compaction
    /// revision is only worth a warning (etcd's "found different compact
    /// revision values from remote peer").
    static func initialMismatches(local: LocalHash, peers: [PeerHash]) -> [UInt64] {
        peers.filter { $0.hash != local.hash && $0.compactRevision == local.compactRevision }.map(\.memberID)
    }

    /// The leader's periodic check. `before` was taken when the peers were
    /// asked (at `before.revision`), `after` after a linearizable barrier.
    /// etcd's rules: the leader's own hash may not change while its
    /// revision and compaction revision stay; no follower may be ahead of
    /// the leader in revision or compaction; a follower at the leader's
    /// compaction revision must have its hash.
    static func periodicFaults(leaderID: UInt64, before: LocalHash, after: LocalHash, peers: [PeerHash]) -> [Fault] {
        var faults: [Fault] = []
        if after.hash != before.hash && after.revision == before.revision && after.compactRevision == before.compactRevision {
            faults.append(Fault(memberID: leaderID, reason: "found hash mismatch"))
        }
        for peer in peers {
            if peer.currentRevision > after.revision {
                faults.append(Fault(memberID: peer.memberID, reason: "revision from follower must be less than or equal to leader's"))
            }
            if peer.compactRevision > after.compactRevision {
                faults.append(Fault(memberID: peer.memberID,
                                    reason: "compact revision from follower must be less than or equal to leader's"))
            }
            if peer.compactRevision == before.compactRevision && peer.hash != before.hash {
                faults.append(Fault(memberID: peer.memberID, reason: "same compact revision then hashes must match"))
            }
        }
        return faults
    }
}

extension CorruptionCheck {
    /// What the leader learned about one of its compaction hashes
    /// (etcd 3.6's `checkPeerHashes`).
    package enum CompactionVerdict: Equatable, Sendable {
        /// Every peer answered at the leader's compaction revision with the
        /// leader's hash: this revision and all older ones are checked.
        case consistent(peersChecked: Int)
        /// The hashes that answered agree, but not every peer could be
        /// compared: try the next older hash.
        case incomplete(peersChecked: Int)
        /// Hashes differ. `alarms`: the members to raise CORRUPT for (the
        /// ones outside a majority with one hash, or 0, the whole cluster,
        /// when no hash has a majority); `minority`: every group of members
        /// outside the majority, by hash, for the log.
        case mismatch(alarms: [UInt64], minority: [(hash: UInt32, members: [UInt64])])

        package static func == (lhs: Self, rhs: Self) -> Bool {
            switch (lhs, rhs) {
            case let (.consistent(a), .consistent(b)), let (.incomplete(a), .incomplete(b)): return a == b
            case let (.mismatch(a, x), .mismatch(b, y)):
                return a == b && x.map(\.hash) == y.map(\.hash) && x.map(\.members) == y.map(\.members)
            default: return false
            }
        }
    }

    /// The compaction hash check's rule for one of the leader's compaction
    /// hashes and its peers' answers at that revision (nil: no answer). A
    /// peer counts only when it answers for the same previous compaction
    /// revision (its hash is then of the same history); members are grouped
    /// by hash, the leader included.
    static func compactionVerdict(leaderID: UInt64, leader: CompactionHash, peers: [(id: UInt64, answer: PeerHash?)])
        -> CompactionVerdict {
        var groups: [UInt32: [UInt64]] = [leader.hash: [leaderID]]
        var checked = 0
        for (id, answer) in peers {
            guard let answer, answer.compactRevision == leader.compactRevision else { continue }
            checked += 1
            groups[answer.hash, default: []].append(id)
        }
        guard groups.count > 1 else {
            return checked == peers.count ? .consistent(peersChecked: checked) : .incomplete(peersChecked: checked)
        }
        let quorum = (peers.count + 1) / 2 + 1
        let majority = groups.first { $0.value.count >= quorum }?.key
        let minority = groups.filter { $0.key != majority }
            .map { (hash: $0.key, members: $0.value.sorted()) }
            .sorted { $0.members.first ?? 0 < $1.members.first ?? 0 }
        let alarms = majority == nil ? [0] : minority.flatMap(\.members).sorted()
        return .mismatch(alarms: alarms, minority: minority)
    }

    /// A hash a member recorded when it compacted: the HashKV at
    /// `revision` over the history after `compactRevision`, the compaction
    /// before it.
    package struct CompactionHash: Equatable, Sendable {
        package var hash: UInt32
        package var revision: Int64
        package var compactRevision: Int64

        package init(hash: UInt32, revision: Int64, compactRevision: Int64) {
            self.hash = hash
            self.revision = revision
            self.compactRevision = compactRevision
        }
    }

    /// The hashes still to check, newest first: those after `checked`, the
    /// newest compaction revision the whole cluster agreed on.
    static func unchecked(_ hashes: [CompactionHash], after checked: Int64) -> [CompactionHash] {
        hashes.filter { $0.revision > checked }.sorted { $0.revision > $1.revision }
    }
}
