/// A segment file name, `%016x-%016x.wal`: the segment's sequence number and
/// the raft index of the first entry expected in it. Names sort by sequence.
struct SegmentName: Comparable, Sendable, CustomStringConvertible {
    var sequence: UInt64
    var index: UInt64

    init(sequence: UInt64, index: UInt64) {
        self.sequence = sequence
        self.index = index
    }

    /// Parses a file name; nil for anything that is not a segment (temp
    /// files, `.broken` copies, stray files).
    init?(fileName: String) {
        let utf8 = Array(fileName.utf8)
        guard utf8.count == 37, utf8[16] == UInt8(ascii: "-"),
              fileName.hasSuffix(".wal"),
              let sequence = parseHex(utf8[0..<16]),
              let index = parseHex(utf8[17..<33])
        else { return nil }
        self.init(sequence: sequence, index: index)
    }

    var fileName: String { hex16(sequence) + "-" + hex16(index) + ".wal" }
    var description: String { fileName }

    static func < (lhs: SegmentName, rhs: SegmentName) -> Bool {
        (lhs.sequence, lhs.index) < (rhs.sequence, rhs.index)
    }

    /// The valid segment names among `names`, in sequence order.
    static func segments(in names: [String]) -> [SegmentName] {
        names.compactMap(SegmentName.init(fileName:)).sorted()
    }
}

/// Zero-padded 16-digit lowercase hex, as in `%016x`.
func hex16(_ value: UInt64) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: max(0, 16 - digits.count)) + digits
}

func parseHex(_ digits: ArraySlice<UInt8>) -> UInt64? {
    var value: UInt64 = 0
    for digit in digits {
        let nibble: UInt8
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): nibble = digit - UInt8(ascii: "A") + 10
        default: return nil
        }
        value = value << 4 | UInt64(nibble)
    }
    return value
}

/// Joins a directory and a name without doubling the slash.
func joinPath(_ directory: String, _ name: String) -> String {
    directory.hasSuffix("/") ? directory + name : directory + "/" + name
}

/// The directory containing `path` ("." for a bare name).
func parentDirectory(of path: String) -> String {
    var trimmed = Substring(path)
    while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
    guard let slash = trimmed.lastIndex(of: "/") else { return "." }
    return slash == trimmed.startIndex ? "/" : String(trimmed[..<slash])
}
