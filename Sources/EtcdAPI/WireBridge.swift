import EtcdServer
import GRPCCore
import GRPCWire
import Locks
import NIOCore
import SwiftProtobuf

// The glue between GRPCWire (gRPC over NIO, no tasks) and our services:
// gRPC statuses from our errors, and bridges that run a service's async method in a task for the calls that
// are not on the hot path.

/// The gRPC status a client gets for `error`: etcd's code and message for
/// ours, gRPC's own for RPC errors.
func wireStatus(_ error: any Error) -> WireStatus {
    switch error {
    case let error as WireStatus: return error
    case let error as EtcdError: return WireStatus(code: WireStatus.Code(rawValue: error.code.rawValue) ?? .unknown, message: error.message)
    case let error as RPCError: return WireStatus(code: WireStatus.Code(rawValue: error.code.rawValue) ?? .unknown, message: error.message)
    case is CancellationError: return .cancelled()
    default: return WireStatus(code: .unknown, message: "\(error)")
    }
}

extension WireCall {
    /// Ends a unary call with `result`: the response (encoded here) or its error.
    func reply<M: SwiftProtobuf.Message>(_ result: Result<M, any Error>) {
        do {
            respond(try result.get().framed())
        } catch {
            finish(wireStatus(error))
        }
    }

    /// A grpc-swift server context for a service method run through a bridge.
    func serverContext(_ cancellation: ServerContext.RPCCancellationHandle) -> ServerContext {
        let parts = path.dropFirst().split(separator: "/", maxSplits: 1)
        let descriptor = MethodDescriptor(fullyQualifiedService: String(parts.first ?? ""), method: String(parts.last ?? ""))
        return ServerContext(descriptor: descriptor, remotePeer: remotePeer, localPeer: localPeer, cancellation: cancellation)
    }
}

/// A grpc-swift response writer over a wire call; each write waits until
/// its bytes have left for the socket (backpressure for streams).
struct WireWriter<Element: SwiftProtobuf.Message>: RPCWriterProtocol {
    let call: WireCall

    func write(_ element: Element) async throws {
        try await call.send(element.framed()).get()
    }

    func write(contentsOf elements: some Sequence<Element>) async throws {
        let frames = try elements.map { try $0.framed() }
        try await call.send(contentsOf: frames).get()
    }
}

extension WireRouter {
    /// A unary method run by an async service method, in a task.
    mutating func unary<Request: SwiftProtobuf.Message & Sendable, Response: SwiftProtobuf.Message>(
        _ method: MethodDescriptor,
        _ body: @escaping @Sendable (Request, ServerContext) async throws -> Response
    ) {
        self["/" + method.fullyQualifiedMethod] = .unary { call, bytes in
            let request: Request
            do { request = try Request(grpcMessage: bytes) } catch { return call.finish(wireStatus(error)) }
            Task {
                do {
                    let response = try await withServerContextRPCCancellationHandle { handle in
                        try await body(request, call.serverContext(handle))
                    }
                    call.respond(try response.framed())
                } catch {
                    call.finish(wireStatus(error))
                }
            }
        }
    }

    /// A bidirectional-streaming method run by an async service method.
    mutating func bidirectional<Request: SwiftProtobuf.Message & Sendable, Response: SwiftProtobuf.Message>(
        _ method: MethodDescriptor,
        _ body: @escaping @Sendable (RPCAsyncSequence<Request, any Error>, RPCWriter<Response>, ServerContext) async throws -> Void
    ) {
        self["/" + method.fullyQualifiedMethod] = .streaming { call in
            let handler = BridgedStream<Request>(call: call)
            handler.start { requests, context in
                try await body(RPCAsyncSequence(wrapping: requests), RPCWriter(wrapping: WireWriter<Response>(call: call)), context)
            }
            return handler
        }
    }

    /// A server-streaming method (one request, many responses).
    mutating func serverStreaming<Request: SwiftProtobuf.Message & Sendable, Response: SwiftProtobuf.Message>(
        _ method: MethodDescriptor,
        _ body: @escaping @Sendable (Request, RPCWriter<Response>, ServerContext) async throws -> Void
    ) {
        self["/" + method.fullyQualifiedMethod] = .streaming { call in
            let handler = BridgedStream<Request>(call: call)
            handler.start { requests, context in
                var iterator = requests.makeAsyncIterator()
                guard let request = try await iterator.next() else {
                    throw WireStatus.internalError("grpc: server-streaming call ended without a message")
                }
                try await body(request, RPCWriter(wrapping: WireWriter<Response>(call: call)), context)
            }
            return handler
        }
    }
}

/// A streaming call served by a task: messages arrive on the event loop and
/// queue (at most `maxQueued`) for the task; the end of the call cancels it.
final class BridgedStream<Request: SwiftProtobuf.Message & Sendable>: WireStreamHandler, @unchecked Sendable {
    static var maxQueued: Int { 1024 }

    private let call: WireCall
    private let requests: AsyncThrowingStream<Request, any Error>
    private let continuation: AsyncThrowingStream<Request, any Error>.Continuation
    private struct Control {
        var task: Task<Void, Never>?
        var handle: ServerContext.RPCCancellationHandle?
        var cancelled = false
    }
    private let control = Mutex(Control())

    init(call: WireCall) {
        self.call = call
        (requests, continuation) = AsyncThrowingStream.makeStream(of: Request.self, throwing: (any Error).self,
                                                                  bufferingPolicy: .bufferingOldest(Self.maxQueued))
    }

    func start(_ body: @escaping @Sendable (AsyncThrowingStream<Request, any Error>, ServerContext) async throws -> Void) {
        let call = self.call
        let requests = self.requests
        let task = Task {
            await withServerContextRPCCancellationHandle { handle in
                let cancelledAlready = self.control.withLock { control -> Bool in
                    control.handle = handle
                    return control.cancelled
                }
                if cancelledAlready { handle.cancel() }
                do {
                    try await body(requests, call.serverContext(handle))
                    call.finish(.ok)
                } catch {
                    call.finish(wireStatus(error))
                }
            }
        }
        control.withLock { $0.task = task }
    }

    func received(_ message: ByteBuffer) {
        do {
            let request = try Request(grpcMessage: message)
            if case .dropped = continuation.yield(request) {
                call.finish(.resourceExhausted("too many queued messages on this stream"))
                cancelled()
            }
        } catch {
            call.finish(wireStatus(error))
            cancelled()
        }
    }

    func inboundClosed() {
        continuation.finish()
    }

    func cancelled() {
        continuation.finish(throwing: RPCError(code: .cancelled, message: "the call was cancelled"))
        let (task, handle) = control.withLock { control in
            control.cancelled = true
            return (control.task, control.handle)
        }
        handle?.cancel()
        task?.cancel()
    }
}
