import EtcdProto
import Foundation

/// Protobuf encoding of `mvccpb.KeyValue`, written out by hand because it is
/// on every read and write path. The output is the canonical encoding (fields
/// in number order, zero values omitted) that Go's generated code produces,
/// so the stored bytes — and so the hashes over them — match etcd's.
/// Decoding falls back to SwiftProtobuf for anything unusual.
enum KeyValueCodec {
    static func encode(_ kv: Mvccpb_KeyValue) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(kv.key.count + kv.value.count + 48)
        if !kv.key.isEmpty { appendBytes(&out, field: 1, kv.key) }
        if kv.createRevision != 0 { appendVarint(&out, field: 2, kv.createRevision) }
        if kv.modRevision != 0 { appendVarint(&out, field: 3, kv.modRevision) }
        if kv.version != 0 { appendVarint(&out, field: 4, kv.version) }
        if !kv.value.isEmpty { appendBytes(&out, field: 5, kv.value) }
        if kv.lease != 0 { appendVarint(&out, field: 6, kv.lease) }
        return out
    }

    static func decode(_ bytes: UnsafeRawBufferPointer) throws -> Mvccpb_KeyValue {
        var kv = Mvccpb_KeyValue()
        var i = 0
        let n = bytes.count
        func varint() -> UInt64? {
            var result: UInt64 = 0
            var shift: UInt64 = 0
            while i < n, shift < 64 {
                let byte = bytes[i]
                i += 1
                result |= UInt64(byte & 0x7F) << shift
                if byte < 0x80 { return result }
                shift += 7
            }
            return nil
        }
        while i < n {
            guard let tag = varint() else { return try fallback(bytes) }
            switch tag {
            case 0x0A, 0x2A:
                guard let length = varint(), length <= UInt64(n - i) else { return try fallback(bytes) }
                let data = length == 0 ? Data() : Data(bytes: bytes.baseAddress! + i, count: Int(length))
                i += Int(length)
                if tag == 0x0A { kv.key = data } else { kv.value = data }
            case 0x10, 0x18, 0x20, 0x30:
                guard let raw = varint() else { return try fallback(bytes) }
                let value = Int64(bitPattern: raw)
                switch tag {
                case 0x10: kv.createRevision = value
                case 0x18: kv.modRevision = value
                case 0x20: kv.version = value
                default: kv.lease = value
                }
            default:
                return try fallback(bytes)
            }
        }
        return kv
    }

    private static func fallback(_ bytes: UnsafeRawBufferPointer) throws -> Mvccpb_KeyValue {
        try Mvccpb_KeyValue(serializedBytes: Array(bytes))
    }

    private static func appendVarint(_ out: inout [UInt8], _ value: UInt64) {
        var v = value
        while v >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }

    private static func appendVarint(_ out: inout [UInt8], field: UInt64, _ value: Int64) {
        appendVarint(&out, field << 3)
        appendVarint(&out, UInt64(bitPattern: value))
    }

    private static func appendBytes(_ out: inout [UInt8], field: UInt64, _ data: Data) {
        appendVarint(&out, field << 3 | 2)
        appendVarint(&out, UInt64(data.count))
        out.append(contentsOf: data)
    }
}

/// `Data` to `[UInt8]` through one copy (`Array(data)` walks an iterator).
@inline(__always)
func byteArray(_ data: Data) -> [UInt8] {
    data.withUnsafeBytes { [UInt8]($0) }
}
