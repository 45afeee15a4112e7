import NIOCore

/// grpc-go's server keepalive, as etcd configures it
/// (`--grpc-keepalive-min-time`, `--grpc-keepalive-interval`,
/// `--grpc-keepalive-timeout`), for one connection: a value with no clock
/// and no I/O. Its shell (`WireConnection`) passes `now` in and carries out
/// what comes back.
///
/// Enforcement (grpc-go `http2Server.handlePing`): a client PING earlier
/// than `minTime` after the previous one is a strike, unless the server
/// has sent headers or data since (a Go client's bandwidth-estimation PING
/// follows a response: never a strike). With no stream open the allowance
/// is two hours instead (etcd does not permit pings without streams). The
/// third strike (`strikes > maxStrikes`) sends the client away: GOAWAY
/// ENHANCE_YOUR_CALM "too_many_pings", and the connection closes.
///
/// Liveness (grpc-go `http2Server.keepalive`): after `interval` without
/// reading anything the server PINGs; if nothing at all is read within
/// `timeout` after that, the connection is closed.
struct ServerKeepalive {
    struct Policy: Sendable, Hashable {
        var minTime: TimeAmount
        /// nil: the server never pings.
        var interval: TimeAmount?
        var timeout: TimeAmount
    }

    /// grpc-go's `maxPingStrikes`.
    static let maxStrikes = 2
    /// grpc-go's `defaultPingTimeout`: the allowance with no stream open.
    static let withoutStreamsMinTime: TimeAmount = .hours(2)

    let policy: Policy
    private var lastPingAt: NIODeadline?
    private var strikes = 0
    /// Headers or data sent since the last client PING.
    private var sentSinceLastPing = false

    private var lastReadAt: NIODeadline
    /// When our PING went out, while it waits for any read.
    private var pingSentAt: NIODeadline?

    init(policy: Policy, now: NIODeadline) {
        self.policy = policy
        lastReadAt = now
    }

    // MARK: Enforcement

    enum PingVerdict: Equatable { case allowed, tooManyPings }

    mutating func sentHeadersOrData() {
        sentSinceLastPing = true
    }

    /// A client PING (not an ACK) at `now`, with `openStreams` open.
    mutating func pingReceived(at now: NIODeadline, openStreams: Int) -> PingVerdict {
        defer { lastPingAt = now }
        if sentSinceLastPing {
            sentSinceLastPing = false
            strikes = 0
            return .allowed
        }
        let allowance = openStreams > 0 ? policy.minTime : Self.withoutStreamsMinTime
        if let lastPingAt, lastPingAt + allowance > now {
            strikes += 1
        }
        return strikes > Self.maxStrikes ? .tooManyPings : .allowed
    }

    // MARK: Liveness

    /// Anything read from the client at `now`.
    mutating func read(at now: NIODeadline) {
        lastReadAt = now
        pingSentAt = nil
    }

    enum TimerAction: Equatable {
        /// Check again then.
        case wait(until: NIODeadline)
        /// Send a PING, and check again then.
        case ping(checkAgainAt: NIODeadline)
        /// Nothing read within the timeout after our PING.
        case close
        /// Keepalive pings are off.
        case none
    }

    /// When to check first.
    var firstCheck: TimerAction {
        policy.interval.map { .wait(until: lastReadAt + $0) } ?? .none
    }

    /// The timer fired at `now`.
    mutating func timerFired(at now: NIODeadline) -> TimerAction {
        guard let interval = policy.interval else { return .none }
        if let pingSentAt {
            return now >= pingSentAt + policy.timeout ? .close : .wait(until: pingSentAt + policy.timeout)
        }
        if now < lastReadAt + interval {
            return .wait(until: lastReadAt + interval)
        }
        pingSentAt = now
        return .ping(checkAgainAt: now + policy.timeout)
    }
}
