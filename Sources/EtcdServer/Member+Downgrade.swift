import EtcdProto

/// Maintenance.Downgrade, as etcd 3.6 answers it: VALIDATE checks that the
/// target is the one minor version below the cluster's and that no
/// downgrade runs; ENABLE records the job through raft (the leader's
/// version monitor then lowers the cluster version to the target); CANCEL
/// ends it (and the monitor raises the version back). Each reads after a
/// linearizable barrier, so it sees the latest job.
extension Member {
    public func downgrade(_ request: Etcdserverpb_DowngradeRequest) async throws -> Etcdserverpb_DowngradeResponse {
        var response = Etcdserverpb_DowngradeResponse()
        switch request.action {
        case .validate:
            try await validateDowngrade(to: request.version)
        case .enable:
            let target = try await validateDowngrade(to: request.version)
            var set = Etcdserverpb_InternalRaftRequest()
            set.downgradeInfoSet.enabled = true
            set.downgradeInfoSet.ver = target.description
            _ = try await propose(.other(set))
        case .cancel:
            try await linearizableBarrier()
            guard membership.versions.downgrade.enabled else { throw EtcdError.noInflightDowngrade }
            var set = Etcdserverpb_InternalRaftRequest()
            set.downgradeInfoSet.enabled = false
            _ = try await propose(.other(set))
        case .UNRECOGNIZED:
            throw EtcdError(.invalidArgument, "etcdserver: unknown method")
        }
        response.header = header()
        response.version = membership.versions.version.majorMinor
        return response
    }

    /// The downgrade's state for Status.
    public func downgradeInfo() -> Etcdserverpb_DowngradeInfo {
        let job = membership.versions.downgrade
        var info = Etcdserverpb_DowngradeInfo()
        info.enabled = job.enabled
        info.targetVersion = job.target?.description ?? ""
        return info
    }

    /// The cluster version members agree on (`3.6.0`, or a downgrade's target).
    public var clusterVersion: String { membership.versions.version.description }

    @discardableResult
    private func validateDowngrade(to text: String) async throws -> ClusterVersion {
        guard let target = ClusterVersion(parsing: text) else { throw EtcdError.wrongDowngradeVersionFormat }
        try await linearizableBarrier()
        let versions = membership.versions
        guard target == versions.version.allowedDowngrade else {
            logger.warning("reject downgrade request", metadata: ["error": "\(EtcdError.invalidDowngradeTargetVersion)"])
            throw EtcdError.invalidDowngradeTargetVersion
        }
        if versions.downgrade.enabled {
            logger.warning("reject downgrade request", metadata: ["error": "\(EtcdError.downgradeInProcess)"])
            throw EtcdError.downgradeInProcess
        }
        return target
    }
}
