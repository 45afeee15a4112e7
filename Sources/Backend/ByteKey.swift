/// A byte string as a dictionary key, hashed in one call over its bytes
/// (`[UInt8]`'s own hashing feeds the hasher byte by byte).
public struct ByteKey: Hashable, Sendable {
    public let bytes: [UInt8]

    @inlinable
    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    @inlinable
    public static func == (lhs: ByteKey, rhs: ByteKey) -> Bool {
        lhs.bytes == rhs.bytes
    }

    @inlinable
    public func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }
}
