import EtcdProto
import EtcdServer
import Foundation
import GRPCWire
import Locks
import NIOCore
import NIOHPACK

/// An HTTP request to the client port (HTTP/1.1, or an HTTP/2 stream that is
/// not gRPC), body complete.
struct HTTPRequest: Sendable {
    var method: String
    /// The path without its query.
    var path: String
    /// The query's parameters in order (`?verbose` is `("verbose", "")`).
    var query: [(String, String)]
    /// The `Authorization` header: the gateway's auth token.
    var authorization: String?
    var body: ByteBuffer
    var remotePeer: String
    var localPeer: String
    var peerCommonName: String?

    init(method: String, target: String, authorization: String?, body: ByteBuffer, remotePeer: String, localPeer: String, peerCommonName: String?) {
        self.method = method
        let parts = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        path = String(parts.first ?? "")
        query = parts.count > 1 ? Self.parseQuery(String(parts[1])) : []
        self.authorization = authorization
        self.body = body
        self.remotePeer = remotePeer
        self.localPeer = localPeer
        self.peerCommonName = peerCommonName
    }

    static func parseQuery(_ text: String) -> [(String, String)] {
        text.split(separator: "&").map { pair in
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let decode = { (s: Substring) in (String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(s)) }
            return (decode(kv[0]), kv.count > 1 ? decode(kv[1]) : "")
        }
    }

    func queryValues(_ name: String) -> [String] { query.filter { $0.0 == name }.map(\.1) }
    func hasQuery(_ name: String) -> Bool { query.contains { $0.0 == name } }
}

/// Where an HTTP answer goes: HTTP/1 (`HTTP1Handler`) or an HTTP/2 stream
/// (`WirePlainResponse`). Callable from any thread, in order.
protocol HTTPResponder: Sendable {
    var eventLoop: any EventLoop { get }
    func head(status: Int, headers: [(String, String)])
    /// A body part; completes once written (backpressure for streams).
    @discardableResult func body(_ bytes: ByteBuffer) -> EventLoopFuture<Void>
    func end()
    /// Called if the client goes away before `end()`.
    func onCancel(_ body: @escaping @Sendable () -> Void)
}

extension HTTPResponder {
    /// A whole answer with its length.
    func respond(status: Int, contentType: String?, _ body: ByteBuffer, extraHeaders: [(String, String)] = []) {
        var headers = HTTPService.corsHeaders
        if let contentType { headers.append(("content-type", contentType)) }
        headers.append(contentsOf: extraHeaders)
        headers.append(("content-length", String(body.readableBytes)))
        head(status: status, headers: headers)
        if body.readableBytes > 0 { self.body(body) }
        end()
    }

    /// Go's `http.Error`: plain text with a newline.
    func error(_ status: Int, _ text: String, extraHeaders: [(String, String)] = []) {
        respond(status: status, contentType: "text/plain; charset=utf-8", ByteBuffer(string: text + "\n"),
                extraHeaders: [("x-content-type-options", "nosniff")] + extraHeaders)
    }
}

extension WirePlainResponse: HTTPResponder {}

/// What the client port (and `--listen-metrics-urls`) answers over HTTP:
/// `/version`, `/health`, `/livez`, `/readyz`, `/metrics`, and on the client
/// port the `/v3/*` JSON gateway (`Gateway`).
final class HTTPService: Sendable {
    /// Which listener: the client port serves everything; a metrics
    /// listener only `/metrics` and the health endpoints.
    enum Scope: Sendable { case client, metrics }

    let member: Member?
    let router: WireRouter
    let scope: Scope
    /// The Prometheus exposition (nil: `/metrics` is 404).
    let metrics: (@Sendable () -> [UInt8])?
    /// The largest protobuf request the gateway passes on (the gRPC limit).
    let maxRequestBytes: Int

    /// etcd's default `--cors '*'` answer on every response.
    static let corsHeaders: [(String, String)] = [
        ("access-control-allow-headers", "accept, content-type, authorization"),
        ("access-control-allow-methods", "POST, GET, OPTIONS, PUT, DELETE"),
        ("access-control-allow-origin", "*"),
    ]

    init(member: Member?, router: WireRouter, scope: Scope, metrics: (@Sendable () -> [UInt8])?, maxRequestBytes: Int) {
        self.member = member
        self.router = router
        self.scope = scope
        self.metrics = metrics
        self.maxRequestBytes = maxRequestBytes
    }

    /// The largest HTTP body held for one request: a JSON request is at most
    /// about 4/3 of its protobuf (base64) plus its field names.
    var maxBodyBytes: Int { maxRequestBytes * 2 + 64 * 1024 }

    func handle(_ request: HTTPRequest, _ responder: any HTTPResponder) {
        let path = request.path
        switch path {
        case "/metrics":
            guard let metrics else { return responder.error(404, "404 page not found") }
            return responder.respond(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", ByteBuffer(bytes: metrics()))
        case "/health":
            return health(request, responder)
        default:
            break
        }
        if let check = HealthChecks.endpoint(path) {
            return healthChecks(check, request, responder)
        }
        guard scope == .client else { return responder.error(404, "404 page not found") }
        if path == "/version" {
            return responder.respond(status: 200, contentType: "application/json", ByteBuffer(string: versionJSON()))
        }
        if path.hasPrefix("/v3/") || path.hasPrefix("/v3beta/") {
            return gateway(request, responder)
        }
        responder.error(404, "404 page not found")
    }

    // MARK: - /version

    func versionJSON() -> String {
        let cluster = member?.clusterVersion ?? EtcdVersion.cluster
        return "{\"etcdserver\":\"\(EtcdVersion.server)\",\"etcdcluster\":\"\(cluster)\",\"storage\":\"\(EtcdVersion.cluster)\"}"
    }
}
