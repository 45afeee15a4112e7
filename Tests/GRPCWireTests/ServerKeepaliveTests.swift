@testable import GRPCWire
import NIOCore
import Testing

/// ServerKeepalive alone, with times passed in: grpc-go's ping strikes and
/// its idle-connection pings.
@Suite struct ServerKeepaliveTests {
    static let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    static let policy = ServerKeepalive.Policy(minTime: .seconds(5), interval: .seconds(60), timeout: .seconds(20))

    /// With a stream open, pings closer than minTime are strikes; the third
    /// strike (the fourth ping) is too many, as with grpc-go's maxPingStrikes = 2.
    @Test func theThirdStrikeIsTooMany() {
        var keepalive = ServerKeepalive(policy: Self.policy, now: Self.start)
        let verdicts = (0..<4).map { keepalive.pingReceived(at: Self.start + .seconds(Int64($0)), openStreams: 1) }
        #expect(verdicts == [.allowed, .allowed, .allowed, .tooManyPings])
    }

    /// Pings minTime apart are never strikes.
    @Test func pingsMinTimeApartAreAllowed() {
        var keepalive = ServerKeepalive(policy: Self.policy, now: Self.start)
        for i in 0..<100 {
            #expect(keepalive.pingReceived(at: Self.start + .seconds(Int64(5 * i)), openStreams: 1) == .allowed)
        }
    }

    /// A ping after the server sent headers or data is no strike and clears
    /// the strikes before it (a Go client's bandwidth-estimation pings).
    @Test func pingsAfterResponsesAreNotStrikes() {
        var keepalive = ServerKeepalive(policy: Self.policy, now: Self.start)
        for i in 0..<1000 {
            keepalive.sentHeadersOrData()
            #expect(keepalive.pingReceived(at: Self.start + .milliseconds(Int64(i)), openStreams: 1) == .allowed)
        }
        // Two strikes, a response, then two more: still allowed.
        var mixed = ServerKeepalive(policy: Self.policy, now: Self.start)
        let now = Self.start
        #expect(mixed.pingReceived(at: now, openStreams: 1) == .allowed)
        #expect(mixed.pingReceived(at: now, openStreams: 1) == .allowed)
        #expect(mixed.pingReceived(at: now, openStreams: 1) == .allowed)
        mixed.sentHeadersOrData()
        #expect(mixed.pingReceived(at: now, openStreams: 1) == .allowed)
        #expect(mixed.pingReceived(at: now, openStreams: 1) == .allowed)
        #expect(mixed.pingReceived(at: now, openStreams: 1) == .allowed)
        #expect(mixed.pingReceived(at: now, openStreams: 1) == .tooManyPings)
    }

    /// With no stream open (etcd does not permit pings without streams) the
    /// allowance is two hours: pings minTime apart still strike.
    @Test func withoutStreamsTheAllowanceIsTwoHours() {
        var keepalive = ServerKeepalive(policy: Self.policy, now: Self.start)
        let verdicts = (0..<4).map { keepalive.pingReceived(at: Self.start + .minutes(Int64(10 * $0)), openStreams: 0) }
        #expect(verdicts == [.allowed, .allowed, .allowed, .tooManyPings])
    }

    /// Idle for the interval: ping; nothing read within the timeout: close.
    /// Anything read in between puts it off.
    @Test func idleConnectionsArePingedThenClosed() {
        var keepalive = ServerKeepalive(policy: Self.policy, now: Self.start)
        #expect(keepalive.firstCheck == .wait(until: Self.start + .seconds(60)))
        keepalive.read(at: Self.start + .seconds(30))
        #expect(keepalive.timerFired(at: Self.start + .seconds(60)) == .wait(until: Self.start + .seconds(90)))
        #expect(keepalive.timerFired(at: Self.start + .seconds(90)) == .ping(checkAgainAt: Self.start + .seconds(110)))
        // Answered (anything read): waits a whole interval again.
        keepalive.read(at: Self.start + .seconds(91))
        #expect(keepalive.timerFired(at: Self.start + .seconds(110)) == .wait(until: Self.start + .seconds(151)))
        #expect(keepalive.timerFired(at: Self.start + .seconds(151)) == .ping(checkAgainAt: Self.start + .seconds(171)))
        #expect(keepalive.timerFired(at: Self.start + .seconds(171)) == .close)
    }

    @Test func noIntervalNoPings() {
        var keepalive = ServerKeepalive(policy: .init(minTime: .seconds(5), interval: nil, timeout: .seconds(20)), now: Self.start)
        #expect(keepalive.firstCheck == .none)
        #expect(keepalive.timerFired(at: Self.start + .hours(100)) == .none)
    }
}
