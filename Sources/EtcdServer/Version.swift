/// Versions this implementation reports (`/version`, `Status.version`,
/// `etcdctl version`). We target etcd 3.6's API.
public enum EtcdVersion {
    public static let server = "3.6.0"
    public static let cluster = "3.6.0"
    public static let api = "3.6"
}
