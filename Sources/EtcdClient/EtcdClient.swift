/// The Swift client library for etcd. The connection and the KV, Watch,
/// Lease, Cluster, Maintenance and Auth APIs come with the client issue;
/// until then this module only names the defaults clients share.
public enum EtcdClientDefaults {
    /// Where `etcdctl` and the library connect when given no endpoint.
    public static let endpoint = "127.0.0.1:2379"
}
