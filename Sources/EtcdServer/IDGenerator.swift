import Foundation
import Locks

/// Unique ids for lease grants (and anything else a member must name
/// cluster-wide before proposing it), built as etcd builds them: the low 16
/// bits of the member id on top, then the low 40 bits of the start time in
/// milliseconds, then an 8-bit counter; the time and counter part simply
/// increments. Two members never collide, and a restarted member starts past
/// the ids it handed out before (time moved on).
final class IDGenerator: Sendable {
    private let prefix: UInt64
    private let suffix: Atomic<UInt64>

    static let counterBits: UInt64 = 8
    static let timeBits: UInt64 = 40
    static let suffixBits = counterBits + timeBits

    init(memberID: UInt64, nowMilliseconds: UInt64 = UInt64(Date().timeIntervalSince1970 * 1000)) {
        prefix = (memberID & 0xFFFF) << Self.suffixBits
        suffix = Atomic((nowMilliseconds & ((1 << Self.timeBits) - 1)) << Self.counterBits)
    }

    func next() -> UInt64 {
        let value = suffix.add(1, ordering: .relaxed).newValue
        return prefix | (value & ((1 << Self.suffixBits) - 1))
    }
}
