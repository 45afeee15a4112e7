import EtcdServer
import Foundation
import PeerTransport

/// The simulated network between members: every message becomes an event
/// delivered after a seeded delay, unless a fault drops it. Faults: links
/// cut one way or both, loss, duplication, extra delay per sender (a slow
/// link or a slow disk), and reordering (every message draws its own delay).
struct NetworkFaults {
    /// Directed links that drop everything (from, to).
    var blocked: Set<Link> = []
    var lossRate = 0.0
    var duplicateRate = 0.0
    /// Added to every message's base delay, in microseconds.
    var extraDelay: ClosedRange<Int64> = 0...0
    /// Extra delay of everything a member sends (slow link / slow disk).
    var slowSender: [UInt64: Int64] = [:]

    struct Link: Hashable {
        var from: UInt64
        var to: UInt64
    }

    func isBlocked(_ from: UInt64, _ to: UInt64) -> Bool { blocked.contains(Link(from: from, to: to)) }
}

/// One member's transport: hands messages to the world's network. Used
/// only on the simulation's thread.
final class SimTransport: RaftTransport, @unchecked Sendable {
    let localID: UInt64
    unowned let world: SimWorld

    init(localID: UInt64, world: SimWorld) {
        self.localID = localID
        self.world = world
    }

    func start(listenURLs: [String]) async throws {}
    var boundPorts: [Int] { [] }
    func setPeer(id: UInt64, urls: [String]) {}
    func removePeer(id: UInt64) {}
    func stop() async {}

    func send(_ message: Data, to peer: UInt64) {
        world.transmit(message, from: localID, to: peer)
    }

    func sendSnapshot(
        _ message: Data, to peer: UInt64,
        writeBody: @escaping @Sendable (_ write: (UnsafeRawBufferPointer) throws -> Void) throws -> Void,
        completion: @escaping @Sendable (Bool) -> Void
    ) {
        world.transmitSnapshot(message, from: localID, to: peer, writeBody: writeBody, completion: completion)
    }

    func fetchHashKV(_ request: Data, from peer: UInt64, timeout: Duration,
                     completion: @escaping @Sendable (Result<Data, any Error>) -> Void) {
        world.askHash(request, from: localID, to: peer, completion: completion)
    }
}
