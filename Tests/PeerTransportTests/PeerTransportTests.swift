import Checksum
import Foundation
import Locks
import NIOCore
import NIOPosix
import Testing

@testable import PeerTransport

@Suite("PeerTransport", .timeLimit(.minutes(1)))
struct PeerTransportTests {
    // MARK: messages

    @Test("10,000 messages of varied sizes to each of two peers arrive complete and in order")
    func messagesInOrder() async throws {
        let configure: (inout PeerTransportConfig) -> Void = { $0.maxQueuedMessagesPerPeer = 100_000 }
        let a = try await Node.start(id: 1, configure: configure)
        let b = try await Node.start(id: 2, configure: configure)
        let c = try await Node.start(id: 3, configure: configure)
        a.connect(to: b, c)
        b.connect(to: a, c)
        c.connect(to: a, b)
        #expect(await waitConnected(a, b))
        #expect(await waitConnected(a, c))
        #expect(await waitConnected(b, a))
        let probesB = b.recorder.count(from: 1)
        let probesC = c.recorder.count(from: 1)
        let statsBefore = a.transport.messageStats

        let count = 10_000
        let sizes = [8, 100, 1000, 3000, 17, 40_000, 256, 9000]
        for seq in 0..<count {
            a.transport.send(taggedMessage(seq, size: sizes[seq % sizes.count]), to: 2)
            a.transport.send(taggedMessage(seq, size: sizes[(seq + 3) % sizes.count]), to: 3)
        }
        b.transport.send(taggedMessage(7, size: 64), to: 3)

        #expect(await eventually { b.recorder.count(from: 1) == probesB + count })
        #expect(await eventually { c.recorder.count(from: 1) == probesC + count })
        #expect(await eventually { c.recorder.count(from: 2) == 1 })
        for (node, offset, probes) in [(b, 0, probesB), (c, 3, probesC)] {
            let received = Array(node.recorder.messages(from: 1).dropFirst(probes))
            #expect(received.count == count)
            var intact = true
            for (seq, message) in received.enumerated()
            where message != taggedMessage(seq, size: sizes[(seq + offset) % sizes.count]) {
                intact = false
                break
            }
            #expect(intact, "messages arrive complete and in order")
        }
        let stats = a.transport.messageStats
        let frames = stats.frames - statsBefore.frames
        let flushes = stats.flushes - statsBefore.flushes
        #expect(frames == 2 * count)
        #expect(flushes < frames, "under load, frames are batched per flush")
        #expect(a.recorder.unreachableCount(2) == 0 && a.recorder.unreachableCount(3) == 0)

        await stopAll(a, b, c)
    }

    @Test("everything queued in one event-loop turn is written with a single flush")
    func batching() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let a = try await Node.start(id: 1, group: group)
        let b = try await Node.start(id: 2)
        a.connect(to: b)
        #expect(await waitConnected(a, b))
        let probes = b.recorder.count(from: 1)
        let before = a.transport.messageStats
        let transport = a.transport
        try await group.next().submit {
            for seq in 0..<1000 { transport.send(taggedMessage(seq, size: 100), to: 2) }
        }.get()
        #expect(await eventually { b.recorder.count(from: 1) == probes + 1000 })
        let after = a.transport.messageStats
        #expect(after.frames - before.frames == 1000)
        #expect(after.flushes - before.flushes == 1)
        await stopAll(a, b)
        try await group.shutdownGracefully()
    }

    @Test("messages sent while connecting are kept, and a dead first URL falls through to the next")
    func queuedWhileConnecting() async throws {
        let dead = try await Node.start(id: 9)
        await stopAll(dead)
        let a = try await Node.start(id: 1)
        let b = try await Node.start(id: 2)
        a.transport.setPeer(id: 2, urls: [dead.url, b.url])
        for seq in 0..<50 { a.transport.send(taggedMessage(seq, size: 30), to: 2) }
        #expect(await eventually { b.recorder.count(from: 1) == 50 })
        #expect(b.recorder.messages(from: 1).map(sequenceNumber) == Array(0..<50))
        #expect(a.recorder.unreachableCount(2) == 0)

        a.transport.removePeer(id: 2)
        a.transport.send(Data("gone".utf8), to: 2)
        #expect(a.recorder.unreachableCount(2) == 1)
        await stopAll(a, b)
    }

    // MARK: handshake checks

    @Test("a peer of another cluster is refused with \"cluster ID mismatch\"")
    func clusterMismatch() async throws {
        let a = try await Node.start(id: 1, cluster: 1)
        let d = try await Node.start(id: 4, cluster: 2)
        a.connect(to: d)
        #expect(await eventually { a.recorder.rejections(4).contains("cluster ID mismatch") })
        a.transport.send(Data("hello".utf8), to: 4)
        try await Task.sleep(for: .milliseconds(100))
        #expect(d.recorder.count(from: 1) == 0)
        await stopAll(a, d)
    }

    @Test("a removed member is refused with \"member removed\"")
    func removedMember() async throws {
        let a = try await Node.start(id: 1)
        let b = try await Node.start(id: 2)
        b.recorder.state.withLock { _ = $0.removed.insert(1) }
        a.connect(to: b)
        #expect(await eventually { a.recorder.rejections(2).contains("member removed") })
        a.transport.send(Data("hello".utf8), to: 2)
        try await Task.sleep(for: .milliseconds(100))
        #expect(b.recorder.count(from: 1) == 0)
        await stopAll(a, b)
    }

    @Test("dialing a member under the wrong ID is refused with \"member ID mismatch\"")
    func memberIDMismatch() async throws {
        let a = try await Node.start(id: 1)
        let b = try await Node.start(id: 2)
        a.transport.setPeer(id: 99, urls: [b.url])
        #expect(await eventually { a.recorder.rejections(99).contains("member ID mismatch") })
        #expect(b.recorder.count(from: 1) == 0)
        await stopAll(a, b)
    }

    @Test("sending to an unknown peer reports it unreachable")
    func unknownPeer() async throws {
        let a = try await Node.start(id: 1)
        a.transport.send(Data("x".utf8), to: 12345)
        #expect(a.recorder.unreachableCount(12345) == 1)
        await stopAll(a)
    }

    // MARK: overflow, reconnect, limits

    @Test("a down peer: sends never block, drops are reported, and messages flow once it restarts")
    func overflowAndReconnect() async throws {
        let a = try await Node.start(id: 1) { $0.maxQueuedMessagesPerPeer = 16 }
        var b = try await Node.start(id: 2)
        let port = b.port
        let directory = b.directory
        await b.transport.stop()
        a.connect(to: b)

        for seq in 0..<10_000 { a.transport.send(taggedMessage(seq, size: 200), to: 2) }
        #expect(await eventually { a.recorder.unreachableCount(2) > 0 })

        b = try await restart(id: 2, port: port, directory: directory)
        #expect(await waitConnected(a, b))
        let probes = b.recorder.count(from: 1)
        // A burst no larger than the queue bound always fits.
        for seq in 0..<16 { a.transport.send(taggedMessage(seq, size: 50), to: 2) }
        #expect(await eventually { b.recorder.count(from: 1) == probes + 16 })
        let tail = Array(b.recorder.messages(from: 1).dropFirst(probes))
        #expect(tail.map(sequenceNumber) == Array(0..<16))
        await stopAll(a, b)
    }

    @Test("a peer that stops reading: sends never block, the queue bound holds, drops are reported")
    func unwritablePeer() async throws {
        let stalled = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(.autoRead, value: false)
            .childChannelOption(.socketOption(.so_rcvbuf), value: 4096)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptAndStall())
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let a = try await Node.start(id: 1) { $0.maxQueuedMessagesPerPeer = 64 }
        a.transport.setPeer(id: 9, urls: ["http://127.0.0.1:\(stalled.localAddress!.port!)"])
        let message = Data(count: 64 << 10)
        for _ in 0..<2000 { a.transport.send(message, to: 9) }
        #expect(await eventually { a.recorder.unreachableCount(9) > 0 })
        #expect(a.transport.messageStats.frames < 2000)
        await stopAll(a)
        try await stalled.close()
    }

    @Test("a message over the sender's maxMessageBytes is dropped and reported")
    func oversizeSend() async throws {
        let a = try await Node.start(id: 1) { $0.maxMessageBytes = 1024 }
        let b = try await Node.start(id: 2)
        a.connect(to: b)
        #expect(await waitConnected(a, b))
        let probes = b.recorder.count(from: 1)
        a.transport.send(Data(count: 2000), to: 2)
        #expect(a.recorder.unreachableCount(2) == 1)
        a.transport.send(taggedMessage(1, size: 1024), to: 2)
        #expect(await eventually { b.recorder.count(from: 1) == probes + 1 })
        #expect(b.recorder.messages(from: 1).allSatisfy { $0.count <= 1024 })
        await stopAll(a, b)
    }

    @Test("a frame over the receiver's maxMessageBytes closes the connection and is not delivered")
    func oversizeReceive() async throws {
        let a = try await Node.start(id: 1)
        let b = try await Node.start(id: 2) { $0.maxMessageBytes = 1024 }
        a.connect(to: b)
        #expect(await waitConnected(a, b))
        a.transport.send(Data(count: 4096), to: 2)
        // The receiver drops the connection; the sender reconnects and later messages flow.
        #expect(await eventually { a.recorder.unreachableCount(2) > 0 })
        #expect(await waitConnected(a, b))
        #expect(b.recorder.messages(from: 1).allSatisfy { $0.count <= 1024 })
        await stopAll(a, b)
    }

    // MARK: snapshots

    @Test("a ~20 MB snapshot arrives byte-identical")
    func snapshot() async throws {
        let a = try await Node.start(id: 1)
        let b = try await Node.start(id: 2)
        a.connect(to: b)
        let size = 20 * 1_000_000 + 12345
        let sentCRC = Mutex<UInt32>(0)
        let message = Data("snapshot at index 42".utf8)
        let ok = await sendSnapshot(a, to: 2, message: message) { write in
            var generator = BodyGenerator(state: 0x9E37_79B9_7F4A_7C15)
            let pieces = [300_000, 1, 77, 2 << 20, 65536]
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 << 20, alignment: 8)
            defer { buffer.deallocate() }
            var remaining = size
            var crc: UInt32 = 0
            var i = 0
            while remaining > 0 {
                let n = min(pieces[i % pieces.count], remaining)
                let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
                generator.fill(piece)
                crc = CRC32C.update(crc, UnsafeRawBufferPointer(piece))
                try write(UnsafeRawBufferPointer(piece))
                remaining -= n
                i += 1
            }
            sentCRC.withLock { $0 = crc }
        }
        #expect(ok)
        let snapshots = b.recorder.snapshots
        try #require(snapshots.count == 1)
        #expect(snapshots[0].message == message)
        #expect(snapshots[0].from == 1)
        #expect(snapshots[0].bodyPath.hasSuffix(".db"))
        #expect(snapshots[0].bodyPath.hasPrefix(b.directory))
        let received = try #require(fileChecksum(snapshots[0].bodyPath))
        #expect(received.size == size)
        #expect(received.crc == sentCRC.withLock { $0 })
        #expect(b.files(withSuffix: ".part").isEmpty)
        await stopAll(a, b)
    }

    @Test("a snapshot to a dead peer fails")
    func snapshotToDeadPeer() async throws {
        let a = try await Node.start(id: 1)
        let b = try await Node.start(id: 2)
        await stopAll(b)
        a.connect(to: b)
        let ok = await sendSnapshot(a, to: 2, message: Data("m".utf8)) { write in
            try [UInt8](repeating: 1, count: 1000).withUnsafeBytes { try write($0) }
        }
        #expect(!ok)
        let unknown = await sendSnapshot(a, to: 77, message: Data()) { _ in }
        #expect(!unknown)
        await stopAll(a)
    }

    @Test("a transfer the sender aborts leaves no partial file behind")
    func snapshotAbortedBySender() async throws {
        let a = try await Node.start(id: 1)
        let b = try await Node.start(id: 2)
        a.connect(to: b)
        let ok = await sendSnapshot(a, to: 2, message: Data("m".utf8)) { write in
            let chunk = [UInt8](repeating: 7, count: 1 << 20)
            for _ in 0..<3 { try chunk.withUnsafeBytes { try write($0) } }
            // Wait until the receiver has created its .part file, then give up.
            let deadline = ContinuousClock.now + .seconds(10)
            while b.files(withSuffix: ".part").isEmpty && ContinuousClock.now < deadline { usleep(1000) }
            struct Abort: Error {}
            throw Abort()
        }
        #expect(!ok)
        #expect(await eventually { b.files(withSuffix: ".part").isEmpty })
        #expect(b.files(withSuffix: ".db").isEmpty)
        #expect(b.recorder.snapshots.isEmpty)
        await stopAll(a, b)
    }

    @Test("a receiver stopped mid-transfer fails the sender and deletes the partial file before stop returns")
    func snapshotReceiverStops() async throws {
        let a = try await Node.start(id: 1)
        let b = try await Node.start(id: 2)
        a.connect(to: b)
        let started = Flag()
        let stopped = Flag()
        let result = Mutex<Bool?>(nil)
        let chunk = [UInt8](repeating: 3, count: 1 << 20)
        a.transport.sendSnapshot(Data("m".utf8), to: 2, writeBody: { write in
            for i in 0..<500 {
                try chunk.withUnsafeBytes { try write($0) }
                if i == 4 {
                    // The sender's own thread: hold the transfer here (at
                    // most 30 s) until the receiver has been stopped, so it
                    // cannot finish first on a busy machine.
                    started.set()
                    _ = stopped.wait(timeout: .seconds(30))
                }
            }
        }, completion: { ok in result.withLock { $0 = ok } })
        #expect(await eventually { started.isSet })
        #expect(await eventually { !b.files(withSuffix: ".part").isEmpty })
        await b.transport.stop()
        stopped.set()
        #expect(b.files(withSuffix: ".part").isEmpty)
        #expect(b.files(withSuffix: ".db").isEmpty)
        #expect(await eventually { result.withLock { $0 } != nil })
        #expect(result.withLock { $0 } == false)
        await stopAll(a, b)
    }

    @Test("a second snapshot to a peer while one is in flight fails at once")
    func concurrentSnapshot() async throws {
        let a = try await Node.start(id: 1)
        let b = try await Node.start(id: 2)
        a.connect(to: b)
        let release = Flag()
        let first = Mutex<Bool?>(nil)
        a.transport.sendSnapshot(Data("first".utf8), to: 2, writeBody: { write in
            _ = release.wait()
            try [UInt8](repeating: 9, count: 4096).withUnsafeBytes { try write($0) }
        }, completion: { ok in first.withLock { $0 = ok } })
        let second = Mutex<Bool?>(nil)
        a.transport.sendSnapshot(Data("second".utf8), to: 2, writeBody: { _ in },
            completion: { ok in second.withLock { $0 = ok } })
        #expect(second.withLock { $0 } == false)
        release.set()
        #expect(await eventually { first.withLock { $0 } != nil })
        #expect(first.withLock { $0 } == true)
        #expect(b.recorder.snapshots.map(\.message) == [Data("first".utf8)])
        // The slot is free again afterwards.
        let third = await sendSnapshot(a, to: 2, message: Data("third".utf8)) { _ in }
        #expect(third)
        for snapshot in b.recorder.snapshots { try? FileManager.default.removeItem(atPath: snapshot.bodyPath) }
        await stopAll(a, b)
    }

    // MARK: cluster info, lifecycle

    @Test("fetchClusterInfo returns the delegate's bytes")
    func clusterInfo() async throws {
        let b = try await Node.start(id: 2, cluster: 77)
        let info = Data(#"{"members":[{"id":2}]}"#.utf8)
        b.recorder.state.withLock { $0.clusterInfo = info }
        #expect(try await PeerTransport.fetchClusterInfo(url: b.url) == info)
        #expect(try await PeerTransport.fetchClusterInfo(url: "http://localhost:\(b.port)/") == info)
        let port = b.port
        await stopAll(b)
        await #expect(throws: (any Error).self) {
            try await PeerTransport.fetchClusterInfo(url: "http://127.0.0.1:\(port)", timeout: .milliseconds(500))
        }
        await #expect(throws: PeerTransportError.self) {
            try await PeerTransport.fetchClusterInfo(url: "127.0.0.1:\(port)")
        }
    }

    @Test("a hash question is answered by the peer's delegate, or refused with its reason")
    func hashQuestions() async throws {
        let a = try await Node.start(id: 1, cluster: 5)
        let b = try await Node.start(id: 2, cluster: 5)
        let stranger = try await Node.start(id: 3, cluster: 6)
        a.connect(to: b)
        a.transport.setPeer(id: 3, urls: [stranger.url])
        #expect(try await a.transport.fetchHashKV(Data([1, 2, 3]), from: 2, timeout: .seconds(2)) == Data([3, 2, 1]))
        func refusal(_ request: Data, from peer: UInt64) async -> String {
            do { _ = try await a.transport.fetchHashKV(request, from: peer, timeout: .seconds(2)); return "answered" } catch { return "\(error)" }
        }
        #expect(await refusal(Data("refuse".utf8), from: 2) == "rejected by peer: refused by 1")
        #expect(await refusal(Data([1]), from: 3) == "rejected by peer: cluster ID mismatch")
        #expect(await refusal(Data([1]), from: 9) == "rejected by peer: unknown peer 9")
        await stopAll(a, b, stranger)
    }

    @Test("stop() is idempotent and the transport is inert afterwards")
    func stopIdempotent() async throws {
        let a = try await Node.start(id: 1)
        let b = try await Node.start(id: 2)
        a.connect(to: b)
        b.connect(to: a)
        #expect(await waitConnected(a, b))
        async let first: Void = a.transport.stop()
        async let second: Void = a.transport.stop()
        _ = await (first, second)
        await stopAll(a)
        a.transport.send(Data("late".utf8), to: 2)
        a.transport.setPeer(id: 3, urls: ["http://127.0.0.1:1"])
        let ok = await sendSnapshot(a, to: 2, message: Data()) { _ in }
        #expect(!ok)
        await #expect(throws: PeerTransportError.self) {
            try await a.transport.start(listenURLs: ["http://127.0.0.1:0"])
        }
        await b.transport.stop()
        await stopAll(b)
    }

    @Test("stop() while peers are down and reconnecting leaves nothing running", .timeLimit(.minutes(1)))
    func stopWhileReconnecting() async throws {
        let dead = try await Node.start(id: 2)
        await stopAll(dead)
        let a = try await Node.start(id: 1) { $0.maxReconnectBackoff = .milliseconds(50) }
        a.transport.setPeer(id: 2, urls: [dead.url, "http://127.0.0.1:1", "http://[::1]:1", "bogus"])
        a.transport.setPeer(id: 3, urls: [])
        for _ in 0..<20 {
            a.transport.send(Data("x".utf8), to: 2)
            try await Task.sleep(for: .milliseconds(10))
        }
        // The dead peer is being dialled again and again: raft hears it is
        // unreachable, so the stop below lands in the middle of reconnecting.
        #expect(await eventually { a.recorder.unreachableCount(2) > 0 })
        a.transport.removePeer(id: 3)
        // Stopping returns (the time limit fails a hang), leaves no channel
        // or job behind (checked by stopAll) and frees the listening port.
        await stopAll(a)
        #expect(!(await canConnect(port: a.port)), "the stopped transport still accepts connections")
    }

    @Test("binding an address in use throws an error naming the URL")
    func bindFailure() async throws {
        let a = try await Node.start(id: 1)
        let url = a.url
        let directory = makeTempDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let other = PeerTransport(
            config: PeerTransportConfig(localID: 2, clusterID: 1, snapshotDirectory: directory),
            delegate: Recorder())
        do {
            try await other.start(listenURLs: ["http://127.0.0.1:0", url])
            Issue.record("bind should fail")
        } catch {
            #expect("\(error)".contains(url))
        }
        await #expect(throws: PeerTransportError.self) {
            try await PeerTransport(
                config: PeerTransportConfig(localID: 3, clusterID: 1, snapshotDirectory: directory),
                delegate: Recorder()
            ).start(listenURLs: ["http://example.com:80"])
        }
        await other.stop()
        await stopAll(a)
    }
}
