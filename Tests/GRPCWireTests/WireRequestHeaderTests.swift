import EtcdProto
import Foundation
import GRPCWire
import NIOCore
import NIOHPACK
import NIOPosix
import Testing

/// What gRPC requires of a request's headers, answered as grpc-go's server
/// answers (its TestHeadersHTTPStatusGRPCStatus): a wrong content-type gets
/// HTTP 415 and INVALID_ARGUMENT, a method other than POST HTTP 405 and
/// INTERNAL, a malformed grpc-timeout HTTP 400 and INTERNAL; a request
/// without `te: trailers` is served, as grpc-go serves it.
@Suite(.serialized) struct WireRequestHeaderTests {
    func withServer(_ body: (Int) throws -> Void) async throws {
        try await withRawServer({ _ in }, body)
    }

    static let rangeHello: [UInt8] = {
        var request = Etcdserverpb_RangeRequest()
        request.key = Data("hello".utf8)
        return Array(try! request.framed().readableBytesView)
    }()

    /// Sends one request (headers, then the message ending the stream) on a
    /// fresh connection; the server's answer.
    static func call(port: Int, _ headers: [(String, String)]) throws -> RawHTTP2Connection.Response {
        let connection = try RawHTTP2Connection(port: port)
        try connection.handshake()
        connection.send(RawFrame(type: RawFrame.headers, flags: RawFrame.endHeaders, stream: 1, payload: connection.headerBlock(headers)),
                        RawFrame(type: RawFrame.data, flags: RawFrame.endStream, stream: 1, payload: rangeHello))
        return try connection.response(on: 1)
    }

    @Test func wrongContentTypeGets415AndInvalidArgument() async throws {
        try await withServer { port in
            for contentType in ["application/json", "", "application/grpc+json", "application/grpc-web"] {
                let response = try Self.call(port: port, RawHTTP2Connection.requestHeaders(contentType: contentType))
                #expect(response.first[":status"] == ["415"], "\(contentType)")
                #expect(response.first["grpc-status"] == ["3"], "\(contentType)")
                #expect(response.first["grpc-message"] == ["invalid gRPC request content-type \"\(contentType)\""])
                #expect(response.data.isEmpty)
            }
        }
    }

    @Test func methodOtherThanPostGets405AndInternal() async throws {
        try await withServer { port in
            for method in ["GET", "PUT"] {
                let response = try Self.call(port: port, RawHTTP2Connection.requestHeaders(method: method))
                #expect(response.first[":status"] == ["405"], "\(method)")
                #expect(response.first["grpc-status"] == ["13"], "\(method)")
                #expect(response.first["grpc-message"] == ["Received a HEADERS frame with :method \"\(method)\" which should be POST"])
            }
        }
    }

    @Test func malformedTimeoutGets400AndInternal() async throws {
        try await withServer { port in
            let response = try Self.call(port: port, RawHTTP2Connection.requestHeaders() + [("grpc-timeout", "18f6n")])
            #expect(response.first[":status"] == ["400"])
            #expect(response.first["grpc-status"] == ["13"])
        }
    }

    /// Both content-types gRPC clients send are served, with or without `te`.
    @Test func grpcRequestsAreServedWithOrWithoutTE() async throws {
        try await withServer { port in
            for (contentType, te) in [("application/grpc", true), ("application/grpc+proto", true), ("application/grpc", false)] {
                let response = try Self.call(port: port, RawHTTP2Connection.requestHeaders(contentType: contentType, te: te))
                #expect(response.first[":status"] == ["200"], "\(contentType) te: \(te)")
                #expect(response.last["grpc-status"] == ["0"], "\(contentType) te: \(te)")
                let echoed = try Etcdserverpb_RangeResponse(serializedBytes: Array(response.data.dropFirst(5)))
                #expect(echoed.kvs.first?.key == Data("hello".utf8))
            }
        }
    }
}
