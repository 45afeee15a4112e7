import NIOCore
import SwiftProtobuf

// Protobuf messages in and out of gRPC's length-prefixed framing without
// copying their bytes: SwiftProtobuf serialises straight into a ByteBuffer
// behind the 5-byte prefix, and parses a received message where it lies.

/// The bytes of a gRPC message being serialised: a ByteBuffer with the
/// 5-byte prefix in front, so SwiftProtobuf writes straight into it.
struct FramedMessage: SwiftProtobufContiguousBytes {
    var buffer: ByteBuffer

    init(repeating value: UInt8, count: Int) {
        buffer = ByteBufferAllocator().buffer(capacity: 5 + count)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt32(count))
        buffer.writeRepeatingByte(value, count: count)
    }

    init<S: Sequence>(_ sequence: S) where S.Element == UInt8 {
        buffer = .grpcMessage(Array(sequence))
    }

    var count: Int { buffer.readableBytes - 5 }

    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try buffer.withUnsafeReadableBytes { try body(UnsafeRawBufferPointer(rebasing: $0.dropFirst(5))) }
    }

    mutating func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try buffer.withUnsafeMutableReadableBytes { try body(UnsafeMutableRawBufferPointer(rebasing: $0.dropFirst(5))) }
    }
}

/// A received message's bytes, read in place.
struct ReceivedMessage: SwiftProtobufContiguousBytes {
    var buffer: ByteBuffer

    init(_ buffer: ByteBuffer) { self.buffer = buffer }
    init(repeating value: UInt8, count: Int) {
        buffer = ByteBufferAllocator().buffer(capacity: count)
        buffer.writeRepeatingByte(value, count: count)
    }
    init<S: Sequence>(_ sequence: S) where S.Element == UInt8 {
        buffer = ByteBufferAllocator().buffer(capacity: 0)
        buffer.writeBytes(Array(sequence))
    }
    var count: Int { buffer.readableBytes }
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try buffer.withUnsafeReadableBytes(body)
    }
    mutating func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try buffer.withUnsafeMutableReadableBytes(body)
    }
}

extension SwiftProtobuf.Message {
    /// The message as one length-prefixed gRPC message.
    public func framed() throws -> ByteBuffer {
        let framed: FramedMessage = try serializedBytes()
        return framed.buffer
    }

    /// Decodes a received message in place (a decoding error is the
    /// status gRPC servers answer with).
    public init(grpcMessage buffer: ByteBuffer) throws(WireStatus) {
        do {
            try self.init(serializedBytes: ReceivedMessage(buffer))
        } catch {
            throw WireStatus.internalError("grpc: error unmarshalling request: \(error)")
        }
    }
}
