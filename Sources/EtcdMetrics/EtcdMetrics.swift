import Locks
import Prometheus

/// A member's Prometheus metrics, named, typed, labelled and bucketed as
/// etcd (3.4/3.6) and go-grpc-prometheus export them, so etcd's Grafana
/// dashboard and alerting rules read ours unchanged.
///
/// Counters and histograms are recorded where things happen (the raft
/// loop, the applier, the gRPC layer); gauges that mirror state the member
/// already keeps (leader, indexes, sizes, watcher counts, versions) are set
/// by `onCollect` closures just before each exposition, so the hot path
/// pays nothing for them. `exposition()` is the text the client port serves
/// at `/metrics` (rendered by swift-prometheus).
///
/// One instance per member (several members may share a process in tests).
/// Thread-safe: counters are atomics, histograms and the label caches lock.
public final class EtcdMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    /// `--metrics extensive`: also the gRPC handling-time histograms.
    public let extensive: Bool

    // MARK: etcd_server_*
    public let hasLeader: Gauge
    public let isLeader: Gauge
    public let isLearner: Gauge
    public let leaderChanges: Counter
    public let heartbeatSendFailures: Counter
    public let slowApplies: Counter
    public let applySnapshotInProgress: Gauge
    public let proposalsCommitted: Gauge
    public let proposalsApplied: Gauge
    public let proposalsPending: Gauge
    public let proposalsFailed: Counter
    public let slowReadIndexes: Counter
    public let readIndexesFailed: Counter
    public let quotaBackendBytes: Gauge
    public let leaseExpired: Counter

    // MARK: etcd_disk_*
    public let walFsyncSeconds: ValueHistogram
    public let walWriteBytes: Gauge
    public let backendCommitSeconds: ValueHistogram
    public let backendSnapshotSeconds: ValueHistogram
    public let backendDefragSeconds: ValueHistogram
    public let defragInflight: Gauge

    // MARK: etcd_mvcc_* / etcd_debugging_mvcc_*
    public let mvccPut: Counter
    public let mvccRange: Counter
    public let mvccDelete: Counter
    public let mvccTxn: Counter
    public let dbTotalSize: Gauge
    public let dbTotalSizeInUse: Gauge
    public let keysTotal: Gauge
    public let watcherTotal: Gauge
    public let slowWatcherTotal: Gauge
    public let currentRevision: Gauge
    public let compactRevision: Gauge

    // MARK: etcd_network_*
    public let clientGRPCSentBytes: Counter
    public let clientGRPCReceivedBytes: Counter

    // MARK: process_* and os_fd_*
    let process: ProcessMetrics

    private let peers = Mutex(PeerSeries())
    private let versions = Mutex(VersionSeries())
    private let collectors = Mutex<[@Sendable () -> Void]>([])

    private struct PeerSeries {
        var sent: [UInt64: Counter] = [:]
        var received: [UInt64: Counter] = [:]
        var roundTrip: [UInt64: ValueHistogram] = [:]
    }

    private struct VersionSeries {
        var cluster: (value: String, gauge: Gauge)?
        var serverID: (value: String, gauge: Gauge)?
    }

    /// prometheus.ExponentialBuckets: `count` upper bounds from `start`, each `factor` times the last.
    public static func exponentialBuckets(start: Double, factor: Double, count: Int) -> [Double] {
        var buckets: [Double] = []
        var bound = start
        for _ in 0..<count {
            buckets.append(bound)
            bound *= factor
        }
        return buckets
    }

    /// `serverVersion`: etcd_server_version's label (ours says which etcd it
    /// speaks). `extensive`: etcd's `--metrics extensive`.
    public init(serverVersion: String, extensive: Bool = false) {
        let r = PrometheusCollectorRegistry()
        registry = r
        self.extensive = extensive
        let diskBuckets = Self.exponentialBuckets(start: 0.001, factor: 2, count: 14)

        hasLeader = r.gauge(name: "etcd_server_has_leader", help: "Whether or not a leader exists. 1 is existence, 0 is not.")
        isLeader = r.gauge(name: "etcd_server_is_leader", help: "Whether or not this member is a leader. 1 if is, 0 otherwise.")
        isLearner = r.gauge(name: "etcd_server_is_learner", help: "Whether or not this member is a learner. 1 if is, 0 otherwise.")
        leaderChanges = r.counter(name: "etcd_server_leader_changes_seen_total", help: "The number of leader changes seen.")
        heartbeatSendFailures = r.counter(name: "etcd_server_heartbeat_send_failures_total",
                                              help: "The total number of leader heartbeat send failures (likely overloaded from slow disk).")
        slowApplies = r.counter(name: "etcd_server_slow_apply_total",
                                    help: "The total number of slow apply requests (likely overloaded from slow disk).")
        applySnapshotInProgress = r.gauge(name: "etcd_server_snapshot_apply_in_progress_total",
                                              help: "1 if the server is applying the incoming snapshot. 0 if none.")
        proposalsCommitted = r.gauge(name: "etcd_server_proposals_committed_total", help: "The total number of consensus proposals committed.")
        proposalsApplied = r.gauge(name: "etcd_server_proposals_applied_total", help: "The total number of consensus proposals applied.")
        proposalsPending = r.gauge(name: "etcd_server_proposals_pending", help: "The current number of pending proposals to commit.")
        proposalsFailed = r.counter(name: "etcd_server_proposals_failed_total", help: "The total number of failed proposals seen.")
        slowReadIndexes = r.counter(name: "etcd_server_slow_read_indexes_total",
                                        help: "The total number of pending read indexes not in sync with leader's or timed out read index requests.")
        readIndexesFailed = r.counter(name: "etcd_server_read_indexes_failed_total", help: "The total number of failed read indexes seen.")
        quotaBackendBytes = r.gauge(name: "etcd_server_quota_backend_bytes", help: "Current backend storage quota size in bytes.")
        leaseExpired = r.counter(name: "etcd_debugging_server_lease_expired_total", help: "The total number of expired leases.")

        walFsyncSeconds = r.histogram(name: "etcd_disk_wal_fsync_duration_seconds", buckets: diskBuckets,
                                               help: "The latency distributions of fsync called by WAL.")
        walWriteBytes = r.gauge(name: "etcd_disk_wal_write_bytes_total", help: "Total number of bytes written in WAL.")
        backendCommitSeconds = r.histogram(name: "etcd_disk_backend_commit_duration_seconds", buckets: diskBuckets,
                                                    help: "The latency distributions of commit called by backend.")
        backendSnapshotSeconds = r.histogram(name: "etcd_disk_backend_snapshot_duration_seconds",
                                                      buckets: Self.exponentialBuckets(start: 0.01, factor: 2, count: 17),
                                                      help: "The latency distribution of backend snapshots.")
        backendDefragSeconds = r.histogram(name: "etcd_disk_backend_defrag_duration_seconds",
                                                    buckets: Self.exponentialBuckets(start: 0.1, factor: 2, count: 13),
                                                    help: "The latency distribution of backend defragmentation.")
        defragInflight = r.gauge(name: "etcd_disk_defrag_inflight", help: "Whether or not defrag is active on the member. 1 means active, 0 means not.")

        mvccPut = r.counter(name: "etcd_mvcc_put_total", help: "Total number of puts seen by this member.")
        mvccRange = r.counter(name: "etcd_mvcc_range_total", help: "Total number of ranges seen by this member.")
        mvccDelete = r.counter(name: "etcd_mvcc_delete_total", help: "Total number of deletes seen by this member.")
        mvccTxn = r.counter(name: "etcd_mvcc_txn_total", help: "Total number of txns seen by this member.")
        dbTotalSize = r.gauge(name: "etcd_mvcc_db_total_size_in_bytes",
                                  help: "Total size of the underlying database physically allocated in bytes.")
        dbTotalSizeInUse = r.gauge(name: "etcd_mvcc_db_total_size_in_use_in_bytes",
                                       help: "Total size of the underlying database logically in use in bytes.")
        keysTotal = r.gauge(name: "etcd_debugging_mvcc_keys_total", help: "Total number of keys.")
        watcherTotal = r.gauge(name: "etcd_debugging_mvcc_watcher_total", help: "Total number of watchers.")
        slowWatcherTotal = r.gauge(name: "etcd_debugging_mvcc_slow_watcher_total", help: "Total number of unsynced slow watchers.")
        currentRevision = r.gauge(name: "etcd_debugging_mvcc_current_revision", help: "The current revision of store.")
        compactRevision = r.gauge(name: "etcd_debugging_mvcc_compact_revision", help: "The revision of the last compaction in store.")

        clientGRPCSentBytes = r.counter(name: "etcd_network_client_grpc_sent_bytes_total", help: "The total number of bytes sent to grpc clients.")
        clientGRPCReceivedBytes = r.counter(name: "etcd_network_client_grpc_received_bytes_total",
                                                help: "The total number of bytes received from grpc clients.")

        r.gauge(name: "etcd_server_version", labels: [("server_version", serverVersion)],
                    help: "Which version is running. 1 for 'server_version' label with current version.").set(1.0)
        process = ProcessMetrics(registry: r)
    }

    // MARK: - Labelled series

    /// etcd_server_id{server_id="<hex>"} 1.
    public func setServerID(_ id: UInt64) {
        setSingleLabel(\.serverID, name: "etcd_server_id", label: "server_id", value: String(id, radix: 16),
                       help: "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.")
    }

    /// etcd_cluster_version{cluster_version="3.6"} 1 (major.minor, as etcd
    /// labels it); the previous version's series drops to 0.
    public func setClusterVersion(_ version: String) {
        let majorMinor = version.split(separator: ".").prefix(2).joined(separator: ".")
        setSingleLabel(\.cluster, name: "etcd_cluster_version", label: "cluster_version", value: majorMinor,
                       help: "Which version is running. 1 for 'cluster_version' label with current cluster version")
    }

    private func setSingleLabel(_ slot: WritableKeyPath<VersionSeries, (value: String, gauge: Gauge)?>, name: String,
                                label: String, value: String, help: String) {
        versions.withLock { series in
            // The old value's series stays, at 0 (as etcd leaves it).
            if let current = series[keyPath: slot] {
                if current.value == value { return }
                current.gauge.set(0.0)
            }
            let gauge = registry.gauge(name: name, labels: [(label, value)], help: help)
            gauge.set(1.0)
            series[keyPath: slot] = (value, gauge)
        }
    }

    /// Bytes of raft messages sent to `peer` (etcd_network_peer_sent_bytes_total{To}).
    public func peerSentBytes(_ peer: UInt64, _ bytes: Int) {
        peerCounter(\.sent, peer, name: "etcd_network_peer_sent_bytes_total", label: "To",
                    help: "The total number of bytes sent to peers.").increment(by: Int64(bytes))
    }

    /// Bytes of raft messages received from `peer` (etcd_network_peer_received_bytes_total{From}).
    public func peerReceivedBytes(_ peer: UInt64, _ bytes: Int) {
        peerCounter(\.received, peer, name: "etcd_network_peer_received_bytes_total", label: "From",
                    help: "The total number of bytes received from peers.").increment(by: Int64(bytes))
    }

    /// One round trip to `peer` (etcd_network_peer_round_trip_time_seconds{To}).
    public func peerRoundTrip(_ peer: UInt64, seconds: Double) {
        let histogram = peers.withLock { series in
            if let known = series.roundTrip[peer] { return known }
            let made = registry.histogram(name: "etcd_network_peer_round_trip_time_seconds",
                                                   labels: [("To", String(peer, radix: 16))],
                                                   buckets: Self.exponentialBuckets(start: 0.0001, factor: 2, count: 16),
                                                   help: "Round-Trip-Time histogram between peers")
            series.roundTrip[peer] = made
            return made
        }
        histogram.record(seconds)
    }

    private func peerCounter(_ slot: WritableKeyPath<PeerSeries, [UInt64: Counter]>, _ peer: UInt64,
                             name: String, label: String, help: String) -> Counter {
        peers.withLock { series in
            if let known = series[keyPath: slot][peer] { return known }
            let made = registry.counter(name: name, labels: [(label, String(peer, radix: 16))], help: help)
            series[keyPath: slot][peer] = made
            return made
        }
    }

    // MARK: - Exposition

    /// Runs before every exposition (to set gauges from the member's state).
    public func onCollect(_ collect: @escaping @Sendable () -> Void) {
        collectors.withLock { $0.append(collect) }
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric.
    public func exposition() -> [UInt8] {
        for collect in collectors.withLock({ $0 }) { collect() }
        process.collect()
        return registry.emitToBuffer()
    }
}

/// The registry's descriptor-based factories (its name-based ones are
/// deprecated), with etcd's full metric names.
extension PrometheusCollectorRegistry {
    private static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    func counter(name: String, labels: [(String, String)] = [], help: String) -> Counter {
        labels.isEmpty ? makeCounter(descriptor: Self.descriptor(name, help))
            : makeCounter(descriptor: Self.descriptor(name, help), labels: labels)
    }

    func gauge(name: String, labels: [(String, String)] = [], help: String) -> Gauge {
        labels.isEmpty ? makeGauge(descriptor: Self.descriptor(name, help))
            : makeGauge(descriptor: Self.descriptor(name, help), labels: labels)
    }

    func histogram(name: String, labels: [(String, String)] = [], buckets: [Double], help: String) -> ValueHistogram {
        labels.isEmpty ? makeValueHistogram(descriptor: Self.descriptor(name, help), buckets: buckets)
            : makeValueHistogram(descriptor: Self.descriptor(name, help), labels: labels, buckets: buckets)
    }
}

extension Duration {
    /// The duration in seconds, as Prometheus records times.
    public var timeInSeconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) * 1e-18
    }
}
