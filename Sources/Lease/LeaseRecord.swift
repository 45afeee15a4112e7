import Backend
import EtcdProto
import Foundation

/// One lease in memory.
struct LeaseRecord {
    /// Granted TTL in seconds.
    var ttl: Int64
    /// The last checkpointed remaining TTL in seconds; 0 means unset.
    var remainingTTL: Int64 = 0
    /// When the lease expires; nil while the lessor is not the primary
    /// (leases never expire there).
    var expiry: Duration?
    /// Attached keys.
    var keys: Set<Data> = []
    /// Progress of the checkpoint that clears `remainingTTL` after a renewal.
    var clearing: CheckpointClear = .none

    /// The TTL a promotion starts the lease with: the checkpointed
    /// remaining TTL if set, else the granted TTL (etcd's `RemainingTTL()`).
    var effectiveTTL: Int64 { remainingTTL > 0 ? remainingTTL : ttl }

    /// The attached keys, sorted bytewise.
    var sortedKeys: [Data] { keys.sorted { $0.lexicographicallyPrecedes($1) } }
}

/// etcd clears a renewed lease's checkpointed remaining TTL with a
/// checkpoint of 0 through raft, so that every member forgets it.
enum CheckpointClear: Equatable {
    case none
    /// `dueCheckpoints` should hand out a checkpoint of 0.
    case due
    /// Handed out at this instant; not handed out again before the retry
    /// interval unless it applies.
    case proposed(at: Duration)
}

/// The `lease` bucket's format: key = the id as 8 bytes big-endian, value =
/// a marshaled `leasepb.Lease`.
enum LeaseStorage {
    static func key(_ id: Int64) -> [UInt8] {
        BigEndian.bytes(UInt64(bitPattern: id))
    }

    /// The canonical protobuf encoding (fields in number order, zero values
    /// left out), byte for byte what etcd's generated Go code writes.
    static func value(id: Int64, ttl: Int64, remainingTTL: Int64) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(33)
        appendField(&out, number: 1, id)
        appendField(&out, number: 2, ttl)
        appendField(&out, number: 3, remainingTTL)
        return out
    }

    static func decode(_ bytes: UnsafeRawBufferPointer) throws -> Leasepb_Lease {
        try Leasepb_Lease(serializedBytes: Array(bytes))
    }

    private static func appendField(_ out: inout [UInt8], number: UInt8, _ value: Int64) {
        guard value != 0 else { return }
        out.append(number << 3)  // wire type 0: varint
        var v = UInt64(bitPattern: value)
        while v >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }
}
