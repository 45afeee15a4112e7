import TransportSecurity
import Backend
import EtcdMetrics
import EtcdProto
import Foundation
import Locks
import PeerTransport
import Raft
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
    ///
    /// With `--experimental-initial-corrupt-check` a member that already has
    /// data compares its HashKV with its peers' before it is handed out, as
    /// etcd does before serving; on a mismatch it is stopped and the error
    /// thrown.
    public static func open(config: ServerConfig) async throws -> Member {
        let hasData = WAL.exists(in: config.walDir)
        let member = try await openOrJoin(config: config)
        if let jwt = member.jwt {
            do { try await jwt.prepare() } catch {
                await member.stopAndWait()
                throw EtcdError(unconverted: error)
            }
        }
        guard config.initialCorruptCheck, hasData else { return member }
        do {
            try await member.checkInitialHashKV()
        } catch {
            await member.stopAndWait()
            throw error
        }
        return member
    }

    /// The peer side's certificates (`--peer-cert-file`, ... or
    /// `--peer-auto-tls`), loaded and checked; nil when none is configured
    /// (every peer URL is then `http://`, which the settings checked).
    static func peerCredentials(_ config: ServerConfig) throws -> TLSCredentials? {
        guard !config.peerTLS.isEmpty else { return nil }
        let hosts = config.listenPeerURLs.compactMap { try? ListenAddress(parsing: $0).host }
        return try TLSCredentials(settings: config.peerTLS, autoTLSDirectory: config.dataDir + "/fixtures/peer",
                                  hosts: hosts, extendedUsage: .serverAndClient)
    }

    private static func openOrJoin(config: ServerConfig) async throws -> Member {
        guard config.initialClusterState == "existing", !WAL.exists(in: config.walDir) else {
            return try Member(config: config)
        }
        let security = try peerCredentials(config)
        let mine = config.initialAdvertisePeerURLs.sorted()
        let others = config.initialCluster.flatMap(\.peerURLs).filter { !mine.contains($0) }
        // A peer that has not applied the MemberAdd yet does not know us:
        // ask the others, and again for a few seconds.
        var lastError: any Error = EtcdError(.unavailable, "etcdserver: no peer URLs to join through")
        var found: Bootstrap.JoinInfo?
        for attempt in 0..<25 where found == nil {
            if attempt > 0 { try await Task.sleep(for: .milliseconds(200)) }
            for url in others {
                do {
                    let data = try await PeerTransport.fetchClusterInfo(url: url, security: security)
                    guard let info = parseClusterInfo(data) else {
                        throw EtcdError(.internal, "etcdserver: cannot parse the cluster information from \(url)")
                    }
                    guard let me = info.members.first(where: { $0.peerURLs.sorted() == mine }) else {
                        throw EtcdError(.failedPrecondition,
                                        "etcdserver: no member with peer URLs \(mine) in the cluster at \(url); add it with `etcdctl member add` first")
                    }
                    found = Bootstrap.JoinInfo(memberID: me.id, clusterID: info.clusterID, members: info.members)
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
        metricsRecorder?.peerReceivedBytes(peer, data.count)
        mailbox.post { $0.incoming.append(message) }
    }

    func receiveSnapshot(_ data: Data, bodyPath: String, from peer: UInt64) {
        guard let decoded = try? Raftpb_Message(serializedBytes: data), let message = Raft.Message(decoded),
              message.type == .msgSnap, let snapshot = message.snapshot else {
            unlink(bodyPath)
            return
        }
        let target = SnapshotFiles.dbPath(config, index: snapshot.metadata.index)
        guard rename(bodyPath, target) == 0 else {
            unlink(bodyPath)
            return
        }
        logger.info("received database snapshot", metadata: [
            "remote-peer-id": "\(String(peer, radix: 16))", "snapshot-index": "\(snapshot.metadata.index)"])
        mailbox.post { $0.incoming.append(message) }
    }

    func peerUnreachable(_ peer: UInt64) {
        mailbox.post { _ = $0.unreachable.insert(peer) }
    }

    func rejected(by peer: UInt64, reason: String) {
        if reason.contains("removed") {
            logger.warning("the member has been permanently removed from the cluster", metadata: [
                "local-member-id": "\(String(memberID, radix: 16))", "remote-peer-id": "\(String(peer, radix: 16))"])
            mailbox.stop()
        } else {
            logger.error("peer rejected the connection", metadata: [
                "remote-peer-id": "\(String(peer, radix: 16))", "reason": "\(reason)"])
        }
    }

    /// On the leader: how far a learner's log is, against the leader's.
    func learnerProgress(_ id: UInt64) -> (match: UInt64, leaderLast: UInt64)? {
        mailbox.state.withLock { $0.status.learnerProgress[id] }
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

    func transport(hashKVRequest request: Data, from: UInt64, reply: @escaping @Sendable (Result<Data, PeerRefusal>) -> Void) {
        guard let member else { return reply(.failure(PeerRefusal("etcdserver: server stopped"))) }
        // Hashing reads the whole key space: never on the event loop.
        DispatchQueue.global().async { reply(member.answerHashKV(request)) }
    }
}
