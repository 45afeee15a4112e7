import EtcdMetrics
import Raft

/// What the loop measures for its metrics (loop thread only).
struct LoopMeter {
    /// The leader at the last publish (for leader changes).
    var leader: UInt64 = 0
    /// As leader: when the last heartbeat went to each peer (a gap of more
    /// than two heartbeat intervals is a heartbeat send failure, as etcd
    /// counts them).
    var lastHeartbeatTo: [UInt64: ContinuousClock.Instant] = [:]
    /// As leader: the heartbeat to each peer still waiting for its response
    /// (the round trip is the peer's round-trip time).
    var heartbeatInFlight: [UInt64: ContinuousClock.Instant] = [:]
}

/// etcd's "apply request took too long" threshold.
private let slowApplyThreshold: Duration = .milliseconds(100)

extension RaftLoop {
    /// A new leader (or none): counted when there is one and it changed.
    func leaderChanged(to leader: UInt64) {
        if leader != 0 { metrics?.leaderChanges.increment() }
        meter.leader = leader
        meter.lastHeartbeatTo.removeAll()
        meter.heartbeatInFlight.removeAll()
    }

    /// A raft message to a peer: its bytes, and for heartbeats the send gap
    /// and the start of a round trip.
    func sent(_ message: Raft.Message, bytes: Int, to metrics: EtcdMetrics) {
        metrics.peerSentBytes(message.to, bytes)
        guard message.type == .msgHeartbeat else { return }
        let now = ContinuousClock.now
        if let last = meter.lastHeartbeatTo[message.to],
           now - last > .milliseconds(2 * config.heartbeatIntervalMilliseconds) {
            metrics.heartbeatSendFailures.increment()
        }
        meter.lastHeartbeatTo[message.to] = now
        if meter.heartbeatInFlight[message.to] == nil { meter.heartbeatInFlight[message.to] = now }
    }

    /// A raft message from a peer: a heartbeat response ends a round trip.
    func heard(_ message: Raft.Message) {
        guard message.type == .msgHeartbeatResp,
              let sentAt = meter.heartbeatInFlight.removeValue(forKey: message.from) else { return }
        metrics?.peerRoundTrip(message.from, seconds: (ContinuousClock.now - sentAt).timeInSeconds)
    }

    /// `apply`, counting entries slower than etcd's 100 ms warning.
    func timedApply(_ entry: Raft.Entry) throws {
        let start = ContinuousClock.now
        try apply(entry)
        if ContinuousClock.now - start > slowApplyThreshold { metrics?.slowApplies.increment() }
    }
}
