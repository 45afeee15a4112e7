/// Bounds on lease TTLs, as etcd applies them.
public enum LeaseLimits {
    /// The largest TTL a lease may be granted, in seconds (etcd's MaxLeaseTTL).
    public static let maxTTLSeconds: Int64 = 9_000_000_000
}
