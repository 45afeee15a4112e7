import Backend
import EtcdProto
import Foundation
import Locks

/// A cluster version: etcd keeps only major.minor (printed `3.6.0`).
struct ClusterVersion: Hashable, Comparable, Sendable, CustomStringConvertible {
    var major: Int
    var minor: Int

    /// What every member of ours runs.
    static let ours = ClusterVersion(parsing: EtcdVersion.cluster)!

    /// `X.Y.Z` (with an optional pre-release or build suffix) or `X.Y`, as
    /// etcd's downgrade accepts a target; the patch is dropped.
    init?(parsing text: String) {
        let core = text.split(separator: "+", maxSplits: 1).first.map { $0.split(separator: "-", maxSplits: 1).first ?? "" } ?? ""
        let parts = core.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2 || parts.count == 3,
              parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isNumber) && ($0 == "0" || $0.first != "0") }),
              let major = Int(parts[0]), let minor = Int(parts[1]) else { return nil }
        self.init(major: major, minor: minor)
    }

    init(major: Int, minor: Int) {
        self.major = major
        self.minor = minor
    }

    var description: String { "\(major).\(minor).0" }
    /// `3.6`: how etcd 3.6 reports a cluster version in Downgrade responses.
    var majorMinor: String { "\(major).\(minor)" }

    static func < (a: ClusterVersion, b: ClusterVersion) -> Bool { (a.major, a.minor) < (b.major, b.minor) }

    /// The one version a cluster at this version may downgrade to.
    var allowedDowngrade: ClusterVersion { ClusterVersion(major: major, minor: minor - 1) }
}

/// The cluster version and the downgrade job, as etcd keeps them in its
/// `cluster` bucket (`clusterVersion`: `3.6.0`; `downgrade`: JSON with
/// `target-version` and `enabled`), applied through raft on every member.
final class ClusterVersionStore: Sendable {
    struct Downgrade: Equatable, Sendable {
        var enabled = false
        var target: ClusterVersion?
    }

    private struct State {
        var version: ClusterVersion?
        var downgrade = Downgrade()
    }

    private let state = Mutex(State())
    static let versionKey = Array("clusterVersion".utf8)
    static let downgradeKey = Array("downgrade".utf8)

    /// Loads the `cluster` bucket (at start and after a snapshot install).
    func load(from backend: Backend) throws {
        var loaded = State()
        try backend.read { tx in
            if let bytes = try tx.get(.cluster, Self.versionKey) {
                loaded.version = ClusterVersion(parsing: String(decoding: bytes, as: UTF8.self))
            }
            if let bytes = try tx.get(.cluster, Self.downgradeKey),
               let json = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] {
                loaded.downgrade.enabled = json["enabled"] as? Bool ?? false
                loaded.downgrade.target = (json["target-version"] as? String).flatMap(ClusterVersion.init(parsing:))
            }
        }
        state.withLock { $0 = loaded }
    }

    /// The cluster version (ours until one was decided through raft).
    var version: ClusterVersion { state.withLock { $0.version } ?? .ours }
    var downgrade: Downgrade { state.withLock { $0.downgrade } }

    /// Applies ClusterVersionSet (backend writer thread); the old version.
    func setVersion(_ version: ClusterVersion, in backend: Backend) throws(BackendError) -> ClusterVersion {
        try backend.put(.cluster, key: Self.versionKey, value: Array(version.description.utf8))
        try Self.recordStorageVersion(version, in: backend)
        return state.withLock { state in
            defer { state.version = version }
            return state.version ?? .ours
        }
    }

    /// etcd 3.6 keeps the storage schema's version in the `meta` bucket once
    /// the cluster runs 3.6; a 3.5 backend has none (a downgrade removes it).
    static func recordStorageVersion(_ version: ClusterVersion, in backend: Backend) throws(BackendError) {
        if version >= ClusterVersion(parsing: "3.6")! {
            try backend.put(.meta, key: MetaKey.storageVersion, value: Array(version.description.utf8))
        } else {
            try backend.delete(.meta, key: MetaKey.storageVersion)
        }
    }

    /// Applies DowngradeInfoSet (backend writer thread).
    func setDowngrade(_ downgrade: Downgrade, in backend: Backend) throws(BackendError) {
        let target = downgrade.enabled ? downgrade.target.map(\.description) ?? "" : ""
        let json = #"{"target-version":"\#(target)","enabled":\#(downgrade.enabled)}"#
        try backend.put(.cluster, key: Self.downgradeKey, value: Array(json.utf8))
        state.withLock { $0.downgrade = downgrade.enabled ? downgrade : Downgrade() }
    }

    /// What the leader's version monitor wants the cluster version to be:
    /// the downgrade's target while one is enabled, else ours. Nil when it
    /// already is.
    var wanted: ClusterVersion? {
        state.withLock { state in
            let current = state.version ?? .ours
            let wanted = state.downgrade.enabled ? state.downgrade.target ?? current : .ours
            return wanted == current ? nil : wanted
        }
    }
}

extension EtcdError {
    public static let wrongDowngradeVersionFormat = EtcdError(.invalidArgument, "etcdserver: wrong downgrade target version format")
    public static let invalidDowngradeTargetVersion = EtcdError(.invalidArgument, "etcdserver: invalid downgrade target version")
    public static let downgradeInProcess = EtcdError(.failedPrecondition, "etcdserver: cluster has a downgrade job in progress")
    public static let noInflightDowngrade = EtcdError(.failedPrecondition, "etcdserver: no inflight downgrade job")
}
