import EtcdProto
import Foundation
import Logging
import PeerTransport
import WAL

/// How raft messages and snapshots leave a member. `PeerTransport` (TCP)
/// in production; the simulation's network in tests.
package protocol RaftTransport: AnyObject, Sendable {
    func start(listenURLs: [String]) async throws
    var boundPorts: [Int] { get }
    func setPeer(id: UInt64, urls: [String])
    func removePeer(id: UInt64)
    func send(_ message: Data, to peer: UInt64)
    func sendSnapshot(
        _ message: Data, to peer: UInt64,
        writeBody: @escaping @Sendable (_ write: (UnsafeRawBufferPointer) throws -> Void) throws -> Void,
        completion: @escaping @Sendable (Bool) -> Void)
    /// Asks `peer` a hash question (a marshaled HashKVRequest) as etcd asks
    /// a peer's `/members/hashkv`; `completion` gets the marshaled
    /// HashKVResponse or the failure (`PeerTransportError.rejected` with the
    /// peer's reason when it refused), once, from any thread.
    func fetchHashKV(_ request: Data, from peer: UInt64, timeout: Duration,
                     completion: @escaping @Sendable (Result<Data, any Error>) -> Void)
    func stop() async
}

extension PeerTransport: RaftTransport {
    package func fetchHashKV(_ request: Data, from peer: UInt64, timeout: Duration,
                             completion: @escaping @Sendable (Result<Data, any Error>) -> Void) {
        Task {
            do { completion(.success(try await fetchHashKV(request, from: peer, timeout: timeout))) } catch { completion(.failure(error)) }
        }
    }
}

/// What a member takes from the world: its clocks, its network, the file
/// system under the WAL, and who drives its raft loop. Production uses
/// `.production`; the deterministic simulation replaces every part, so the
/// same member code runs under simulated time, network and disk.
package struct MemberEnvironment: Sendable {
    /// The monotonic clock of ticks, request deadlines and leases.
    package var now: @Sendable () -> ContinuousClock.Instant = { ContinuousClock.now }
    /// Wall-clock milliseconds, for the time part of generated ids.
    package var wallMilliseconds: @Sendable () -> UInt64 = { UInt64(Date().timeIntervalSince1970 * 1000) }
    /// Builds the transport; nil: the TCP `PeerTransport`.
    package var makeTransport: (@Sendable (PeerTransportConfig, any PeerTransportDelegate) -> any RaftTransport)?
    package var walFileSystem: any WALFileSystem = PosixFileSystem()
    package var walSegmentSizeBytes: Int64 = WAL.defaultSegmentSizeBytes
    /// Backend batching; nil: the backend's defaults (time-based commits,
    /// which a simulation replaces by a count so runs replay exactly).
    package var backendBatchIntervalMilliseconds: Int?
    package var backendBatchLimitOps: Int?
    /// No loop thread and no watch-sync thread: the owner calls `step()`
    /// whenever there is input or a tick is due, all on one thread.
    package var manualLoop = false
    /// Sees every write the member applies (member id, revision, events):
    /// the simulation's reference history for the watch checker.
    package var observeApply: (@Sendable (UInt64, Int64, [Mvccpb_Event]) -> Void)?
    /// Runs long maintenance work off the raft loop (an online defrag's
    /// copy). The simulation runs it in place, so runs replay exactly.
    package var runInBackground: @Sendable (@escaping @Sendable () -> Void) -> Void = { work in
        DispatchQueue.global().async(execute: work)
    }
    /// Sees every compaction the member applies (member id, revision),
    /// auto-compactions included: the simulation's record of compaction
    /// revisions, where etcd drops a write's prev_kv.
    package var observeCompaction: (@Sendable (UInt64, Int64) -> Void)?
    /// Random bits for simple-token prefixes (the simulation seeds its own,
    /// so runs replay exactly).
    package var randomBits: @Sendable () -> UInt64 = { UInt64.random(in: .min ... .max) }
    /// The member's logger; nil: the process's "etcd" logger.
    package var logger: Logger?

    package init() {}

    package static var production: MemberEnvironment { MemberEnvironment() }
}

extension Duration {
    var secondsDouble: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
