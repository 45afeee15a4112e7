import Auth
import Backend
import EtcdProto
import Foundation
import Lease
import Logging
import MVCC
import Raft
import WAL

/// Opening a member's data dir: everything a member is built from, read or
/// created before any thread runs. Three cases, as etcd's bootstrap has them:
///
/// - the WAL exists: continue from the newest raft snapshot the WAL knows
///   (finishing a received snapshot's install that was cut short), replay
///   the log after it, load the membership from the backend;
/// - a joining member (`--initial-cluster-state existing`, new data dir):
///   an empty log under the ids the running cluster gave it;
/// - a new cluster: the initial configuration as raft's snapshot at index 1.
///
/// Nothing here is shared yet, so nothing needs a lock.
struct Bootstrap {
    var memberID: UInt64
    var clusterID: UInt64
    var backend: Backend
    var store: KVStore
    var lessor: Lessor
    var membership: MembershipTable
    var alarms: AlarmStore
    var auth: AuthStore
    var wal: WAL
    var storage: MemoryStorage
    var snapshotter: Snapshotter
    var node: RawNode
    var confState: Raft.ConfState
    /// Raft's applied index to start from (the snapshot's index).
    var applied: UInt64
    var snapshotIndex: UInt64
    /// The backend's consistent index: entries up to it are not applied again.
    var consistentIndex: UInt64
    /// A single voter elects itself at once instead of waiting a timeout.
    var campaignAtStart: Bool

    /// What a member joining a running cluster learned from it.
    struct JoinInfo {
        var memberID: UInt64
        var clusterID: UInt64
        var members: [MemberRecord]
    }

    /// The LMDB map's hard limit for a quota: the quota itself is a policy
    /// the member checks before a request grows the store (as etcd's is),
    /// so the map leaves room above it — a write that reached the map's end
    /// mid-request could not be undone, and even deletes need free pages.
    static func backendLimitBytes(quotaBytes: Int) -> Int {
        quotaBytes + max(quotaBytes, 1 << 30)
    }

    init(config: ServerConfig, joining: JoinInfo?, environment: MemberEnvironment, logger: Logger) throws {
        let walFS = environment.walFileSystem
        let fm = FileManager.default
        try fm.createDirectory(atPath: config.snapDir, withIntermediateDirectories: true)
        try fm.createDirectory(atPath: URL(fileURLWithPath: config.walDir).deletingLastPathComponent().path,
                               withIntermediateDirectories: true)

        // Which raft snapshot to continue from decides the backend file: a
        // received snapshot whose install was cut short is finished first.
        let snapshotter = Snapshotter(dir: config.snapDir)
        let walExists = WAL.exists(in: config.walDir, fs: walFS)
        var markers: [WALSnapshot] = []
        var snapshot: Raftpb_Snapshot?
        if walExists {
            markers = try WAL.validSnapshots(dir: config.walDir, fs: walFS)
            snapshot = try snapshotter.loadNewestAvailable(among: markers)
        }
        try SnapshotFiles.finishInstall(config: config, snapshotIndex: snapshot?.metadata.index)
        try BboltConversion.convertIfNeeded(backendPath: config.backendPath, logger: logger)

        // The map is reserved at its limit from the start (address space
        // only: the file grows as pages are written), so it never has to
        // grow — growing waits for every read transaction, and a snapshot's
        // copy holds one for as long as it takes.
        let limit = Self.backendLimitBytes(quotaBytes: config.quotaBackendBytes)
        var backendConfig = BackendConfig(initialMapSizeBytes: limit, quotaBytes: limit)
        if let interval = environment.backendBatchIntervalMilliseconds { backendConfig.batchIntervalMilliseconds = interval }
        if let limit = environment.backendBatchLimitOps { backendConfig.batchLimitOps = limit }
        let backend = try Backend(path: config.backendPath, config: backendConfig)
        // Events leave prevKv out: a put then costs no read of the value it
        // replaces, and the watchable store looks previous values up once
        // per revision, only when some watcher asked for them (as etcd does).
        let store = try KVStore(backend: backend, config: StoreConfig(maxTxnOps: config.maxTxnOps, eventsIncludePrevKv: false))
        let lessor: Lessor
        do {
            // As etcd: an expired lease whose revoke got lost is retried after
            // a request timeout (5 s + two election timeouts).
            let retrySeconds = 5 + Int64(2 * config.electionTimeoutMilliseconds / 1000)
            lessor = try Lessor(backend: backend, config: LessorConfig(
                minTTLSeconds: config.minLeaseTTLSeconds, expiredRetrySeconds: retrySeconds))
        } catch {
            throw EtcdError(.dataLoss, "etcdserver: cannot load leases: \(error)")
        }
        lessor.restoreAttachments(store.restoredLeases)
        let membership = MembershipTable()
        let alarms = AlarmStore()
        try alarms.load(from: backend)
        let auth = AuthStore()
        do { try auth.load(from: backend) } catch {
            throw EtcdError(.dataLoss, "etcdserver: cannot load the auth store: \(error)")
        }

        let storage = MemoryStorage()
        let wal: WAL
        if walExists {
            // Continue from the newest raft snapshot the WAL knows about, or
            // from the bootstrap marker at index 1 that a new cluster's
            // members write (a joining member has none: it starts empty and
            // gets a snapshot from the leader).
            let bootstrapMarker = markers.first { $0.index == 1 && $0.term == 1 }
            let marker = snapshot.map(WALSnapshot.init) ?? bootstrapMarker ?? WALSnapshot()
            wal = try WAL.open(dir: config.walDir, at: marker, segmentSizeBytes: environment.walSegmentSizeBytes, fs: walFS)
            let (metadata, hardState, entries) = try wal.readAll()
            let ids = try Etcdserverpb_Metadata(serializedBytes: metadata)
            memberID = ids.nodeID
            clusterID = ids.clusterID
            if let snapshot {
                try storage.applySnapshot(Raft.Snapshot(snapshot))
            } else if let bootstrapMarker {
                let voters = bootstrapMarker.confState.map { Raft.ConfState($0) } ?? Raft.ConfState(voters: [memberID])
                try storage.applySnapshot(Raft.Snapshot(metadata: SnapshotMetadata(confState: voters, index: 1, term: 1)))
            }
            var log = entries.filter { $0.index > marker.index }.map(Raft.Entry.init)
            var state = Raft.HardState(hardState)
            if config.forceNewCluster {
                let voters = try storage.snapshot().metadata.confState
                let forced = try Self.forceNewCluster(log: log, hardState: state, memberID: memberID,
                                                      snapshotMembers: voters.voters + voters.learners, logger: logger)
                log = forced.log
                state = forced.hardState
                try wal.save(hardState: Raftpb_HardState(state), entries: forced.appended.map(Raftpb_Entry.init), mustSync: true)
            }
            try storage.append(log)
            if state.term > 0 { storage.setHardState(state) }
            try membership.load(from: backend)
        } else if let joining {
            memberID = joining.memberID
            clusterID = joining.clusterID
            wal = try Self.createWAL(config, environment, memberID: memberID, clusterID: clusterID)
            // The member records come with the leader's snapshot; until then
            // the known members are what the cluster told us.
            for record in joining.members { try membership.save(record, to: backend) }
            try backend.forceCommit()
        } else {
            let initial = config.initialMembers
            memberID = MemberIdentity.memberID(peerURLs: config.initialAdvertisePeerURLs, clusterToken: config.initialClusterToken)
            clusterID = MemberIdentity.clusterID(memberIDs: initial.map(\.id))
            wal = try Self.createWAL(config, environment, memberID: memberID, clusterID: clusterID)
            // The initial configuration is raft's snapshot at index 1, term 1
            // (every member of a new cluster writes the same one); the WAL
            // records it as a snapshot marker so the log continues at 2.
            let voters = initial.map(\.id).sorted()
            try RawNode.bootstrap(storage, voters: voters)
            for record in initial { try membership.save(record, to: backend) }
            try backend.setConsistentIndex(1, term: 1)
            try backend.forceCommit()
            try wal.saveSnapshot(WALSnapshot(index: 1, term: 1, confState: Raftpb_ConfState(Raft.ConfState(voters: voters))))
            try wal.save(hardState: Raftpb_HardState(Raft.HardState(term: 1, vote: 0, commit: 1)), entries: [], mustSync: true)
        }
        confState = try storage.initialState().1
        // A forced new cluster is this voter alone once its log is applied.
        campaignAtStart = config.forceNewCluster || (confState.voters == [memberID] && confState.learners.isEmpty)

        var raftConfig = Raft.Config(id: memberID, electionTick: config.electionTicks, heartbeatTick: 1, storage: storage)
        snapshotIndex = try storage.snapshot().metadata.index
        consistentIndex = try store.consistentIndex().index
        // Raft hands back every committed entry after the snapshot, as etcd
        // does: membership changes must reach raft's configuration again
        // (the snapshot's is older), while entries the backend already
        // holds are skipped by the loop (after an installed snapshot the
        // backend may even be ahead of the raft log). Starting raft past
        // them instead forgot every conf change since the last snapshot — a
        // restarted leader never replicated to a member added meanwhile
        // (found by the simulation).
        raftConfig.applied = snapshotIndex
        raftConfig.checkQuorum = true
        raftConfig.preVote = config.preVote
        raftConfig.randomSeed = memberID
        applied = snapshotIndex
        node = try RawNode(config: raftConfig)
        self.backend = backend
        self.store = store
        self.lessor = lessor
        self.membership = membership
        self.alarms = alarms
        self.auth = auth
        self.wal = wal
        self.storage = storage
        self.snapshotter = snapshotter
    }

    /// --force-new-cluster, as etcd restarts a member standalone: entries
    /// past the commit index are dropped (they were never acknowledged),
    /// and conf changes that leave this member the only one are appended
    /// and committed — adding itself first if the log had removed it, then
    /// removing every other member of the snapshot and the log. Applying
    /// them removes the others' records as any removal does.
    static func forceNewCluster(log: [Raft.Entry], hardState: Raft.HardState, memberID: UInt64,
                                snapshotMembers: [UInt64], logger: Logger)
        throws -> (log: [Raft.Entry], hardState: Raft.HardState, appended: [Raft.Entry])
    {
        let committed = log.filter { $0.index <= hardState.commit }
        if committed.count < log.count {
            logger.info("discarding uncommitted WAL entries", metadata: [
                "entry-index": "\(hardState.commit + 1)", "commit-index-from-wal": "\(hardState.commit)",
                "number-of-discarded-entries": "\(log.count - committed.count)",
            ])
        }
        let codec = ProtobufConfChangeCodec()
        var members = Set(snapshotMembers)
        for entry in committed where entry.type == .confChange {
            let change = try codec.decodeConfChange(entry.data)
            switch change.type {
            case .addNode, .addLearnerNode: members.insert(change.nodeID)
            case .removeNode: members.remove(change.nodeID)
            case .updateNode: break
            }
        }
        var changes: [ConfChange] = []
        if !members.contains(memberID) {
            // Raft refuses a configuration without voters: self comes first.
            let record = MemberRecord(id: memberID, peerURLs: ["http://localhost:2380"], isLearner: false)
            changes.append(ConfChange(type: .addNode, nodeID: memberID, context: Data(record.json().utf8)))
        }
        for id in members.sorted() where id != memberID {
            changes.append(ConfChange(type: .removeNode, nodeID: id))
        }
        var next = hardState.commit
        let appended = changes.map { change -> Raft.Entry in
            next += 1
            return Raft.Entry(term: hardState.term, index: next, type: .confChange, data: codec.encode(change))
        }
        var state = hardState
        state.commit = next
        logger.info("forcing restart member", metadata: [
            "local-member-id": "\(String(memberID, radix: 16))", "commit-index": "\(state.commit)",
        ])
        return (committed + appended, state, appended)
    }

    private static func createWAL(_ config: ServerConfig, _ environment: MemberEnvironment,
                                  memberID: UInt64, clusterID: UInt64) throws -> WAL {
        var metadata = Etcdserverpb_Metadata()
        metadata.nodeID = memberID
        metadata.clusterID = clusterID
        return try WAL.create(dir: config.walDir, metadata: try metadata.serializedData(),
                              segmentSizeBytes: environment.walSegmentSizeBytes, fs: environment.walFileSystem)
    }
}

/// Backend files received from a leader, waiting in the snap dir to be
/// swapped in as the backend.
enum SnapshotFiles {
    /// Where a received snapshot's backend waits to be installed.
    static func dbPath(_ config: ServerConfig, index: UInt64) -> String {
        config.snapDir + "/" + String(format: "%016llx", index) + ".snap.db"
    }

    /// At start, before the backend opens: a received snapshot that is
    /// recorded (it is the newest raft snapshot) but whose backend was not
    /// yet swapped in is swapped in now; other received files are dropped.
    static func finishInstall(config: ServerConfig, snapshotIndex: UInt64?) throws {
        if let snapshotIndex {
            let path = dbPath(config, index: snapshotIndex)
            if FileManager.default.fileExists(atPath: path) {
                guard rename(path, config.backendPath) == 0 else {
                    throw EtcdError(.dataLoss, "etcdserver: cannot install the snapshot database \(path): errno \(errno)")
                }
                let dir = Glibc.open(config.snapDir, O_RDONLY)
                if dir >= 0 { fsync(dir); Glibc.close(dir) }
            }
        }
        removeLeftovers(config)
    }

    /// Deletes received snapshot files that will never be installed.
    static func removeLeftovers(_ config: ServerConfig) {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: config.snapDir)) ?? []
        for file in files where file.hasSuffix(".snap.db") || file.hasSuffix(".db.part") {
            unlink(config.snapDir + "/" + file)
        }
    }
}
