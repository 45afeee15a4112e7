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
