/// Peer transport: carries Raft messages and snapshots between cluster
/// members over TCP, or over TLS for `https://` URLs (`TransportSecurity`:
/// a listener tells TLS from plaintext by a connection's first byte; a
/// dialer uses TLS for its peer's `https://` URL). Messages are opaque
/// bytes; this module knows nothing about Raft or protobuf.
///
/// # Wire protocol (version 1)
///
/// Every connection is a sequence of frames in both directions:
///
///     length: UInt32 big-endian   payload length (excludes these 5 bytes)
///     kind:   UInt8               see below
///     payload: length bytes
///
/// A receiver checks `length` against the limit for `kind` before buffering
/// the payload and closes the connection on violation: `maxMessageBytes` for
/// message, snapshot-message and cluster-info frames, 1 MiB for snapshot body
/// chunks, 4 KiB for control frames. Unknown kinds also close the connection.
///
/// | kind | name             | payload                                   | direction  |
/// |------|------------------|-------------------------------------------|------------|
/// | 0x01 | hello            | magic "ETPT" (UInt32), version (UInt8), clusterID, fromID, toID (UInt64 each), stream (UInt8: 1 messages, 2 snapshot, 3 cluster info, 4 hash) | dialer → acceptor |
/// | 0x02 | ok               | empty                                     | acceptor → dialer |
/// | 0x03 | error            | UTF-8 reason; the sender closes afterwards | either     |
/// | 0x10 | message          | one opaque message                        | dialer → acceptor |
/// | 0x20 | snapshot message | the message announcing the snapshot       | dialer → acceptor |
/// | 0x21 | snapshot chunk   | ≤ 1 MiB of the snapshot body              | dialer → acceptor |
/// | 0x22 | snapshot end     | body length (UInt64), CRC32C of body (UInt32) | dialer → acceptor |
/// | 0x23 | snapshot ack     | empty: body fsynced and handed over       | acceptor → dialer |
/// | 0x30 | cluster info     | opaque answer to a cluster-info query     | acceptor → dialer |
/// | 0x31 | hash request     | opaque question (etcd's HashKVRequest)    | dialer → acceptor |
/// | 0x32 | hash response    | opaque answer (etcd's HashKVResponse)     | acceptor → dialer |
///
/// The dialer's first frame is a hello. The acceptor answers with an error
/// frame and closes when: the magic/version is wrong ("unsupported
/// protocol"), the cluster ID is not its own ("cluster ID mismatch"), toID is
/// not its member ID ("member ID mismatch") or the delegate says fromID was
/// removed ("member removed"). Otherwise it answers ok. Cluster-info queries
/// may carry cluster ID 0 and toID 0; they are answered with one cluster-info
/// frame and the acceptor closes.
///
/// - Message streams are one-way: after ok, the dialer sends message frames
///   until either side closes. Every member dials every peer for its own
///   outgoing messages, over one long-lived connection per peer, so messages
///   to a peer arrive in order.
/// - A hash stream carries one question, as etcd's `/members/hashkv` peer
///   endpoint does: the dialer sends its hello and a hash request at once;
///   the acceptor, after the same checks as for messages and without an
///   ok, answers one hash response (or an error frame with the reason,
///   such as a compacted revision) and closes.
/// - A snapshot stream carries one snapshot: snapshot message, body chunks,
///   end. The acceptor streams the body into
///   `<snapshotDirectory>/<random>.db.part`, checks length and CRC32C, fsyncs
///   the file, renames it to `<random>.db`, fsyncs the directory, hands it to
///   its delegate and replies ack. Any failure before that deletes the file.
///
/// # Threads
///
/// Each peer's message connection lives on one event loop. `send` appends to
/// a mutex-protected bounded queue and, when none is pending, schedules one
/// task on that loop that writes everything queued (frames packed into
/// ~64 KiB buffers, stopping while the channel is not writable) and flushes
/// once. A failed connect drops the queue, reports the peer unreachable and
/// retries after a backoff (50 ms doubling to `maxReconnectBackoff`); while
/// it waits, sends are dropped and reported at once. A lost connection is
/// redialed at once and keeps its queue. Received messages go to the
/// delegate straight from the channel handler. Snapshot bodies are produced
/// on a dedicated thread per transfer and written to disk on a serial
/// dispatch queue, never on an event loop; the receiver stops reading from
/// the socket while disk writes lag.
import Foundation
import Locks
import NIOCore
import NIOPosix
import TransportSecurity

/// Settings of one transport.
public struct PeerTransportConfig: Sendable {
    /// This member's ID.
    public var localID: UInt64
    /// The cluster's ID; peers with another one are refused.
    public var clusterID: UInt64
    /// Where received snapshot bodies are written (files named "<random>.db.part", renamed to "<...>.db" when complete and fsynced).
    public var snapshotDirectory: String
    /// Messages held per peer while its connection is being set up or is not writable.
    public var maxQueuedMessagesPerPeer: Int = 4096
    /// Largest single message frame accepted or sent (bigger sends are dropped + reported unreachable).
    public var maxMessageBytes: Int = 64 << 20
    /// Certificates for `https://` listen URLs and for dialing peers'
    /// `https://` URLs (`--peer-cert-file`, ...); nil: plaintext only.
    public var security: TLSCredentials?
    /// Time allowed for connecting to a peer and its answer to our hello.
    public var dialTimeout: Duration = .seconds(1)
    /// Reconnect backoff starts at 50 ms and doubles up to this.
    public var maxReconnectBackoff: Duration = .seconds(1)

    public init(localID: UInt64, clusterID: UInt64, snapshotDirectory: String) {
        self.localID = localID
        self.clusterID = clusterID
        self.snapshotDirectory = snapshotDirectory
    }
}

/// Receives what the transport hears. All methods may be called from any
/// thread (usually an event loop) and must not block.
public protocol PeerTransportDelegate: AnyObject, Sendable {
    /// A message from peer `from` (cluster id already checked). Called on an event loop: must not block.
    func transport(received message: Data, from: UInt64)
    /// A complete snapshot: the message that announced it and the path of the fsynced body file.
    /// The delegate owns the file from now on (moves or deletes it). Must not block.
    func transport(receivedSnapshot message: Data, bodyPath: String, from: UInt64)
    /// Messages to `peer` were dropped (queue overflow, connection down, too large).
    /// Called at most once per peer per 100 ms (rate-limited). Must not block.
    func transport(unreachable peer: UInt64)
    /// Whether member `id` was removed from the cluster; connections from it are refused with "member removed".
    func transport(isRemoved id: UInt64) -> Bool
    /// A peer refused our connection, with its reason (e.g. "cluster ID mismatch", "member removed"). For logging / stopping.
    func transport(rejectedBy peer: UInt64, reason: String)
    /// The answer to a cluster-info query from a member that wants to join (opaque bytes, e.g. JSON).
    func transportClusterInfo() -> Data
    /// A hash request from peer `from`: call `reply` once, from any thread, with the answer or an
    /// error text. Called on an event loop: must not block (hash elsewhere).
    func transport(hashKVRequest request: Data, from: UInt64, reply: @escaping @Sendable (Result<Data, PeerRefusal>) -> Void)
}

/// Why a peer refused a request (sent as an error frame's text).
public struct PeerRefusal: Error, Sendable {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
}

extension PeerTransportDelegate {
    /// Members that keep no key space answer no hash requests.
    public func transport(hashKVRequest request: Data, from: UInt64, reply: @escaping @Sendable (Result<Data, PeerRefusal>) -> Void) {
        reply(.failure(PeerRefusal("hash requests are not supported")))
    }
}

/// Errors thrown by the transport.
public enum PeerTransportError: Error, Sendable, CustomStringConvertible {
    /// A URL that is not "http://HOST:PORT" with a literal address or localhost.
    case invalidURL(String)
    /// An `https://` URL with no peer certificate configured.
    case tlsNotConfigured(url: String)
    /// Listening on `url` failed.
    case bindFailed(url: String, reason: String)
    /// The peer answered our hello with an error frame.
    case rejected(reason: String)
    /// The connection closed before the exchange finished.
    case connectionClosed
    /// The peer did not answer in time.
    case timeout
    /// The other side broke the wire protocol.
    case protocolViolation(String)
    /// The transport was stopped (or `start` was called twice).
    case stopped

    public var description: String {
        switch self {
        case .invalidURL(let url): "invalid peer URL \"\(url)\" (want http://HOST:PORT or https://HOST:PORT)"
        case .tlsNotConfigured(let url): "TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url \(url) with HTTPS scheme"
        case .bindFailed(let url, let reason): "cannot listen on \(url): \(reason)"
        case .rejected(let reason): "rejected by peer: \(reason)"
        case .connectionClosed: "connection closed"
        case .timeout: "timed out"
        case .protocolViolation(let what): "protocol violation: \(what)"
        case .stopped: "transport stopped"
        }
    }
}

/// The transport between this member and its peers. See the top of this
/// file for the wire protocol. Call `stop()` before dropping it.
///
/// The delegate is held strongly until the transport is released.
public final class PeerTransport: Sendable {
    let core: TransportCore

    public init(
        config: PeerTransportConfig, delegate: any PeerTransportDelegate,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        core = TransportCore(config: config, delegate: delegate, group: group)
    }

    /// Binds one listener per URL ("http://HOST:PORT", HOST an IPv4/IPv6 literal (IPv6 in brackets) or "localhost"; port 0 = ephemeral). Throws on bind failure with a message naming the URL.
    public func start(listenURLs: [String]) async throws {
        try await core.start(listenURLs: listenURLs)
    }

    /// The ports actually bound, in `listenURLs` order (for port 0 in tests).
    public var boundPorts: [Int] {
        core.state.withLock { $0.boundPorts }
    }

    /// Adds or updates a peer's URLs (tries them in order, moving to the next on failure). Connects at once in the background.
    public func setPeer(id: UInt64, urls: [String]) {
        core.setPeer(id: id, urls: urls)
    }

    /// Forgets a peer: drops its queue and closes its connections (an in-flight snapshot fails).
    public func removePeer(id: UInt64) {
        core.removePeer(id: id)
    }

    /// Queues `message` for `peer`; never blocks. Messages to one peer arrive in order on one long-lived connection; everything queued is written and flushed in one batch per event-loop turn. Unknown peer / full queue / too large → dropped, `unreachable` reported.
    public func send(_ message: Data, to peer: UInt64) {
        core.send(message, to: peer)
    }

    /// Sends a snapshot on its own connection (never delays `send`). `writeBody` runs on a background thread (not an event loop) and calls the given writer with chunks; the writer blocks for backpressure (waits for NIO writes) and throws if the connection failed. `completion(true)` once the receiver acknowledged having the body fsynced and handed to its delegate; `false` on any failure. At most one snapshot in flight per peer (a second one → completion(false) immediately).
    public func sendSnapshot(
        _ message: Data, to peer: UInt64,
        writeBody: @escaping @Sendable (_ write: (UnsafeRawBufferPointer) throws -> Void) throws -> Void,
        completion: @escaping @Sendable (Bool) -> Void
    ) {
        core.sendSnapshot(message, to: peer, writeBody: writeBody, completion: completion)
    }

    /// Closes listeners and connections; pending sends are dropped. Idempotent.
    /// Returns once every channel is closed and every snapshot in flight
    /// (either direction) has finished and cleaned up.
    public func stop() async {
        await core.stop()
    }

    /// Asks the member at `url` for its cluster info (for joining). Throws on connection failure or timeout.
    public static func fetchClusterInfo(
        url: String, security: TLSCredentials? = nil, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        timeout: Duration = .seconds(2)
    ) async throws -> Data {
        let target = try PeerURL.target(url)
        let hello = Hello(clusterID: 0, fromID: 0, toID: 0, stream: .clusterInfo)
        let link = try await dialStream(
            loop: group.next(), target: target, url: url, security: security, hello: hello,
            maxMessageBytes: Wire.defaultMaxMessageBytes,
            timeout: timeout, peer: nil, register: nil
        ).get()
        try? await link.channel.close()
        switch link.response.kind {
        case .clusterInfo: return link.response.data
        case .error: throw PeerTransportError.rejected(reason: link.response.text)
        default: throw PeerTransportError.protocolViolation("unexpected answer to cluster-info query")
        }
    }

    /// Asks peer `peer` (at its URLs in turn, until one answers) one hash
    /// question, on a connection of its own. Throws `rejected` with the
    /// peer's reason when it refused the question, or the last connection
    /// failure.
    public func fetchHashKV(_ request: Data, from peer: UInt64, timeout: Duration) async throws -> Data {
        try await core.fetchHashKV(request, from: peer, timeout: timeout)
    }

    /// Frames written and flushes issued on message streams (for tests).
    var messageStats: (frames: Int, flushes: Int) {
        (core.framesWritten.load(ordering: .relaxed), core.flushes.load(ordering: .relaxed))
    }

    /// Whether no channel is open and no background job runs (for tests, after `stop()`).
    var isQuiescent: Bool {
        core.registry.withLock { $0.channels.isEmpty && $0.jobs.isEmpty }
    }
}
