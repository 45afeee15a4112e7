import Foundation

/// A snapshot of one lease, as `grant` and `timeToLive` report it.
public struct LeaseInfo: Equatable, Sendable {
    public var id: Int64
    /// The TTL the lease was granted, in seconds (after the minimum-TTL raise).
    public var grantedTTL: Int64
    /// Seconds left. On the primary: the time to expiry truncated toward
    /// zero, as etcd's LeaseTimeToLive computes it (so it can be 0 or
    /// negative for a lease that expired but is not revoked yet). Elsewhere:
    /// what the lease would get on promotion (checkpointed remaining TTL, or
    /// else the granted TTL); etcd forwards to the leader instead.
    public var remainingTTL: Int64
    /// The attached keys, sorted bytewise.
    public var keys: [Data]

    public init(id: Int64, grantedTTL: Int64, remainingTTL: Int64, keys: [Data]) {
        self.id = id
        self.grantedTTL = grantedTTL
        self.remainingTTL = remainingTTL
        self.keys = keys
    }
}
