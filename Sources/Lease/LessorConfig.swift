/// Settings of a `Lessor`. Units are in the names.
///
/// Every member of a cluster must use the same `minTTLSeconds` and
/// `maxLeases`: they decide the outcome of applied grants.
public struct LessorConfig: Sendable {
    /// Grants (and loaded leases) with a shorter TTL are raised to this. The
    /// server derives it from the election timeout, as etcd does.
    public var minTTLSeconds: Int64
    /// Leases whose TTL is above this get their remaining TTL checkpointed
    /// through raft every interval (etcd's default: 5 minutes). Values
    /// of 0 or less mean the default.
    public var checkpointIntervalSeconds: Int64 = 300
    /// An expired lease handed out by `expiredLeases` is handed out again
    /// this much later if it still exists. Values of 0 or less mean 3 s.
    public var expiredRetrySeconds: Int64 = 3
    /// Whether the primary schedules checkpoints at all (etcd's
    /// `Checkpointer` being set). When false, `dueCheckpoints` is always empty.
    public var checkpointsEnabled: Bool = true
    /// How many leases the server revokes per second at most (etcd: 1000).
    /// `promote` spreads piled-up expiries to 3/4 of this rate.
    public var revokeRatePerSecond: Int = 1000
    /// The most leases that may exist; `grant` beyond it fails with
    /// `LeaseError.tooManyLeases`.
    public var maxLeases: Int = LeaseLimits.defaultMaxLeases

    public init(
        minTTLSeconds: Int64,
        checkpointIntervalSeconds: Int64 = 300,
        expiredRetrySeconds: Int64 = 3,
        checkpointsEnabled: Bool = true,
        revokeRatePerSecond: Int = 1000,
        maxLeases: Int = LeaseLimits.defaultMaxLeases
    ) {
        self.minTTLSeconds = minTTLSeconds
        self.checkpointIntervalSeconds = checkpointIntervalSeconds > 0 ? checkpointIntervalSeconds : 300
        self.expiredRetrySeconds = expiredRetrySeconds > 0 ? expiredRetrySeconds : 3
        self.checkpointsEnabled = checkpointsEnabled
        self.revokeRatePerSecond = max(1, revokeRatePerSecond)
        self.maxLeases = maxLeases
    }
}
