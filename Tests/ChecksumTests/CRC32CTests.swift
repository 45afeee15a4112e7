import Testing
import Checksum

/// Bit-at-a-time reference implementation.
private func referenceCRC32C(_ bytes: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes {
        crc ^= UInt32(byte)
        for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
    }
    return ~crc
}

@Suite struct CRC32CTests {
    @Test func knownVectors() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
        // RFC 3720 (iSCSI) appendix B.4 test vectors.
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum((0..<32).map { UInt8($0) }) == 0x46DD_794E)
        #expect(CRC32C.checksum((0..<32).map { UInt8(31 - $0) }) == 0x113F_DB5C)
    }

    @Test func matchesBitwiseReferenceAtEveryLengthAndAlignment() {
        var generator = SplitMix64(seed: 7)
        let data = (0..<300).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        var mismatches: [(start: Int, length: Int)] = []
        for start in 0..<9 {
            for length in stride(from: 0, through: 280, by: 3) {
                let slice = Array(data[start..<(start + length)])
                if CRC32C.checksum(data[start..<(start + length)]) != referenceCRC32C(slice) {
                    mismatches.append((start, length))
                }
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches)")
    }

    @Test func updateChainsLikeOneChecksum() {
        var generator = SplitMix64(seed: 11)
        let data = (0..<1000).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        let whole = CRC32C.checksum(data)
        for split in [0, 1, 7, 8, 9, 500, 999, 1000] {
            #expect(CRC32C.update(CRC32C.checksum(data[..<split]), data[split...]) == whole)
        }
    }

    @Test func runningValueMatchesOneShot() {
        var incremental = CRC32C()
        incremental.update(Array("1234".utf8))
        incremental.update("56789")
        #expect(incremental.value == 0xE306_9283)
        #expect(incremental.value == CRC32C.checksum(Array("123456789".utf8)))
    }
}

/// A small seeded generator so test data is reproducible.
private struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
