import Backend
import Bbolt
import EtcdServer
import Foundation
import MVCC

extension SimWorld {
    /// Maintenance.Snapshot on one member, as a client would stream it: the
    /// chunks are written to a file, which must end with the SHA-256 of the
    /// rest, read as bbolt, load into a fresh backend, and hash (HashKV at
    /// its latest revision, with the same compaction revision) as the member
    /// does at that revision. In the simulation the copy is taken between
    /// two events, so it is the member's state at one instant; the copy
    /// under concurrent writes is SnapshotE2ETests' part.
    func snapshot(_ node: SimNode, _ done: @escaping () -> Void) {
        defer { schedule(after: 0) { done() } }
        guard let member = node.member else { return }
        count("snapshot-stream")
        snapshotChecks += 1
        let dir = root + "/snapshot-check-\(snapshotChecks)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let stream = try member.backendSnapshot()
            let file = dir + "/snapshot.db"
            FileManager.default.createFile(atPath: file, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: file))
            while let chunk = try stream.next(limit: 32 * 1024) { try handle.write(contentsOf: chunk) }
            let digest = stream.digest()
            try handle.write(contentsOf: digest)
            try handle.close()

            let reader = try BboltReader(path: file)
            let backend = try Backend(path: dir + "/db")
            defer { try? backend.close() }
            _ = try SnapshotRestore.copyBuckets(from: reader, into: backend)
            try backend.forceCommit()
            let copy = try KVStore(backend: backend).hashKV(0)
            // The member's hash now (revision 0): the copy is this instant's
            // state. (Asking for the copy's revision by number would, when a
            // compaction was just made at it, answer with the hash recorded
            // for that compaction, whose compact revision is the one before.)
            let live = try member.hashKV(revision: 0)
            if live.currentRevision != copy.currentRevision {
                violation("\(node.name): snapshot at revision \(copy.currentRevision), the member at \(live.currentRevision)")
            }
            log("\(node.name) snapshot: \(reader.databaseBytes) bytes at revision \(copy.currentRevision)")
            if copy.hash.hash != live.hash || copy.hash.compactRevision != live.compactRevision {
                violation("\(node.name): snapshot at revision \(copy.currentRevision) hashes \(copy.hash.hash) (compacted at \(copy.hash.compactRevision)), the member \(live.hash) (compacted at \(live.compactRevision))")
            }
        } catch let error as EtcdError {
            // A revision the member compacted away meanwhile cannot happen
            // (nothing runs between); any refusal is logged, not a violation.
            log("\(node.name) snapshot refused: \(error)")
        } catch {
            violation("\(node.name): snapshot failed: \(error)")
        }
    }
}
