import Backend
import EtcdProto
import Foundation
import Raft
import WAL

/// The loop's side of the peer transport: raft messages out, backend
/// snapshots to followers too far behind, and installing a snapshot a
/// leader sent.
extension RaftLoop {
    func send(_ messages: [Raft.Message]) throws {
        guard !messages.isEmpty else { return }
        try config.failpoints.hit(.beforeSendToPeers)
        for message in messages {
            if message.type == .msgSnap {
                sendSnapshot(message)
                continue
            }
            guard let bytes = try? Raftpb_Message(message).serializedData() else { continue }
            if let metrics { sent(message, bytes: bytes.count, to: metrics) }
            peers.send(bytes, to: message.to)
        }
        try config.failpoints.hit(.afterSendToPeers)
    }

    /// Raft wants a follower to get a snapshot: send the whole backend as it
    /// is now (committed first), described as a snapshot at the applied
    /// index with the applied membership, as etcd does. The copy is
    /// streamed from a background thread; the outcome is reported to raft
    /// through the mailbox.
    private func sendSnapshot(_ message: Raft.Message) {
        var message = message
        let peer = message.to
        do {
            try backend.forceCommit()
            let term = try storage.term(applied)
            message.snapshot = Raft.Snapshot(
                data: Data(),
                metadata: SnapshotMetadata(confState: confState, index: applied, term: term))
        } catch {
            node.reportSnapshot(peer, status: .failure)
            return
        }
        guard let bytes = try? Raftpb_Message(message).serializedData() else { return }
        logger.info("sending database snapshot", metadata: [
            "remote-peer-id": "\(String(peer, radix: 16))", "snapshot-index": "\(applied)"])
        let (backend, mailbox, logger, metrics) = (self.backend, self.mailbox, self.logger, self.metrics)
        let started = ContinuousClock.now
        peers.sendSnapshot(bytes, to: peer, writeBody: { write in
            _ = try backend.snapshot(to: write)
        }, completion: { delivered in
            if delivered { metrics?.backendSnapshotSeconds.record((ContinuousClock.now - started).timeInSeconds) }
            if !delivered {
                logger.warning("failed to send database snapshot", metadata: ["remote-peer-id": "\(String(peer, radix: 16))"])
            }
            mailbox.post { $0.snapshotReports.append((peer, delivered)) }
        })
    }

    /// A snapshot from the leader is durable (snap file and WAL marker):
    /// swap its backend in and rebuild everything that lives over it.
    func installSnapshot(_ snapshot: Raft.Snapshot) throws {
        let index = snapshot.metadata.index
        let path = SnapshotFiles.dbPath(config, index: index)
        guard FileManager.default.fileExists(atPath: path) else {
            throw EtcdError(.dataLoss, "etcdserver: no database file for snapshot at index \(index)")
        }
        try applier.restore(fromBackendAt: path, electionTimeout: .milliseconds(config.electionTimeoutMilliseconds))
        confState = snapshot.metadata.confState
        applied = index
        snapshotIndex = index
        compactedTo = index
        skipThrough = max(index, try backend.consistentIndex().index)
        proposedHere = proposedHere.filter { $0.key > index }
        SnapshotFiles.removeLeftovers(config)
        logger.info("applied snapshot", metadata: [
            "snapshot-index": "\(index)", "backend-consistent-index": "\(skipThrough)",
            "revision": "\(store.currentRevision)"])
    }
}
