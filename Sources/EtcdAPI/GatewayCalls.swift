import EtcdServer
import GRPCWire
import Locks
import NIOCore
import NIOHPACK

extension HTTPService {
    /// A `/v3/*` (or `/v3beta/*`) request: JSON to protobuf, a local call of
    /// the router's method, its answer back to JSON.
    func gateway(_ request: HTTPRequest, _ responder: any HTTPResponder) {
        var path = request.path
        if path.hasPrefix("/v3beta/") { path = "/v3/" + path.dropFirst("/v3beta/".count) }
        guard let route = Gateway.byPath[path] else { return responder.error(404, "Not Found") }
        guard request.method == "POST" else { return responder.error(405, "Method Not Allowed") }
        guard let method = router[route.grpcPath] else {
            return GatewayUnary.fail(WireStatus.unimplemented("unknown service \(route.grpcPath)"), responder)
        }
        var headers = HPACKHeaders()
        if let token = request.authorization, !token.isEmpty { headers.add(name: "token", value: token) }
        let messages: [[UInt8]]
        do {
            messages = try GatewayBody.requests(request.body, route)
        } catch let status as WireStatus {
            return GatewayUnary.fail(status, responder)
        } catch {
            return GatewayUnary.fail(WireStatus(code: .invalidArgument, message: "\(error)"), responder)
        }
        if let large = messages.first(where: { $0.count > maxRequestBytes }) {
            return GatewayUnary.fail(.resourceExhausted("grpc: received message larger than max (\(large.count) vs. \(maxRequestBytes))"),
                                     responder)
        }
        let loop = responder.eventLoop
        switch method {
        case .unary(let handle):
            let sink = GatewayUnary(route: route, responder: responder)
            let call = WireCall(path: route.grpcPath, headers: headers, eventLoop: loop, remotePeer: request.remotePeer,
                                localPeer: request.localPeer, peerCommonName: request.peerCommonName, sink: sink)
            // An empty body is the empty request (grpc-gateway reads EOF as one).
            let message = ByteBuffer(bytes: messages.first ?? [])
            loop.execute { handle(call, message) }
        case .streaming(let makeHandler):
            let sink = GatewayStream(route: route, responder: responder)
            let call = WireCall(path: route.grpcPath, headers: headers, eventLoop: loop, remotePeer: request.remotePeer,
                                localPeer: request.localPeer, peerCommonName: request.peerCommonName, sink: sink)
            loop.execute {
                let handler = makeHandler(call)
                sink.attach(handler)
                responder.onCancel { loop.execute { sink.cancel() } }
                for message in messages { handler.received(ByteBuffer(bytes: message)) }
                handler.inboundClosed()
            }
        }
    }
}

/// The request messages in a gateway body: one JSON object for a unary
/// method (none when the body is empty), any number one after another for a
/// streaming one; each as protobuf bytes.
enum GatewayBody {
    static func requests(_ body: ByteBuffer, _ route: GatewayRoute) throws -> [[UInt8]] {
        let bytes = Gateway.bytes(body)
        guard bytes.contains(where: { !isSpace($0) }) else { return [] }
        guard route.streaming else { return [try route.decode(body)] }
        return try objects(bytes).map { try route.decode(ByteBuffer(bytes: $0)) }
    }

    static func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 }

    /// Splits a sequence of top-level JSON values at their ends (by bracket
    /// depth outside strings); each value is then parsed by swift-protobuf.
    static func objects(_ bytes: [UInt8]) -> [[UInt8]] {
        var values: [[UInt8]] = []
        var start: Int?
        var depth = 0
        var inString = false
        var escaped = false
        for (index, byte) in bytes.enumerated() {
            if start == nil {
                if isSpace(byte) { continue }
                start = index
            }
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
                if depth == 0, let from = start {
                    values.append(Array(bytes[from...index]))
                    start = nil
                }
            default: break
            }
        }
        if let start { values.append(Array(bytes[start...])) }
        return values
    }
}

/// A unary gateway call's answer: the response's JSON, or the error body.
final class GatewayUnary: WireCallSink, @unchecked Sendable {
    private let route: GatewayRoute
    private let responder: any HTTPResponder
    private var response: ByteBuffer?

    init(route: GatewayRoute, responder: any HTTPResponder) {
        self.route = route
        self.responder = responder
    }

    func send(_ message: ByteBuffer, promise: EventLoopPromise<Void>?) {
        response = message
        promise?.succeed()
    }

    func finish(_ status: WireStatus) {
        guard status.code == .ok, var framed = response else {
            return Self.fail(status.code == .ok ? .internalError("no response") : status, responder)
        }
        framed.moveReaderIndex(forwardBy: 5)
        do {
            let json = try route.encode(framed)
            responder.respond(status: 200, contentType: "application/json", ByteBuffer(bytes: json),
                              extraHeaders: [("grpc-metadata-content-type", "application/grpc")])
        } catch {
            Self.fail(.internalError("\(error)"), responder)
        }
    }

    static func fail(_ status: WireStatus, _ responder: any HTTPResponder) {
        responder.respond(status: Gateway.httpStatus(status.code), contentType: "application/json", Gateway.errorBody(status))
    }
}

/// A streaming gateway call's answer: `{"result":…}` lines as the messages
/// come, chunked; an error ends it with grpc-gateway's `{"error":…}` line.
final class GatewayStream: WireCallSink, @unchecked Sendable {
    private let route: GatewayRoute
    private let responder: any HTTPResponder
    private var handler: (any WireStreamHandler)?
    private var headSent = false
    private var ended = false

    init(route: GatewayRoute, responder: any HTTPResponder) {
        self.route = route
        self.responder = responder
    }

    /// On the event loop, before any message.
    func attach(_ handler: any WireStreamHandler) { self.handler = handler }

    private func sendHead(_ status: Int) {
        guard !headSent else { return }
        headSent = true
        responder.head(status: status, headers: HTTPService.corsHeaders + [("content-type", "application/json"),
                                                                           ("grpc-metadata-content-type", "application/grpc")])
    }

    func send(_ message: ByteBuffer, promise: EventLoopPromise<Void>?) {
        guard !ended else {
            promise?.fail(WireStatus.cancelled("the request has ended"))
            return
        }
        var message = message
        message.moveReaderIndex(forwardBy: 5)
        do {
            var line = ByteBuffer(string: "{\"result\":")
            line.writeBytes(try route.encode(message))
            line.writeString("}\n")
            sendHead(200)
            let written = responder.body(line)
            if let promise { written.cascade(to: promise) }
        } catch {
            promise?.fail(error)
        }
    }

    func finish(_ status: WireStatus) {
        guard !ended else { return }
        ended = true
        if status.code != .ok {
            sendHead(Gateway.httpStatus(status.code))
            responder.body(Gateway.streamErrorBody(status))
        } else {
            sendHead(200)
        }
        responder.end()
    }

    /// The client went away: the call ends (its task is cancelled).
    func cancel() {
        guard !ended else { return }
        ended = true
        handler?.cancelled()
    }
}
