/// The named buckets of the backend, with etcd's names so tools and
/// migrations can find the same data in the same place.
public enum Bucket: String, CaseIterable, Sendable {
    case key
    case meta
    case lease
    case members
    case membersRemoved = "members_removed"
    case cluster
    case auth
    case authUsers
    case authRoles
    case alarm

    /// Position in `allCases`; indexes per-bucket tables.
    @inlinable
    public var ordinal: Int {
        switch self {
        case .key: return 0
        case .meta: return 1
        case .lease: return 2
        case .members: return 3
        case .membersRemoved: return 4
        case .cluster: return 5
        case .auth: return 6
        case .authUsers: return 7
        case .authRoles: return 8
        case .alarm: return 9
        }
    }

    /// The bucket name as bytes (what etcd's hash feeds to the checksum).
    public var nameBytes: [UInt8] { Array(rawValue.utf8) }
}

/// Well-known keys of the `meta` bucket, spelled as etcd spells them.
public enum MetaKey {
    /// Index of the last raft entry applied to this backend (big-endian u64).
    public static let consistentIndex: [UInt8] = Array("consistent_index".utf8)
    /// Term of that entry (big-endian u64).
    public static let term: [UInt8] = Array("term".utf8)
    /// Revision of the compaction that was requested (17-byte revision).
    public static let scheduledCompactRevision: [UInt8] = Array("scheduledCompactRev".utf8)
    /// Revision of the last compaction that finished (17-byte revision).
    public static let finishedCompactRevision: [UInt8] = Array("finishedCompactRev".utf8)
    /// The raft configuration the backend is at, as etcd 3.5+ keeps it (JSON).
    public static let confState: [UInt8] = Array("confState".utf8)
    /// The storage schema version, as etcd 3.6+ keeps it ("3.6.0").
    public static let storageVersion: [UInt8] = Array("storageVersion".utf8)
}

/// Big-endian fixed-width integer encoding used by the meta bucket.
public enum BigEndian {
    public static func bytes(_ value: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * UInt64($0))) }
    }

    /// Decodes the first eight bytes; `nil` when there are fewer.
    public static func uint64(_ bytes: some Collection<UInt8>) -> UInt64? {
        guard bytes.count >= 8 else { return nil }
        var value: UInt64 = 0
        for byte in bytes.prefix(8) {
            value = value << 8 | UInt64(byte)
        }
        return value
    }
}
