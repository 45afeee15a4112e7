/// Bounds on lease TTLs, as etcd applies them.
public enum LeaseLimits {
    /// The largest TTL a lease may be granted, in seconds (etcd's MaxLeaseTTL).
    public static let maxTTLSeconds: Int64 = 9_000_000_000
    /// Default for `LessorConfig.maxLeases`. etcd has no such bound (only the
    /// backend quota); we keep one so memory stays bounded: a lease costs a
    /// few hundred bytes here, so this allows a few hundred MiB of leases.
    public static let defaultMaxLeases: Int = 1_000_000
}
