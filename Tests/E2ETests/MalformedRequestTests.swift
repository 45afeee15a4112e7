import Foundation
import GRPCWire
import NIOCore
import NIOPosix
import Testing

/// Raw gRPC frames to ours and to the real etcd: messages that are not
/// well-formed protobuf get INTERNAL and grpc-go's "grpc: error
/// unmarshalling request: " (the decoder's own words after it differ);
/// compressed messages and encodings get exactly etcd's status; and the
/// connection goes on serving.
@Suite(.serialized) struct MalformedRequestTests {
    /// Bodies that no protobuf decoder accepts, each with what is wrong.
    static let bodies: [(what: String, bytes: [UInt8])] = [
        ("a length past the end", [0x0A, 0x7F, 0x61]),
        ("a truncated varint", [0x10, 0xFF]),
        ("an end-group tag without a start", [0x0C]),
        ("field number 0", [0x00, 0x01]),
        ("wire type 7", [0x0F, 0x01]),
    ]

    static let paths = ["/etcdserverpb.KV/Put", "/etcdserverpb.KV/Range", "/etcdserverpb.KV/Txn",
                        "/etcdserverpb.KV/DeleteRange", "/etcdserverpb.Lease/LeaseGrant", "/etcdserverpb.Maintenance/Status"]

    @Test func malformedAndCompressedMessagesGetTheSameStatusAsFromEtcd() throws {
        let ours = try EtcdProcess()
        defer { ours.terminate() }
        let theirs = try RealEtcdProcess()
        defer { theirs.terminate() }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }

        var calls: [(path: String, what: String, body: [UInt8])] = []
        for path in Self.paths {
            for body in Self.bodies { calls.append((path, body.what, body.bytes)) }
        }
        // After them, on the same connection, a good request is served.
        let batch = calls.map { ($0.path, $0.body) } + [("/etcdserverpb.KV/Range", [0x0A, 0x01, 0x6B])]
        let oursResults = try Self.send(batch, port: ours.port, group: group)
        let theirResults = try Self.send(batch, port: theirs.port, group: group)
        #expect(oursResults.last == .ok && theirResults.last == .ok, "\(oursResults.last!) \(theirResults.last!)")
        for (index, call) in calls.enumerated() {
            let (mine, real) = (oursResults[index], theirResults[index])
            #expect(mine.code == real.code, "\(call.path), \(call.what): ours \(mine), etcd \(real)")
            #expect(mine.message.hasPrefix("grpc: error unmarshalling request: "), "\(call.path), \(call.what): \(mine)")
        }
        // The compressed flag and grpc-encoding: etcd installs no
        // decompressor, so each case has one exact status, the same here.
        let range: [UInt8] = [0x0A, 0x01, 0x6B]
        let gzipped: [UInt8] = [31, 139, 8, 0, 181, 39, 15, 107, 2, 255, 227, 98, 204, 6, 0, 85, 213, 173, 49, 3, 0, 0, 0]
        let framings: [(flag: UInt8, encoding: String?, body: [UInt8])] = [
            (1, nil, range), (1, "identity", range), (2, nil, range), (0, "identity", range),
            (1, "gzip", gzipped), (0, "gzip", range), (1, "snappy", gzipped),
        ]
        for framing in framings {
            let metadata = framing.encoding.map { [(name: "grpc-encoding", value: $0)] } ?? []
            let mine = try Self.send([("/etcdserverpb.KV/Range", framing.body)], port: ours.port, group: group,
                                     flag: framing.flag, metadata: metadata)
            let real = try Self.send([("/etcdserverpb.KV/Range", framing.body)], port: theirs.port, group: group,
                                     flag: framing.flag, metadata: metadata)
            #expect(mine == real, "flag \(framing.flag), grpc-encoding \(framing.encoding ?? "none")")
        }
    }

    /// Sends each (path, body) on one connection, one after another, and
    /// returns each call's status (code 0 for a response).
    static func send(_ calls: [(String, [UInt8])], port: Int, group: any EventLoopGroup, flag: UInt8 = 0,
                     metadata: [(name: String, value: String)] = []) throws -> [WireStatus] {
        var configuration = WireClient.Configuration(host: "127.0.0.1", port: port)
        configuration.metadata = metadata
        let client = try WireClient.connect(configuration, group: group).wait()
        defer { _ = try? client.close().wait() }
        var statuses: [WireStatus] = []
        for (path, body) in calls {
            let promise = client.eventLoop.makePromise(of: WireStatus.self)
            client.eventLoop.execute {
                var frame = ByteBuffer()
                frame.writeInteger(flag)
                frame.writeInteger(UInt32(body.count))
                frame.writeBytes(body)
                client.unary(path, frame) { result in
                    switch result {
                    case .success: promise.succeed(.ok)
                    case .failure(let status): promise.succeed(status)
                    }
                }
            }
            statuses.append(try promise.futureResult.wait())
        }
        return statuses
    }
}
