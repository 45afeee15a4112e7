import EtcdMetrics
import Foundation

extension Member {
    /// The gauges that mirror state the member keeps anyway are set from it
    /// at each exposition (nothing on the hot path); the fixed ones now.
    func startMetrics() {
        metrics.setServerID(memberID)
        // etcd's quota: the flag, or its 2 GiB default when 0 or less.
        metrics.quotaBackendBytes.set(Double(config.quotaBackendBytes > 0 ? config.quotaBackendBytes : 2 << 30))
        metrics.onCollect { [weak self] in self?.collectMetrics() }
    }

    private func collectMetrics() {
        let metrics = self.metrics
        let (status, pending) = mailbox.state.withLock { ($0.status, $0.waiters.count) }
        metrics.hasLeader.set(status.leader != 0 ? 1.0 : 0.0)
        metrics.isLeader.set(status.leader == memberID ? 1.0 : 0.0)
        metrics.isLearner.set(isLearner ? 1.0 : 0.0)
        metrics.proposalsCommitted.set(Double(status.committedIndex))
        metrics.proposalsApplied.set(Double(status.appliedIndex))
        metrics.proposalsPending.set(Double(pending))
        metrics.dbTotalSize.set(Double(backend.sizeBytes))
        metrics.dbTotalSizeInUse.set(Double(backendSizeInUseBytes()))
        metrics.keysTotal.set(Double(store.indexedKeyCount))
        metrics.currentRevision.set(Double(store.currentRevision))
        metrics.compactRevision.set(Double(store.compactRevision))
        let watchers = watchable.counts
        metrics.watcherTotal.set(Double(watchers.synced + watchers.unsynced + watchers.victims))
        metrics.slowWatcherTotal.set(Double(watchers.unsynced + watchers.victims))
        metrics.setClusterVersion(clusterVersion)
    }
}
