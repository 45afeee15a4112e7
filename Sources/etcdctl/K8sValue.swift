import Foundation

// `--print-k8s`: Kubernetes stores its objects in etcd as protobuf inside an
// envelope — the 4 magic bytes "k8s\0" followed by a `runtime.Unknown`
// message (1: typeMeta {1: apiVersion, 2: kind}, 2: raw, 3: contentEncoding,
// 4: contentType). `raw` is the object itself; its field 1 is the
// ObjectMeta (1: name, 3: namespace, ...). Without the .proto files we walk
// the wire format generically, the way `protoc --decode_raw` does.

/// One field of a protobuf message as found on the wire.
struct WireField: Equatable {
    enum Value: Equatable {
        case varint(UInt64)
        case fixed64(UInt64)
        case fixed32(UInt32)
        case bytes(Data)
    }
    var number: UInt64
    var value: Value
}

/// A wire-format walker: splits a message into its fields, nil when the
/// bytes are not a well-formed message (bad tag, truncated value, groups).
enum ProtoWire {
    /// Fields deeper than this are printed as bytes, never parsed further.
    static let maxDepth = 32

    static func fields(_ data: Data) -> [WireField]? {
        let bytes = [UInt8](data)
        var fields: [WireField] = []
        var i = 0
        while i < bytes.count {
            guard let tag = varint(bytes, &i) else { return nil }
            let number = tag >> 3
            guard number > 0, number <= 536_870_911 else { return nil }
            switch tag & 7 {
            case 0:
                guard let v = varint(bytes, &i) else { return nil }
                fields.append(WireField(number: number, value: .varint(v)))
            case 1:
                guard bytes.count - i >= 8 else { return nil }
                var v: UInt64 = 0
                for k in 0..<8 { v |= UInt64(bytes[i + k]) << (8 * UInt64(k)) }
                i += 8
                fields.append(WireField(number: number, value: .fixed64(v)))
            case 2:
                guard let length = varint(bytes, &i), length <= UInt64(bytes.count - i) else { return nil }
                let end = i + Int(length)
                fields.append(WireField(number: number, value: .bytes(Data(bytes[i..<end]))))
                i = end
            case 5:
                guard bytes.count - i >= 4 else { return nil }
                var v: UInt32 = 0
                for k in 0..<4 { v |= UInt32(bytes[i + k]) << (8 * UInt32(k)) }
                i += 4
                fields.append(WireField(number: number, value: .fixed32(v)))
            default:
                return nil // groups (3, 4) are not used by Kubernetes; 6 and 7 do not exist
            }
        }
        return fields
    }

    /// A base-128 varint of at most 10 bytes.
    static func varint(_ bytes: [UInt8], _ i: inout Int) -> UInt64? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while i < bytes.count, shift < 64 {
            let b = bytes[i]
            i += 1
            value |= UInt64(b & 0x7f) << shift
            if b & 0x80 == 0 { return value }
            shift += 7
        }
        return nil
    }

    /// The first length-delimited field `number` as UTF-8 text.
    static func string(_ fields: [WireField], _ number: UInt64) -> String? {
        for f in fields where f.number == number {
            if case let .bytes(d) = f.value { return String(decoding: d, as: UTF8.self) }
        }
        return nil
    }

    static func message(_ fields: [WireField], _ number: UInt64) -> [WireField]? {
        for f in fields where f.number == number {
            if case let .bytes(d) = f.value { return Self.fields(d) }
        }
        return nil
    }

    /// The fields as indented text: `n: value` for scalars, `n {` … `}` for
    /// nested messages. A length-delimited field is shown as a string when it
    /// is printable UTF-8, else as a message when it parses as one, else as
    /// escaped bytes.
    static func dump(_ fields: [WireField], indent: Int = 0, depth: Int = 0) -> [String] {
        let pad = String(repeating: "  ", count: indent)
        var lines: [String] = []
        for f in fields {
            switch f.value {
            case let .varint(v):
                let signed = Int64(bitPattern: v)
                lines.append("\(pad)\(f.number): \(v)" + (signed < 0 ? " (\(signed))" : ""))
            case let .fixed64(v): lines.append("\(pad)\(f.number): 0x\(hex(v, digits: 16))")
            case let .fixed32(v): lines.append("\(pad)\(f.number): 0x\(hex(UInt64(v), digits: 8))")
            case let .bytes(d):
                let nested = depth < maxDepth ? Self.fields(d) : nil
                // Printable text is a string, unless it holds a newline and parses as a message (0x0a is field 1's tag).
                if let text = printable(d), !(text.contains("\n") && !(nested ?? []).isEmpty) {
                    lines.append("\(pad)\(f.number): \(goQuote(text))")
                } else if let nested, !nested.isEmpty {
                    lines.append("\(pad)\(f.number) {")
                    lines += dump(nested, indent: indent + 1, depth: depth + 1)
                    lines.append("\(pad)}")
                } else {
                    lines.append("\(pad)\(f.number): \(goQuoteBytes(d))")
                }
            }
        }
        return lines
    }

    static func hex(_ v: UInt64, digits: Int) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: max(0, digits - s.count)) + s
    }

    /// The text when `d` is valid UTF-8 without control characters (tab and newline allowed).
    static func printable(_ d: Data) -> String? {
        guard let s = String(data: d, encoding: .utf8) else { return nil }
        for scalar in s.unicodeScalars {
            if scalar == "\n" || scalar == "\t" { continue }
            if scalar.value < 0x20 || scalar.value == 0x7f || (0x80...0x9f).contains(scalar.value) { return nil }
        }
        return s
    }
}

/// A value in Kubernetes' protobuf storage envelope.
struct K8sObject {
    static let magic = Data([0x6b, 0x38, 0x73, 0x00]) // "k8s\0"

    var apiVersion = ""
    var kind = ""
    var raw = Data()
    var contentEncoding = ""
    var contentType = ""

    /// The envelope in `value`, nil when it has no magic or its `runtime.Unknown` does not parse.
    init?(_ value: Data) {
        guard value.starts(with: Self.magic), let unknown = ProtoWire.fields(value.dropFirst(Self.magic.count)) else { return nil }
        if let typeMeta = ProtoWire.message(unknown, 1) {
            apiVersion = ProtoWire.string(typeMeta, 1) ?? ""
            kind = ProtoWire.string(typeMeta, 2) ?? ""
        }
        for f in unknown where f.number == 2 { if case let .bytes(d) = f.value { raw = d } }
        contentEncoding = ProtoWire.string(unknown, 3) ?? ""
        contentType = ProtoWire.string(unknown, 4) ?? ""
    }

    /// The object as readable lines: its type, namespace/name and every field of `raw`.
    var lines: [String] {
        var out = ["apiVersion: \(apiVersion)", "kind: \(kind)"]
        let object = ProtoWire.fields(raw)
        if let object, let meta = ProtoWire.message(object, 1) {
            let name = ProtoWire.string(meta, 1) ?? ""
            let namespace = ProtoWire.string(meta, 3) ?? ""
            out.append("name: " + (namespace.isEmpty ? name : "\(namespace)/\(name)"))
        }
        if !contentEncoding.isEmpty { out.append("contentEncoding: \(contentEncoding)") }
        if !contentType.isEmpty { out.append("contentType: \(contentType)") }
        if let object {
            out.append("raw:")
            out += ProtoWire.dump(object, indent: 1)
        } else {
            out.append("raw: \(goQuoteBytes(raw))")
        }
        return out
    }
}
