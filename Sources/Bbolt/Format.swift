#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Facts of bbolt's on-disk format (version 2, as etcd 3.4-3.6 write it).
///
/// A file is a sequence of pages of `pageSize` bytes. Pages 0 and 1 are meta
/// pages (the one with the higher transaction id and a valid checksum wins);
/// the meta names the freelist page, the root bucket's page and the high
/// water mark. Every page starts with a 16-byte header {id u64, flags u16,
/// count u16, overflow u32}; a page followed by `overflow` continuation
/// pages holds one oversized node. Leaf elements are 16 bytes {flags u32,
/// pos u32, ksize u32, vsize u32}, branch elements {pos u32, ksize u32,
/// pgid u64}; `pos` counts from the element itself to its key, the value
/// follows the key. A bucket's value is {root pgid u64, sequence u64}; with
/// root 0 the bucket is inline and a leaf page follows in the value itself.
/// Integers are little-endian (the layout of bbolt's structs on amd64/arm64).
public enum BboltFormat {
    public static let magic: UInt32 = 0xED0C_DAED
    public static let version: UInt32 = 2
    public static let defaultPageSize = 4096
    public static let pageHeaderSize = 16
    public static let elementSize = 16
    public static let bucketHeaderSize = 16
    /// magic, version, pageSize, flags, root{pgid, sequence}, freelist, pgid, txid.
    static let metaChecksummedBytes = 56
    static let metaBytes = 64

    public static let branchPageFlag: UInt16 = 0x01
    public static let leafPageFlag: UInt16 = 0x02
    public static let metaPageFlag: UInt16 = 0x04
    public static let freelistPageFlag: UInt16 = 0x10
    public static let bucketLeafFlag: UInt32 = 0x01
    /// `meta.freelist` when the freelist is not stored (NoFreelistSync).
    public static let noFreelist: UInt64 = .max

    /// FNV-1a, 64-bit: the meta page checksum.
    static func fnv64a(_ bytes: some Sequence<UInt8>) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        return hash
    }
}

/// Everything the bbolt reader and writer report.
public enum BboltError: Error, Equatable, Sendable, CustomStringConvertible {
    /// An operating-system call on `path` failed.
    case io(operation: String, path: String, errno: Int32)
    /// The file is not a usable bbolt database: `reason` names the problem.
    case invalid(path: String, reason: String)
    /// The writer was used out of order (keys not ascending, no bucket open...).
    case usage(String)

    public var description: String {
        switch self {
        case .io(let operation, let path, let code):
            return "\(operation) \(path): \(String(cString: strerror(code)))"
        case .invalid(let path, let reason):
            return "\(path): not a valid bbolt database: \(reason)"
        case .usage(let message):
            return "bbolt writer: \(message)"
        }
    }
}

// MARK: little-endian helpers

extension UnsafeRawBufferPointer {
    @inline(__always)
    func le16(_ offset: Int) -> UInt16 { UInt16(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self)) }
    @inline(__always)
    func le32(_ offset: Int) -> UInt32 { UInt32(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }
    @inline(__always)
    func le64(_ offset: Int) -> UInt64 { UInt64(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt64.self)) }
}

extension UnsafeMutableRawBufferPointer {
    @inline(__always)
    func putLE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
    }
}

extension Array where Element == UInt8 {
    @inline(__always)
    mutating func putLE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        withUnsafeMutableBytes { $0.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self) }
    }

    func le<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
    }
}

/// Byte-wise comparison (bbolt orders keys with bytes.Compare).
@inline(__always)
func compareKeys(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Int {
    let n = Swift.min(a.count, b.count)
    if n > 0 {
        let c = memcmp(a.baseAddress!, b.baseAddress!, n)
        if c != 0 { return Int(c) }
    }
    return a.count - b.count
}
