import EtcdClient
import EtcdProto
import Foundation
import GRPCWire
import Locks
import NIOCore
import SwiftProtobuf
import Testing

/// What EtcdClient's streams carry, seen by a GRPCWire server: the auth
/// token on Watch, LeaseKeepAlive and Snapshot, `hasleader` on a watch of a
/// `requireLeader` client, and the messages both ways.
@Suite struct StreamMetadataTests {
    final class Seen: Sendable {
        let headers = Mutex<[String: [String]]>([:])
        func record(_ call: WireCall) {
            let names = ["token", "hasleader"]
            headers.withLock { seen in
                for name in names { seen[call.path + " " + name] = call.headers[name] }
            }
        }
        func values(_ path: String, _ name: String) -> [String] { headers.withLock { $0[path + " " + name] ?? [] } }
    }

    static func framed(_ message: some SwiftProtobuf.Message) -> ByteBuffer { try! message.framed() }

    /// Watch: answers the create with created, then one event with the key.
    final class Watch: WireStreamHandler {
        let call: WireCall
        init(call: WireCall) { self.call = call }
        func received(_ message: ByteBuffer) {
            guard let request = try? Etcdserverpb_WatchRequest(grpcMessage: message), case .createRequest(let create)? = request.requestUnion else { return }
            var created = Etcdserverpb_WatchResponse()
            created.created = true
            created.header.revision = 10
            var event = Etcdserverpb_WatchResponse()
            event.header.revision = 11
            var put = Mvccpb_Event()
            put.kv.key = create.key
            put.kv.modRevision = 11
            event.events = [put]
            call.send(contentsOf: [StreamMetadataTests.framed(created), StreamMetadataTests.framed(event)])
        }
        func inboundClosed() {}
        func cancelled() {}
    }

    /// LeaseKeepAlive: each request answered with TTL 30.
    final class KeepAlive: WireStreamHandler {
        let call: WireCall
        init(call: WireCall) { self.call = call }
        func received(_ message: ByteBuffer) {
            guard let request = try? Etcdserverpb_LeaseKeepAliveRequest(grpcMessage: message) else { return }
            var response = Etcdserverpb_LeaseKeepAliveResponse()
            response.id = request.id
            response.ttl = 30
            call.send(StreamMetadataTests.framed(response))
        }
        func inboundClosed() {}
        func cancelled() {}
    }

    /// Snapshot: three chunks, then OK.
    final class Snapshot: WireStreamHandler {
        let call: WireCall
        init(call: WireCall) { self.call = call }
        func received(_ message: ByteBuffer) {
            let chunks = (0..<3).map { index -> ByteBuffer in
                var chunk = Etcdserverpb_SnapshotResponse()
                chunk.blob = Data(repeating: UInt8(index), count: 100_000)
                chunk.remainingBytes = UInt64(2 - index)
                return StreamMetadataTests.framed(chunk)
            }
            let call = self.call
            call.send(contentsOf: chunks).whenComplete { _ in call.finish(.ok) }
        }
        func inboundClosed() {}
        func cancelled() {}
    }

    @Test(.timeLimit(.minutes(1))) func streamsCarryTheTokenAndHasLeader() async throws {
        let seen = Seen()
        var router = WireRouter()
        router["/etcdserverpb.Watch/Watch"] = .streaming { seen.record($0); return Watch(call: $0) }
        router["/etcdserverpb.Lease/LeaseKeepAlive"] = .streaming { seen.record($0); return KeepAlive(call: $0) }
        router["/etcdserverpb.Maintenance/Snapshot"] = .streaming { seen.record($0); return Snapshot(call: $0) }
        let server = WireServer(configuration: .init(host: "127.0.0.1", port: 0), router: router)
        let port = try await server.start()
        defer { server.stop() }
        var options = EtcdClientOptions(requireLeader: true)
        options.token = "t0k"
        let client = try EtcdClient(endpoints: ["127.0.0.1:\(port)"], options: options)
        defer { client.close() }

        let watch = try await client.watch("w")
        var iterator = watch.makeAsyncIterator()
        let response = try #require(try await iterator.next())
        #expect(response.events.map { String(decoding: $0.kv.key, as: UTF8.self) } == ["w"])
        #expect(watch.nextRevision == 12)
        watch.cancel()
        #expect(seen.values("/etcdserverpb.Watch/Watch", "token") == ["t0k"])
        #expect(seen.values("/etcdserverpb.Watch/Watch", "hasleader") == ["true"])

        let renewed = try await client.leaseKeepAliveOnce(id: 7)
        #expect(renewed.id == 7 && renewed.ttl == 30)
        #expect(seen.values("/etcdserverpb.Lease/LeaseKeepAlive", "token") == ["t0k"])

        var bytes = Data()
        for try await chunk in client.snapshot() { bytes += chunk }
        #expect(bytes == (0..<3).reduce(Data()) { $0 + Data(repeating: UInt8($1), count: 100_000) })
        #expect(seen.values("/etcdserverpb.Maintenance/Snapshot", "token") == ["t0k"])
    }
}
