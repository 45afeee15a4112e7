// How membership changes travel inside log entries. Raft itself needs to
// encode (the automatic leave-joint entry, RawNode.proposeConfChange) and
// decode (the leader checks each proposed change), so the codec is part of
// the Config and the server can swap in its generated protobuf types.
import FoundationEssentials

/// Turns conf changes into entry payloads and back.
public protocol ConfChangeCodec: Sendable {
    func encode(_ change: ConfChange) -> Data
    func encode(_ change: ConfChangeV2) -> Data
    func decodeConfChange(_ data: Data) throws(RaftError) -> ConfChange
    func decodeConfChangeV2(_ data: Data) throws(RaftError) -> ConfChangeV2
}

extension ConfChangeCodec {
    /// Decodes the conf change carried by a conf-change entry.
    public func decode(_ entry: Entry) throws(RaftError) -> AnyConfChange {
        switch entry.type {
        case .confChange: return .v1(try decodeConfChange(entry.data))
        case .confChangeV2: return .v2(try decodeConfChangeV2(entry.data))
        case .normal: throw RaftError.invalidConfChange("entry \(entry.index) is not a conf change")
        }
    }
}

/// The default codec. It writes the protobuf wire format of raftpb.ConfChange
/// (fields 1 ID, 2 Type, 3 NodeID, 4 Context) and raftpb.ConfChangeV2
/// (1 transition, 2 changes{1 type, 2 node_id}, 3 context), so payloads it
/// produces are readable by etcd and by a generated protobuf decoder.
/// Zero-valued fields are omitted (proto3 style); the empty V2 change, which
/// means "leave the joint configuration", encodes to zero bytes.
public struct ProtobufConfChangeCodec: ConfChangeCodec {
    public init() {}

    public func encode(_ change: ConfChange) -> Data {
        var w = ProtoWriter()
        w.varintField(1, change.id)
        w.varintField(2, UInt64(change.type.rawValue))
        w.varintField(3, change.nodeID)
        w.bytesField(4, change.context)
        return Data(w.bytes)
    }

    public func encode(_ change: ConfChangeV2) -> Data {
        var w = ProtoWriter()
        w.varintField(1, UInt64(change.transition.rawValue))
        for single in change.changes {
            var inner = ProtoWriter()
            inner.varintField(1, UInt64(single.type.rawValue))
            inner.varintField(2, single.nodeID)
            w.key(2, wireType: 2)
            w.varint(UInt64(inner.bytes.count))
            w.bytes.append(contentsOf: inner.bytes)
        }
        w.bytesField(3, change.context)
        return Data(w.bytes)
    }

    public func decodeConfChange(_ data: Data) throws(RaftError) -> ConfChange {
        var cc = ConfChange(type: .addNode, nodeID: 0)
        var r = ProtoReader(bytes: [UInt8](data))
        while let (field, wire) = try r.nextKey() {
            switch (field, wire) {
            case (1, 0): cc.id = try r.varint()
            case (2, 0): cc.type = try Self.changeType(r.varint())
            case (3, 0): cc.nodeID = try r.varint()
            case (4, 2): cc.context = Data(try r.lengthDelimited())
            default: try r.skip(wire)
            }
        }
        return cc
    }

    public func decodeConfChangeV2(_ data: Data) throws(RaftError) -> ConfChangeV2 {
        var cc = ConfChangeV2()
        var r = ProtoReader(bytes: [UInt8](data))
        while let (field, wire) = try r.nextKey() {
            switch (field, wire) {
            case (1, 0):
                guard let t = ConfChangeTransition(rawValue: Int32(truncatingIfNeeded: try r.varint())) else {
                    throw RaftError.invalidConfChange("unknown transition")
                }
                cc.transition = t
            case (2, 2):
                var inner = ProtoReader(bytes: try r.lengthDelimited())
                var single = ConfChangeSingle(type: .addNode, nodeID: 0)
                while let (f, w) = try inner.nextKey() {
                    switch (f, w) {
                    case (1, 0): single.type = try Self.changeType(inner.varint())
                    case (2, 0): single.nodeID = try inner.varint()
                    default: try inner.skip(w)
                    }
                }
                cc.changes.append(single)
            case (3, 2): cc.context = Data(try r.lengthDelimited())
            default: try r.skip(wire)
            }
        }
        return cc
    }

    private static func changeType(_ raw: UInt64) throws(RaftError) -> ConfChangeType {
        guard let t = ConfChangeType(rawValue: Int32(truncatingIfNeeded: raw)) else {
            throw RaftError.invalidConfChange("unknown conf change type \(raw)")
        }
        return t
    }
}

/// Minimal protobuf writer: just varints and length-delimited fields.
private struct ProtoWriter {
    var bytes: [UInt8] = []

    mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func key(_ field: UInt64, wireType: UInt64) { varint(field << 3 | wireType) }

    mutating func varintField(_ field: UInt64, _ value: UInt64) {
        guard value != 0 else { return }
        key(field, wireType: 0)
        varint(value)
    }

    mutating func bytesField(_ field: UInt64, _ value: Data) {
        guard !value.isEmpty else { return }
        key(field, wireType: 2)
        varint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }
}

/// Minimal protobuf reader matching ProtoWriter; rejects truncated input.
private struct ProtoReader {
    let bytes: [UInt8]
    var position = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    mutating func varint() throws(RaftError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while position < bytes.count, shift < 64 {
            let b = bytes[position]
            position += 1
            result |= UInt64(b & 0x7f) << shift
            if b < 0x80 { return result }
            shift += 7
        }
        throw RaftError.invalidConfChange("truncated varint")
    }

    mutating func nextKey() throws(RaftError) -> (UInt64, UInt64)? {
        guard position < bytes.count else { return nil }
        let k = try varint()
        return (k >> 3, k & 7)
    }

    mutating func lengthDelimited() throws(RaftError) -> [UInt8] {
        let n = try varint()
        guard n <= UInt64(bytes.count - position) else { throw RaftError.invalidConfChange("truncated field") }
        let out = Array(bytes[position..<position + Int(n)])
        position += Int(n)
        return out
    }

    mutating func skip(_ wireType: UInt64) throws(RaftError) {
        switch wireType {
        case 0: _ = try varint()
        case 1: try advance(8)
        case 2: _ = try lengthDelimited()
        case 5: try advance(4)
        default: throw RaftError.invalidConfChange("unsupported wire type \(wireType)")
        }
    }

    private mutating func advance(_ n: Int) throws(RaftError) {
        guard bytes.count - position >= n else { throw RaftError.invalidConfChange("truncated field") }
        position += n
    }
}
