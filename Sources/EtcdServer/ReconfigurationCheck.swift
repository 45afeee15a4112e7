/// etcd's quorum arithmetic for --strict-reconfig-check. A member is
/// *started* once it has published its name (it ran and joined).
enum ReconfigurationCheck {
    /// etcd's HealthInterval: how long a peer must have been in contact.
    static let healthInterval: Duration = .seconds(5)

    /// A new voter: a quorum of the grown cluster must be started (a second
    /// member for a one-member cluster always may join).
    static func readyToAdd(voters: [MemberRecord]) -> Bool {
        let members = voters.count + 1
        let started = voters.count { !$0.name.isEmpty }
        if started == 1 && members == 2 { return true }
        return started >= members / 2 + 1
    }

    /// Removing voter `id`: a quorum of the rest must be started.
    static func readyToRemove(_ id: UInt64, voters: [MemberRecord]) -> Bool {
        let rest = voters.filter { $0.id != id }
        return rest.count { !$0.name.isEmpty } >= rest.count / 2 + 1
    }

    /// Promoting a learner, counted as a started voter.
    static func readyToPromote(voters: [MemberRecord]) -> Bool {
        let members = voters.count + 1
        let started = voters.count { !$0.name.isEmpty } + 1
        return started >= members / 2 + 1
    }
}

/// When this member started hearing from each peer without a break, and
/// when it last did: the raft loop records every message's sender.
struct PeerContact: Sendable {
    struct Span: Sendable {
        var since: ContinuousClock.Instant
        var last: ContinuousClock.Instant
    }

    private(set) var spans: [UInt64: Span] = [:]
    /// A silence longer than this ends a span.
    let gap: Duration

    init(gap: Duration) { self.gap = gap }

    mutating func heard(_ peer: UInt64, at now: ContinuousClock.Instant) {
        if let span = spans[peer], now - span.last <= gap {
            spans[peer]?.last = now
        } else {
            spans[peer] = Span(since: now, last: now)
        }
    }

    mutating func forget(_ peer: UInt64) { spans[peer] = nil }

    /// The contact as of `now`, for the checks.
    struct View {
        let contact: PeerContact
        let now: ContinuousClock.Instant
        let healthInterval: Duration

        /// When contact with `peer` began, if it is in contact now and has
        /// been for the health interval (etcd's isConnectedSince).
        func since(_ peer: UInt64) -> ContinuousClock.Instant? {
            guard let span = contact.spans[peer], now - span.last <= contact.gap,
                  span.since < now - healthInterval else { return nil }
            return span.since
        }
    }
}
