import Backend
import EtcdProto
import Foundation
import PeerTransport
import Raft
import Synchronization
import WAL

/// The member's side of the peer transport: raft messages out and in,
/// snapshots of the backend for followers too far behind, and joining a
/// running cluster.
extension Member {
    /// Starts listening on `--listen-peer-urls`.
    public func startPeers() async throws {
        try await peers.start(listenURLs: config.listenPeerURLs)
    }

    /// The peer ports actually bound (for tests that listen on port 0).
    public var peerPorts: [Int] { peers.boundPorts }

    /// Opens the member for `config`. With `--initial-cluster-state
    /// existing` and a new data dir it first asks the running members (at
    /// the other `--initial-cluster` URLs) for the cluster id and for the
    /// id `member add` gave this member's peer URLs.
    public static func open(config: ServerConfig) async throws -> Member {
        guard config.initialClusterState == "existing", !WAL.exists(in: config.walDir) else {
            return try Member(config: config)
        }
        let mine = config.initialAdvertisePeerURLs.sorted()
        let others = config.initialCluster.flatMap(\.peerURLs).filter { !mine.contains($0) }
        // A peer that has not applied the MemberAdd yet does not know us:
        // ask the others, and again for a few seconds.
        var lastError: any Error = EtcdError(.unavailable, "etcdserver: no peer URLs to join through")
        var found: JoinInfo?
        for attempt in 0..<25 where found == nil {
            if attempt > 0 { try await Task.sleep(for: .milliseconds(200)) }
            for url in others {
                do {
                    let data = try await PeerTransport.fetchClusterInfo(url: url)
                    guard let info = parseClusterInfo(data) else {
                        throw EtcdError(.internal, "etcdserver: cannot parse the cluster information from \(url)")
                    }
                    guard let me = info.members.first(where: { $0.peerURLs.sorted() == mine }) else {
                        throw EtcdError(.failedPrecondition,
                                        "etcdserver: no member with peer URLs \(mine) in the cluster at \(url); add it with `etcdctl member add` first")
                    }
                    found = JoinInfo(memberID: me.id, clusterID: info.clusterID, members: info.members)
                    break
                } catch {
                    lastError = error
                }
            }
        }
        guard let found else { throw lastError }
        return try Member(config: config, joining: found)
    }

    // MARK: - From the transport (event loop threads)

    func receive(_ data: Data, from peer: UInt64) {
        guard let decoded = try? Raftpb_Message(serializedBytes: data), let message = Raft.Message(decoded) else {
            logger.warning("dropped an undecodable message from peer", metadata: ["remote-peer-id": "\(String(peer, radix: 16))"])
            return
        }
        shared.withLock { $0.incoming.append(message) }
        signal()
    }

    func receiveSnapshot(_ data: Data, bodyPath: String, from peer: UInt64) {
        guard let decoded = try? Raftpb_Message(serializedBytes: data), let message = Raft.Message(decoded),
              message.type == .msgSnap, let snapshot = message.snapshot else {
            unlink(bodyPath)
            return
        }
        let target = Self.snapshotDBPath(config, index: snapshot.metadata.index)
        guard rename(bodyPath, target) == 0 else {
            unlink(bodyPath)
            return
        }
        logger.info("received database snapshot", metadata: [
            "remote-peer-id": "\(String(peer, radix: 16))", "snapshot-index": "\(snapshot.metadata.index)"])
        shared.withLock { $0.incoming.append(message) }
        signal()
    }

    func peerUnreachable(_ peer: UInt64) {
        shared.withLock { _ = $0.unreachable.insert(peer) }
        signal()
    }

    func rejected(by peer: UInt64, reason: String) {
        if reason.contains("removed") {
            logger.warning("the member has been permanently removed from the cluster", metadata: [
                "local-member-id": "\(String(memberID, radix: 16))", "remote-peer-id": "\(String(peer, radix: 16))"])
            shared.withLock { $0.stopped = true }
            signal()
        } else {
            logger.error("peer rejected the connection", metadata: [
                "remote-peer-id": "\(String(peer, radix: 16))", "reason": "\(reason)"])
        }
    }

    // MARK: - The raft loop's side

    func stepPeerMessage(_ message: Raft.Message, _ loop: inout RaftLoopState) {
        // Messages from members outside the configuration, or stale ones,
        // are refused by raft; nothing else to do with them.
        try? loop.node.step(message)
    }

    func send(_ messages: [Raft.Message], _ loop: inout RaftLoopState) {
        guard !messages.isEmpty else { return }
        config.failpoints.hit(.beforeSendToPeers)
        defer { config.failpoints.hit(.afterSendToPeers) }
        for message in messages {
            if message.type == .msgSnap {
                sendSnapshot(message, &loop)
                continue
            }
            guard let bytes = try? Raftpb_Message(message).serializedData() else { continue }
            peers.send(bytes, to: message.to)
        }
    }

    /// Raft wants a follower to get a snapshot: send the whole backend as it
    /// is now (committed first), described as a snapshot at the applied
    /// index with the applied membership, as etcd does. The copy is
    /// streamed from a background thread; the outcome is reported to raft.
    private func sendSnapshot(_ message: Raft.Message, _ loop: inout RaftLoopState) {
        var message = message
        let peer = message.to
        do {
            try backend.forceCommit()
            let term = try loop.storage.term(loop.applied)
            message.snapshot = Raft.Snapshot(
                data: Data(),
                metadata: SnapshotMetadata(confState: loop.confState, index: loop.applied, term: term))
        } catch {
            loop.node.reportSnapshot(peer, status: .failure)
            return
        }
        guard let bytes = try? Raftpb_Message(message).serializedData() else { return }
        logger.info("sending database snapshot", metadata: [
            "remote-peer-id": "\(String(peer, radix: 16))", "snapshot-index": "\(loop.applied)"])
        let backend = self.backend
        peers.sendSnapshot(bytes, to: peer, writeBody: { write in
            _ = try backend.snapshot(to: write)
        }, completion: { [weak self] delivered in
            guard let self else { return }
            if !delivered {
                logger.warning("failed to send database snapshot", metadata: ["remote-peer-id": "\(String(peer, radix: 16))"])
            }
            shared.withLock { $0.snapshotReports.append((peer, delivered)) }
            signal()
        })
    }

    /// A snapshot from the leader is durable (snap file and WAL marker):
    /// swap its backend in and rebuild everything that lives over it.
    func installSnapshot(_ snapshot: Raft.Snapshot, _ loop: inout RaftLoopState) throws {
        let index = snapshot.metadata.index
        let path = Self.snapshotDBPath(config, index: index)
        guard FileManager.default.fileExists(atPath: path) else {
            throw EtcdError(.dataLoss, "etcdserver: no database file for snapshot at index \(index)")
        }
        let before = Set(membership.members.map(\.id))
        do {
            // The swap happens under the store's write lock, so no read
            // sees the new data through the old index.
            try store.reload { [backend] in try backend.replace(withFileAt: path) }
            try lessor.reload(now: leaseNow(), extend: Duration.milliseconds(config.electionTimeoutMilliseconds))
        } catch {
            throw EtcdError(.dataLoss, "etcdserver: cannot load the received snapshot: \(error)")
        }
        lessor.restoreAttachments(store.restoredLeases)
        watchable.restore()
        try membership.load(from: backend)
        let after = membership.members
        for id in before.subtracting(after.map(\.id)) { peers.removePeer(id: id) }
        for record in after where record.id != memberID { peers.setPeer(id: record.id, urls: record.peerURLs) }
        loop.confState = snapshot.metadata.confState
        loop.applied = index
        loop.snapshotIndex = index
        loop.compactedTo = index
        loop.skipThrough = max(index, try backend.consistentIndex().index)
        loop.proposedHere = loop.proposedHere.filter { $0.key > index }
        Self.removeSnapshotLeftovers(config, keeping: nil)
        logger.info("applied snapshot", metadata: [
            "snapshot-index": "\(index)", "backend-consistent-index": "\(loop.skipThrough)",
            "revision": "\(store.currentRevision)"])
    }

    /// Where a received snapshot's backend waits to be installed.
    static func snapshotDBPath(_ config: ServerConfig, index: UInt64) -> String {
        config.snapDir + "/" + String(format: "%016llx", index) + ".snap.db"
    }

    /// At start, before the backend opens: a received snapshot that is
    /// recorded (it is the newest raft snapshot) but whose backend was not
    /// yet swapped in is swapped in now; other received files are dropped.
    static func finishSnapshotInstall(config: ServerConfig, snapshotIndex: UInt64?) throws {
        if let snapshotIndex {
            let path = snapshotDBPath(config, index: snapshotIndex)
            if FileManager.default.fileExists(atPath: path) {
                guard rename(path, config.backendPath) == 0 else {
                    throw EtcdError(.dataLoss, "etcdserver: cannot install the snapshot database \(path): errno \(errno)")
                }
                let dir = Glibc.open(config.snapDir, O_RDONLY)
                if dir >= 0 { fsync(dir); Glibc.close(dir) }
            }
        }
        removeSnapshotLeftovers(config, keeping: nil)
    }

    /// Deletes received snapshot files that will never be installed.
    static func removeSnapshotLeftovers(_ config: ServerConfig, keeping: String?) {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: config.snapDir)) ?? []
        for file in files where file.hasSuffix(".snap.db") || file.hasSuffix(".db.part") {
            let path = config.snapDir + "/" + file
            if path != keeping { unlink(path) }
        }
    }

    /// On the leader: how far a learner's log is, against the leader's.
    func learnerProgress(_ id: UInt64) -> (match: UInt64, leaderLast: UInt64)? {
        shared.withLock { $0.learnerProgress[id] }
    }
}

/// The transport's delegate: hands everything to the member (which it
/// holds weakly: the member owns the transport).
final class PeerInbox: PeerTransportDelegate {
    private struct Box { weak var member: Member? }
    private let box = Mutex(Box())

    var member: Member? {
        get { box.withLock { $0.member } }
        set { box.withLock { $0.member = newValue } }
    }

    func transport(received message: Data, from: UInt64) { member?.receive(message, from: from) }

    func transport(receivedSnapshot message: Data, bodyPath: String, from: UInt64) {
        if let member { member.receiveSnapshot(message, bodyPath: bodyPath, from: from) } else { unlink(bodyPath) }
    }

    func transport(unreachable peer: UInt64) { member?.peerUnreachable(peer) }
    func transport(isRemoved id: UInt64) -> Bool { member?.membership.isRemoved(id) ?? false }
    func transport(rejectedBy peer: UInt64, reason: String) { member?.rejected(by: peer, reason: reason) }
    func transportClusterInfo() -> Data { member?.clusterInfoJSON() ?? Data() }
}
