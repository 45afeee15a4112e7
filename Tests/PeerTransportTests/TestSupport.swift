import Checksum
import Dispatch
import Foundation
import Locks
import NIOCore
import NIOPosix
import Testing

@testable import PeerTransport

/// Records everything a transport tells its delegate.
final class Recorder: PeerTransportDelegate {
    struct Snapshot: Sendable {
        var message: Data
        var bodyPath: String
        var from: UInt64
    }
    /// What `waitConnected` sends. Probes are counted apart from `messages`:
    /// one still in flight when a test takes its baseline would otherwise
    /// land among the messages the test checks.
    static let probe = Data("probe".utf8)
    struct State {
        var messages: [UInt64: [Data]] = [:]
        var probes: [UInt64: Int] = [:]
        var snapshots: [Snapshot] = []
        var unreachable: [UInt64: Int] = [:]
        var rejected: [(peer: UInt64, reason: String)] = []
        var removed: Set<UInt64> = []
        var clusterInfo = Data()
    }
    let state = Mutex(State())

    func transport(received message: Data, from: UInt64) {
        state.withLock {
            if message == Recorder.probe {
                $0.probes[from, default: 0] += 1
            } else {
                $0.messages[from, default: []].append(message)
            }
        }
    }
    func transport(receivedSnapshot message: Data, bodyPath: String, from: UInt64) {
        state.withLock { $0.snapshots.append(Snapshot(message: message, bodyPath: bodyPath, from: from)) }
    }
    func transport(unreachable peer: UInt64) {
        state.withLock { $0.unreachable[peer, default: 0] += 1 }
    }
    func transport(isRemoved id: UInt64) -> Bool {
        state.withLock { $0.removed.contains(id) }
    }
    func transport(rejectedBy peer: UInt64, reason: String) {
        state.withLock { $0.rejected.append((peer, reason)) }
    }
    func transportClusterInfo() -> Data {
        state.withLock { $0.clusterInfo }
    }
    /// Answers a hash question with its bytes reversed, "refuse" with a refusal.
    func transport(hashKVRequest request: Data, from: UInt64, reply: @escaping @Sendable (Result<Data, PeerRefusal>) -> Void) {
        if request == Data("refuse".utf8) { return reply(.failure(PeerRefusal("refused by \(from)"))) }
        DispatchQueue.global().async { reply(.success(Data(request.reversed()))) }
    }

    func messages(from peer: UInt64) -> [Data] { state.withLock { $0.messages[peer] ?? [] } }
    func count(from peer: UInt64) -> Int { state.withLock { $0.messages[peer]?.count ?? 0 } }
    func probeCount(from peer: UInt64) -> Int { state.withLock { $0.probes[peer] ?? 0 } }
    func unreachableCount(_ peer: UInt64) -> Int { state.withLock { $0.unreachable[peer] ?? 0 } }
    func rejections(_ peer: UInt64) -> [String] {
        state.withLock { $0.rejected.filter { $0.peer == peer }.map(\.reason) }
    }
    var snapshots: [Snapshot] { state.withLock { $0.snapshots } }
}

/// One transport with its delegate and snapshot directory.
struct Node {
    let id: UInt64
    let transport: PeerTransport
    let recorder: Recorder
    let directory: String
    let port: Int
    var url: String { "http://127.0.0.1:\(port)" }

    static func start(
        id: UInt64, cluster: UInt64 = 1, port: Int = 0, directory: String? = nil,
        recorder: Recorder = Recorder(), group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        configure: (inout PeerTransportConfig) -> Void = { _ in }
    ) async throws -> Node {
        let dir = directory ?? makeTempDirectory()
        var config = PeerTransportConfig(localID: id, clusterID: cluster, snapshotDirectory: dir)
        config.maxReconnectBackoff = .milliseconds(200)
        configure(&config)
        let transport = PeerTransport(config: config, delegate: recorder, group: group)
        try await transport.start(listenURLs: ["http://127.0.0.1:\(port)"])
        return Node(id: id, transport: transport, recorder: recorder, directory: dir, port: transport.boundPorts[0])
    }

    func connect(to others: Node...) {
        for other in others { transport.setPeer(id: other.id, urls: [other.url]) }
    }

    func files(withSuffix suffix: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(suffix) }
    }
}

/// Starts a node on a port it used before, retrying while the port is briefly taken.
func restart(id: UInt64, port: Int, directory: String) async throws -> Node {
    for _ in 0..<50 {
        if let node = try? await Node.start(id: id, port: port, directory: directory) { return node }
        try await Task.sleep(for: .milliseconds(100))
    }
    return try await Node.start(id: id, port: port, directory: directory)
}

func makeTempDirectory() -> String {
    let path = FileManager.default.temporaryDirectory
        .appendingPathComponent("peer-transport-tests-\(UUID().uuidString)").path
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
func canConnect(port: Int) async -> Bool {
    guard let channel = try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port).get() else { return false }
    try? await channel.close().get()
    return true
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes.
@discardableResult
func eventually(timeout: Duration = .seconds(10), _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

/// Sends small probe messages until one arrives (the connection is up).
func waitConnected(_ from: Node, _ to: Node, timeout: Duration = .seconds(10)) async -> Bool {
    let before = to.recorder.probeCount(from: from.id)
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        from.transport.send(Recorder.probe, to: to.id)
        if await eventually(timeout: .milliseconds(100), { to.recorder.probeCount(from: from.id) > before }) {
            return true
        }
    }
    return false
}

/// A message tagged with its sequence number, `size` bytes long (at least 8).
func taggedMessage(_ seq: Int, size: Int) -> Data {
    var data = Data(count: max(8, size))
    data.withUnsafeMutableBytes { raw in
        raw.storeBytes(of: UInt64(seq).bigEndian, as: UInt64.self)
        for i in 8..<raw.count { raw[i] = UInt8(truncatingIfNeeded: seq &+ i) }
    }
    return data
}

func sequenceNumber(_ data: Data) -> Int? {
    guard data.count >= 8 else { return nil }
    return Int(data.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
}

/// Deterministic pseudo-random bytes (xorshift64*) for snapshot bodies.
struct BodyGenerator {
    var state: UInt64

    mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        var i = 0
        while i + 8 <= buffer.count {
            state ^= state >> 12
            state ^= state << 25
            state ^= state >> 27
            buffer.storeBytes(of: state &* 0x2545_F491_4F6C_DD1D, toByteOffset: i, as: UInt64.self)
            i += 8
        }
        while i < buffer.count {
            buffer[i] = UInt8(truncatingIfNeeded: state >> 7)
            i += 1
        }
    }
}

/// The CRC32C of a file's contents, or nil if unreadable.
func fileChecksum(_ path: String) -> (crc: UInt32, size: Int)? {
    guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
    defer { try? handle.close() }
    var crc: UInt32 = 0
    var size = 0
    while let chunk = try? handle.read(upToCount: 1 << 20), !chunk.isEmpty {
        crc = chunk.withUnsafeBytes { CRC32C.update(crc, $0) }
        size += chunk.count
    }
    return (crc, size)
}

/// Runs `sendSnapshot` and waits for its completion.
func sendSnapshot(
    _ node: Node, to peer: UInt64, message: Data,
    writeBody: @escaping @Sendable (_ write: (UnsafeRawBufferPointer) throws -> Void) throws -> Void
) async -> Bool {
    await withCheckedContinuation { continuation in
        node.transport.sendSnapshot(message, to: peer, writeBody: writeBody) { ok in
            continuation.resume(returning: ok)
        }
    }
}

/// A thread-safe flag tests use to coordinate with snapshot writer threads.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .sequentiallyConsistent) }
    var isSet: Bool { value.load(ordering: .sequentiallyConsistent) }

    /// Blocks the calling (non-async) thread until set or `timeout` passes.
    func wait(timeout: Duration = .seconds(20)) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !isSet && ContinuousClock.now < deadline { usleep(1000) }
        return isSet
    }
}

/// Stops each node, checks that nothing of it is left running and deletes its directory.
func stopAll(_ nodes: Node..., sourceLocation: SourceLocation = #_sourceLocation) async {
    for node in nodes {
        await node.transport.stop()
        #expect(
            node.transport.isQuiescent, "node \(node.id) left channels or jobs behind",
            sourceLocation: sourceLocation)
        try? FileManager.default.removeItem(atPath: node.directory)
    }
}

/// A fake peer that answers ok at once and then never reads.
final class AcceptAndStall: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelActive(context: ChannelHandlerContext) {
        var ok = context.channel.allocator.buffer(capacity: 5)
        ok.writeInteger(UInt32(0))
        ok.writeInteger(UInt8(0x02))
        context.writeAndFlush(wrapOutboundOut(ok), promise: nil)
        context.fireChannelActive()
    }
}
