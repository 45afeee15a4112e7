/// A point in the store's history: `main` grows by one per write request
/// (a txn counts once), `sub` numbers the changes within that request.
public struct Revision: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var main: Int64
    public var sub: Int64

    public init(main: Int64, sub: Int64 = 0) {
        self.main = main
        self.sub = sub
    }

    public static func < (lhs: Revision, rhs: Revision) -> Bool {
        (lhs.main, lhs.sub) < (rhs.main, rhs.sub)
    }

    public var description: String { "\(main)_\(sub)" }
}

/// The key of a revision in bucket `key`, as etcd lays it out: 8-byte
/// big-endian `main`, the byte `_`, 8-byte big-endian `sub` (17 bytes), and a
/// trailing `t` when the entry is a tombstone (a deletion).
public enum RevisionKey {
    public static let byteCount = 17
    public static let tombstoneMark = UInt8(ascii: "t")

    public static func encode(_ revision: Revision, tombstone: Bool = false) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: tombstone ? byteCount + 1 : byteCount)
        let main = UInt64(bitPattern: revision.main)
        let sub = UInt64(bitPattern: revision.sub)
        for i in 0..<8 {
            bytes[i] = UInt8(truncatingIfNeeded: main >> (56 - 8 * UInt64(i)))
            bytes[9 + i] = UInt8(truncatingIfNeeded: sub >> (56 - 8 * UInt64(i)))
        }
        bytes[8] = UInt8(ascii: "_")
        if tombstone { bytes[byteCount] = tombstoneMark }
        return bytes
    }

    /// Calls `body` with the encoded key in a stack buffer.
    @inline(__always)
    public static func withEncoded<R>(_ revision: Revision, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeTemporaryAllocation(byteCount: byteCount, alignment: 1) { out in
            out.storeBytes(of: UInt64(bitPattern: revision.main).bigEndian, toByteOffset: 0, as: UInt64.self)
            out[8] = UInt8(ascii: "_")
            out.storeBytes(of: UInt64(bitPattern: revision.sub).bigEndian, toByteOffset: 9, as: UInt64.self)
            return try body(UnsafeRawBufferPointer(out))
        }
    }

    /// Decodes a revision key; nil when it is not one.
    public static func decode(_ bytes: UnsafeRawBufferPointer) -> (revision: Revision, tombstone: Bool)? {
        guard bytes.count == byteCount || bytes.count == byteCount + 1 else { return nil }
        var main: UInt64 = 0
        var sub: UInt64 = 0
        for i in 0..<8 {
            main = main << 8 | UInt64(bytes[i])
            sub = sub << 8 | UInt64(bytes[9 + i])
        }
        let tombstone = bytes.count == byteCount + 1 && bytes[byteCount] == tombstoneMark
        return (Revision(main: Int64(bitPattern: main), sub: Int64(bitPattern: sub)), tombstone)
    }

    public static func decode(_ bytes: [UInt8]) -> (revision: Revision, tombstone: Bool)? {
        bytes.withUnsafeBytes { decode($0) }
    }
}
