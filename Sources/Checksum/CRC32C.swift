/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): the checksum etcd
/// uses for WAL records, snapshot files and backend/KV hashes.
///
/// Table-driven "slicing-by-8": eight 256-entry tables fold eight input bytes
/// per step with independent look-ups instead of one dependent look-up per
/// byte.
///
/// Two ways to use it: a running value (`var c = CRC32C(); c.update(...)`,
/// then `c.value`, as Go's `hash.Hash32`), or the static functions on plain
/// `UInt32`s, where `update(update(0, a), b) == checksum(a + b)` — the WAL
/// chains every record through one running value that way.
public struct CRC32C: Sendable {
    /// The checksum of everything added so far.
    public private(set) var value: UInt32 = 0

    public init() {}

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        value = Self.update(value, bytes)
    }

    public mutating func update(_ bytes: some Sequence<UInt8>) {
        value = Self.update(value, bytes)
    }

    public mutating func update(_ string: String) {
        var copy = string
        copy.withUTF8 { update(UnsafeRawBufferPointer($0)) }
    }

    /// The checksum of `bytes`.
    public static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        update(0, bytes)
    }

    /// Continues `crc` over `bytes`.
    public static func update(_ crc: UInt32, _ bytes: some Sequence<UInt8>) -> UInt32 {
        if let result = bytes.withContiguousStorageIfAvailable({ update(crc, UnsafeRawBufferPointer($0)) }) {
            return result
        }
        return update(crc, Array(bytes))
    }

    /// Continues `crc` over the raw bytes in `buffer`.
    public static func update(_ crc: UInt32, _ buffer: UnsafeRawBufferPointer) -> UInt32 {
        tables.withUnsafeBufferPointer { table in
            var c = ~crc
            var remaining = buffer.count
            guard var p = buffer.baseAddress else { return crc }
            while remaining >= 8 {
                let word = UInt64(littleEndian: p.loadUnaligned(as: UInt64.self)) ^ UInt64(c)
                c = table[7 &* 256 &+ Int(word & 0xFF)]
                    ^ table[6 &* 256 &+ Int((word >> 8) & 0xFF)]
                    ^ table[5 &* 256 &+ Int((word >> 16) & 0xFF)]
                    ^ table[4 &* 256 &+ Int((word >> 24) & 0xFF)]
                    ^ table[3 &* 256 &+ Int((word >> 32) & 0xFF)]
                    ^ table[2 &* 256 &+ Int((word >> 40) & 0xFF)]
                    ^ table[1 &* 256 &+ Int((word >> 48) & 0xFF)]
                    ^ table[Int(word >> 56)]
                p += 8
                remaining -= 8
            }
            while remaining > 0 {
                c = table[Int((c ^ UInt32(p.load(as: UInt8.self))) & 0xFF)] ^ (c >> 8)
                p += 1
                remaining -= 1
            }
            return ~c
        }
    }

    /// Eight consecutive 256-entry tables. Table 0 is the classic
    /// byte-at-a-time table; table k maps a byte to its contribution k
    /// positions further back in the input.
    private static let tables: [UInt32] = {
        let polynomial: UInt32 = 0x82F6_3B78
        var table = [UInt32](repeating: 0, count: 8 * 256)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ polynomial : c >> 1 }
            table[i] = c
        }
        for k in 1..<8 {
            for i in 0..<256 {
                let previous = table[(k - 1) * 256 + i]
                table[k * 256 + i] = (previous >> 8) ^ table[Int(previous & 0xFF)]
            }
        }
        return table
    }()
}
