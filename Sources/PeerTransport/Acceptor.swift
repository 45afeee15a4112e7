import Checksum
import Dispatch
import Foundation
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The acceptor's end of a connection: checks the hello, then delivers
/// messages to the delegate or receives one snapshot into a file.
final class AcceptorHandler: ChannelDuplexHandler {
    typealias InboundIn = Frame
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Time a dialer has to send its hello.
    static let helloTimeout: TimeAmount = .seconds(10)
    /// Disk writes queued before we stop reading from the socket, and the level at which we resume.
    static let maxPendingWrites = 4
    static let resumePendingWrites = 2

    private enum State {
        case awaitingHello
        case messages(from: UInt64)
        case hashRequest(from: UInt64)
        case snapshot(SnapshotReceive)
        case closing
    }

    private let core: TransportCore
    private var state = State.awaitingHello
    private var context: ChannelHandlerContext?
    private var timer: Scheduled<Void>?
    private var readHeld = false

    init(core: TransportCore) {
        self.core = core
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: Self.helloTimeout) { channel.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        self.context = nil
        abortSnapshot()
        state = .closing
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch state {
        case .messages(let from):
            guard frame.kind == .message else {
                context.close(promise: nil)
                return
            }
            // A member removed while connected: refuse it now, so its next
            // dial learns why.
            if core.delegate.transport(isRemoved: from) {
                refuse("member removed", context: context)
                return
            }
            core.delegate.transport(received: frame.data, from: from)
        case .awaitingHello:
            timer?.cancel()
            hello(frame, context: context)
        case .hashRequest(let from):
            guard frame.kind == .hashKVRequest else {
                context.close(promise: nil)
                return
            }
            state = .closing
            let channel = context.channel
            core.delegate.transport(hashKVRequest: frame.data, from: from) { result in
                let answer = switch result {
                case .success(let data): Wire.frame(.hashKVResponse, data, allocator: channel.allocator)
                case .failure(let refusal): Wire.errorFrame(refusal.reason, allocator: channel.allocator)
                }
                channel.writeAndFlush(answer).whenComplete { _ in channel.close(promise: nil) }
            }
        case .snapshot(let receive):
            snapshotFrame(frame, receive: receive, context: context)
        case .closing:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    /// Holds socket reads while too many chunk writes wait for the disk.
    func read(context: ChannelHandlerContext) {
        if case .snapshot(let receive) = state, receive.pendingWrites >= Self.maxPendingWrites {
            readHeld = true
            return
        }
        context.read()
    }

    // MARK: hello

    private func hello(_ frame: Frame, context: ChannelHandlerContext) {
        guard frame.kind == .hello, let hello = Hello(payload: frame.payload) else {
            refuse("unsupported protocol", context: context)
            return
        }
        let config = core.config
        if hello.stream == .clusterInfo {
            guard hello.clusterID == 0 || hello.clusterID == config.clusterID else {
                refuse("cluster ID mismatch", context: context)
                return
            }
            let answer = core.delegate.transportClusterInfo()
            let info = Wire.frame(.clusterInfo, answer, allocator: context.channel.allocator)
            state = .closing
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(info)).whenComplete { _ in channel.close(promise: nil) }
            return
        }
        if hello.clusterID != config.clusterID {
            refuse("cluster ID mismatch", context: context)
        } else if hello.toID != config.localID {
            refuse("member ID mismatch", context: context)
        } else if core.delegate.transport(isRemoved: hello.fromID) {
            refuse("member removed", context: context)
        } else if hello.stream == .hashKV {
            state = .hashRequest(from: hello.fromID)  // answered with the hash, no ok
        } else {
            state = hello.stream == .messages
                ? .messages(from: hello.fromID) : .snapshot(SnapshotReceive(from: hello.fromID))
            let ok = Wire.emptyFrame(.ok, allocator: context.channel.allocator)
            context.writeAndFlush(wrapOutboundOut(ok), promise: nil)
        }
    }

    /// Replies an error frame and closes.
    private func refuse(_ reason: String, context: ChannelHandlerContext) {
        abortSnapshot()
        state = .closing
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(Wire.errorFrame(reason, allocator: channel.allocator)))
            .whenComplete { _ in channel.close(promise: nil) }
    }

    // MARK: snapshot

    private func snapshotFrame(_ frame: Frame, receive: SnapshotReceive, context: ChannelHandlerContext) {
        switch (frame.kind, receive.phase) {
        case (.snapshotMessage, .announced):
            receive.message = frame.data
            let file = SnapshotFile(directory: core.config.snapshotDirectory)
            let done = context.eventLoop.makePromise(of: Void.self)
            _ = core.track(done.futureResult, evenWhenStopping: true)
            receive.file = file
            receive.done = done
            receive.phase = .receiving
            file.open()

        case (.snapshotChunk, .receiving):
            guard let file = receive.file else { return }
            receive.crc = frame.payload.withUnsafeReadableBytes { CRC32C.update(receive.crc, $0) }
            receive.bytes += UInt64(frame.payload.readableBytes)
            receive.pendingWrites += 1
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            let loop = context.eventLoop
            file.write(frame.payload) { ok in loop.execute { bound.value.chunkWritten(ok) } }

        case (.snapshotEnd, .receiving):
            guard let file = receive.file else { return }
            var payload = frame.payload
            guard let total = payload.readInteger(as: UInt64.self), let crc = payload.readInteger(as: UInt32.self)
            else {
                refuse("malformed snapshot end", context: context)
                return
            }
            guard total == receive.bytes, crc == receive.crc else {
                refuse("snapshot body checksum mismatch", context: context)
                return
            }
            receive.phase = .finishing
            let bound = NIOLoopBound((self, receive), eventLoop: context.eventLoop)
            let loop = context.eventLoop
            file.finish { result in
                loop.execute { bound.value.0.finished(result, receive: bound.value.1) }
            }

        default:
            refuse("unexpected frame on snapshot stream", context: context)
        }
    }

    private func chunkWritten(_ ok: Bool) {
        guard case .snapshot(let receive) = state else { return }
        receive.pendingWrites -= 1
        guard let context else { return }
        if !ok {
            refuse("snapshot write failed", context: context)
            return
        }
        if readHeld && receive.pendingWrites <= Self.resumePendingWrites {
            readHeld = false
            context.read()
        }
    }

    private func finished(_ result: Result<String, SnapshotFileError>, receive: SnapshotReceive) {
        guard let context, case .snapshot(let current) = state, current === receive else {
            // The connection went away while we fsynced: nobody will be told, so delete.
            let done = receive.done
            if case .success = result, let file = receive.file {
                file.removeFinal { done?.succeed() }
            } else {
                done?.succeed()
            }
            return
        }
        receive.phase = .done
        switch result {
        case .success(let path):
            core.delegate.transport(receivedSnapshot: receive.message ?? Data(), bodyPath: path, from: receive.from)
            receive.done?.succeed()
            state = .closing
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(Wire.emptyFrame(.snapshotAck, allocator: channel.allocator)))
                .whenComplete { _ in channel.close(promise: nil) }
        case .failure:
            receive.done?.succeed()
            refuse("snapshot write failed", context: context)
        }
    }

    /// Deletes the partial file of an unfinished transfer.
    private func abortSnapshot() {
        guard case .snapshot(let receive) = state else { return }
        switch receive.phase {
        case .announced:
            receive.phase = .done
        case .receiving:
            receive.phase = .done
            let done = receive.done
            receive.file?.abort { done?.succeed() }
        case .finishing, .done:
            break  // `finished` cleans up
        }
    }
}

/// One incoming snapshot's progress; owned by its `AcceptorHandler` (event-loop only).
final class SnapshotReceive {
    enum Phase { case announced, receiving, finishing, done }
    let from: UInt64
    var phase = Phase.announced
    var message: Data?
    var file: SnapshotFile?
    var crc: UInt32 = 0
    var bytes: UInt64 = 0
    var pendingWrites = 0
    /// Completes once the file is handed over or deleted; `stop()` waits for it.
    var done: EventLoopPromise<Void>?

    init(from: UInt64) {
        self.from = from
    }
}

struct SnapshotFileError: Error {
    var operation: String
    var errno: Int32
}

/// A snapshot body file being written. Every operation runs in order on a
/// private serial queue (never on an event loop); the mutable state is only
/// touched there, hence `@unchecked Sendable`.
final class SnapshotFile: @unchecked Sendable {
    private let queue = DispatchQueue(label: "PeerTransport.snapshot-file")
    let directory: String
    let partPath: String
    let finalPath: String
    private var fd: Int32 = -1
    private var error: SnapshotFileError?

    init(directory: String) {
        let name = String(UInt64.random(in: .min ... .max), radix: 16)
        let padded = String(repeating: "0", count: 16 - name.count) + name
        self.directory = directory
        finalPath = (directory as NSString).appendingPathComponent(padded + ".db")
        partPath = finalPath + ".part"
    }

    func open() {
        queue.async { [self] in
            fd = Self.retrying { systemOpen(partPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600) }
            if fd < 0 { error = SnapshotFileError(operation: "open", errno: errno) }
        }
    }

    /// Appends `buffer`; `done(false)` once any write failed.
    func write(_ buffer: ByteBuffer, done: @escaping @Sendable (Bool) -> Void) {
        queue.async { [self] in
            if error == nil {
                buffer.withUnsafeReadableBytes { bytes in
                    var offset = 0
                    while offset < bytes.count {
                        let n = Self.retrying { systemWrite(fd, bytes.baseAddress! + offset, bytes.count - offset) }
                        if n <= 0 {
                            error = SnapshotFileError(operation: "write", errno: errno)
                            return
                        }
                        offset += n
                    }
                }
            }
            done(error == nil)
        }
    }

    /// fsyncs, renames `.part` to `.db` and fsyncs the directory; on failure the file is deleted.
    func finish(done: @escaping @Sendable (Result<String, SnapshotFileError>) -> Void) {
        queue.async { [self] in
            if error == nil, Self.retrying({ fsync(fd) }) != 0 {
                error = SnapshotFileError(operation: "fsync", errno: errno)
            }
            closeFile()
            if error == nil, rename(partPath, finalPath) != 0 {
                error = SnapshotFileError(operation: "rename", errno: errno)
            }
            if let error {
                unlink(partPath)
                done(.failure(error))
                return
            }
            let dir = Self.retrying { systemOpen(directory, O_RDONLY | O_CLOEXEC, 0) }
            if dir >= 0 {
                let synced = Self.retrying { fsync(dir) }
                close(dir)
                if synced != 0 {
                    let failure = SnapshotFileError(operation: "fsync directory", errno: errno)
                    unlink(finalPath)
                    done(.failure(failure))
                    return
                }
            }
            done(.success(finalPath))
        }
    }

    /// Closes and deletes the partial file.
    func abort(done: @escaping @Sendable () -> Void) {
        queue.async { [self] in
            closeFile()
            unlink(partPath)
            done()
        }
    }

    /// Deletes the finished file (its transfer was abandoned after all).
    func removeFinal(done: @escaping @Sendable () -> Void) {
        queue.async { [self] in
            unlink(finalPath)
            done()
        }
    }

    private func closeFile() {
        if fd >= 0 {
            close(fd)
            fd = -1
        }
    }

    private static func retrying<T: BinaryInteger>(_ call: () -> T) -> T {
        while true {
            let result = call()
            if result < 0 && errno == EINTR { continue }
            return result
        }
    }
}

private func systemOpen(_ path: String, _ flags: Int32, _ mode: mode_t) -> Int32 {
    open(path, flags, mode)
}

private func systemWrite(_ fd: Int32, _ pointer: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, pointer, count)
}
