import Bbolt
import Foundation
import Testing

/// A fresh temporary directory, removed by `cleanup`.
func temporaryDirectory() throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bbolt-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// Every bucket of a file as name -> ordered pairs.
func readAll(_ path: String) throws -> [(String, [([UInt8], [UInt8])])] {
    let reader = try BboltReader(path: path)
    return try reader.buckets().map { bucket in
        var pairs: [([UInt8], [UInt8])] = []
        try reader.forEach(in: bucket) { key, value in pairs.append((Array(key), Array(value))) }
        return (bucket.nameString, pairs)
    }
}

/// Writes `buckets` (names and keys already sorted) to a new file.
@discardableResult
func write(_ buckets: [(String, [([UInt8], [UInt8])])], to path: String) throws -> BboltWriter.Summary {
    let writer = try BboltWriter(path: path)
    for (name, pairs) in buckets {
        try writer.beginBucket(Array(name.utf8))
        for (key, value) in pairs { try writer.put(key: key, value: value) }
        try writer.endBucket()
    }
    return try writer.finish(sync: false)
}

func revisionKey(_ main: UInt64, _ sub: UInt64 = 0) -> [UInt8] {
    withUnsafeBytes(of: main.bigEndian) { Array($0) } + [UInt8(ascii: "_")] + withUnsafeBytes(of: sub.bigEndian) { Array($0) }
}

struct BboltTests {
    /// A multi-level tree (thousands of leaves, two branch levels), an
    /// oversized value on overflow pages, and an empty bucket come back
    /// exactly, in order.
    @Test func roundTripsBucketsOfEverySize() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var key: [([UInt8], [UInt8])] = (1...60_000).map { (revisionKey(UInt64($0)), Array("value-\($0)".utf8)) }
        key.append((revisionKey(70_000), [UInt8](repeating: 0xAB, count: 50_000)))
        let small: [([UInt8], [UInt8])] = [(Array("consistent_index".utf8), [0, 0, 0, 0, 0, 0, 0, 9])]
        let buckets = [("alarm", []), ("key", key), ("meta", small)]
        let path = dir + "/db"
        let summary = try write(buckets, to: path)
        #expect(summary.keyCount == key.count + 1)
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int
        #expect(size == summary.byteCount)
        let reader = try BboltReader(path: path)
        #expect(reader.meta.pageCount == summary.pageCount)
        let back = try readAll(path)
        #expect(back.map(\.0) == ["alarm", "key", "meta"])
        #expect(back[0].1.isEmpty)
        #expect(back[1].1.count == key.count)
        #expect(zip(back[1].1, key).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 })
        #expect(back[2].1.first?.1 == small[0].1)
    }

    @Test func writerRefusesUnsortedInput() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let writer = try BboltWriter(path: dir + "/db")
        try writer.beginBucket(Array("key".utf8))
        try writer.put(key: [2], value: [])
        #expect(throws: BboltError.usage("keys not ascending")) { try writer.put(key: [1], value: []) }
        #expect(throws: BboltError.usage("keys not ascending")) { try writer.put(key: [2], value: []) }
        try writer.endBucket()
        #expect(throws: BboltError.usage("bucket names not ascending")) { try writer.beginBucket(Array("alarm".utf8)) }
        #expect(throws: BboltError.self) { try BboltWriter(path: dir + "/db") }
    }

    /// Files that are not bbolt, truncated, or with a broken meta page or a
    /// page loop: an error naming the file and the problem.
    @Test func rejectsBrokenFilesByName() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let good = dir + "/good"
        try write([("key", (1...2000).map { (revisionKey(UInt64($0)), Array("v\($0)".utf8)) })], to: good)
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: good)))

        func reason(_ mutate: (inout [UInt8]) -> Void) throws -> String {
            var copy = bytes
            mutate(&copy)
            let path = dir + "/bad"
            try Data(copy).write(to: URL(fileURLWithPath: path))
            do {
                _ = try readAll(path)
                return "accepted"
            } catch let error as BboltError {
                guard case .invalid(let p, let reason) = error else { return "\(error)" }
                #expect(p == path)
                return reason
            }
        }
        #expect(try reason { $0 = Array("this is not a database".utf8) }.contains("too small"))
        #expect(try reason { $0 = [UInt8](repeating: 0x41, count: 16384) }.contains("no valid meta page"))
        #expect(try reason { $0.removeLast(3 * 4096) }.contains("truncated"))
        // Both meta checksums broken.
        #expect(try reason { $0[16 + 20] ^= 1; $0[4096 + 16 + 20] ^= 1 }.contains("checksum"))
        // Root leaf of the root bucket: make its bucket point at the root
        // page itself (a loop).
        let rootPage = Int(bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 16 + 16, as: UInt64.self)) })
        #expect(try reason { copy in
            let element = rootPage * 4096 + 16
            let pos = Int(copy.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: element + 4, as: UInt32.self)) })
            let ksize = Int(copy.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: element + 8, as: UInt32.self)) })
            let valueAt = element + pos + ksize
            // The key bucket's root is a branch page; point its first child at itself.
            let bucketRoot = Int(copy.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: valueAt, as: UInt64.self)) })
            withUnsafeBytes(of: UInt64(bucketRoot).littleEndian) { copy.replaceSubrange((bucketRoot * 4096 + 16 + 8)..<(bucketRoot * 4096 + 16 + 16), with: $0) }
        }.contains("referenced twice"))
        // Key bytes swapped out of order inside a leaf.
        #expect(try reason { copy in
            let leaf = 3 * 4096
            let first = leaf + 16 + Int(copy.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: leaf + 16 + 4, as: UInt32.self)) })
            copy[first + 7] = 0xFF
        }.contains("out of order"))
        #expect(try reason { _ in } == "accepted")
    }

    /// 10,000 files with random mutations (bit flips, overwritten words,
    /// truncation): the reader returns or throws, never crashes or hangs.
    @Test func fuzzedFilesNeverCrashOrLoop() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let good = dir + "/good"
        try write([
            ("alarm", []),
            ("key", (1...400).map { (revisionKey(UInt64($0)), Array("value-\($0)".utf8)) } + [(revisionKey(999), [UInt8](repeating: 1, count: 9000))]),
            ("meta", [(Array("term".utf8), [0, 0, 0, 0, 0, 0, 0, 2])]),
        ], to: good)
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: good)))
        var rng = SplitMix(seed: 21)
        var outcomes = [String: Int]()
        let path = dir + "/case"
        let started = Date()
        for _ in 0..<10_000 {
            var copy = bytes
            for _ in 0..<(1 + Int(rng.next() % 4)) where !copy.isEmpty {
                let offset = Int(rng.next() % UInt64(copy.count))
                switch rng.next() % 4 {
                case 0: copy[offset] ^= UInt8(1 << (rng.next() % 8))
                case 1: copy[offset] = UInt8(truncatingIfNeeded: rng.next())
                case 2:
                    // A word at an interesting place: page headers and elements.
                    let page = Int(rng.next() % UInt64(max(1, copy.count / 4096))) * 4096
                    let at = page + Int(rng.next() % 64)
                    let value = rng.next()
                    for i in 0..<8 where at + i < copy.count { copy[at + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
                default: copy.removeLast(Int(rng.next() % UInt64(copy.count)))
                }
            }
            try Data(copy).write(to: URL(fileURLWithPath: path))
            do {
                _ = try readAll(path)
                outcomes["read", default: 0] += 1
            } catch is BboltError {
                outcomes["rejected", default: 0] += 1
            }
        }
        #expect(outcomes.values.reduce(0, +) == 10_000)
        #expect(outcomes["rejected", default: 0] > 1000)
        #expect(Date().timeIntervalSince(started) < 300)
    }
}

struct SplitMix {
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
