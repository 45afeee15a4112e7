import Backend
import EtcdProto
import Foundation
import Locks

/// The cluster's alarms, as etcd keeps them: per member and type, applied
/// through raft on every member, persisted in the `alarm` bucket (the key is
/// the marshaled `AlarmMember`, the value empty) and loaded on start.
///
/// Reads from any thread; changes only from the raft loop's apply.
final class AlarmStore: Sendable {
    private let alarms = Mutex<[Etcdserverpb_AlarmType: [UInt64: Etcdserverpb_AlarmMember]]>([:])
    /// Whether any NOSPACE alarm is active: checked on every write applied.
    private let noSpace = Atomic<Bool>(false)
    /// Whether any CORRUPT alarm is active: checked on every write applied.
    private let corrupt = Atomic<Bool>(false)

    /// Loads the `alarm` bucket (at start and after installing a snapshot).
    func load(from backend: Backend) throws {
        var loaded: [Etcdserverpb_AlarmType: [UInt64: Etcdserverpb_AlarmMember]] = [:]
        try backend.read { tx in
            try tx.forEach(.alarm) { key, _ in
                let member = try Etcdserverpb_AlarmMember(serializedBytes: Data(key))
                loaded[member.alarm, default: [:]][member.memberID] = member
                return true
            }
        }
        alarms.withLock { $0 = loaded }
        noSpace.store(!(loaded[.nospace] ?? [:]).isEmpty, ordering: .relaxed)
        corrupt.store(!(loaded[.corrupt] ?? [:]).isEmpty, ordering: .relaxed)
    }

    /// The active alarms of `type` (`.none`: all), by member id.
    func get(_ type: Etcdserverpb_AlarmType) -> [Etcdserverpb_AlarmMember] {
        alarms.withLock { alarms in
            let members = type == .none ? alarms.values.flatMap(\.values) : Array((alarms[type] ?? [:]).values)
            return members.sorted { ($0.memberID, $0.alarm.rawValue) < ($1.memberID, $1.alarm.rawValue) }
        }
    }

    var isNoSpaceActive: Bool { noSpace.load(ordering: .relaxed) }
    var isCorruptActive: Bool { corrupt.load(ordering: .relaxed) }

    func isActive(_ type: Etcdserverpb_AlarmType, member: UInt64) -> Bool {
        alarms.withLock { $0[type]?[member] != nil }
    }

    /// Raises `type` for `member`; nil when it was already raised.
    func activate(_ type: Etcdserverpb_AlarmType, member: UInt64, in backend: Backend) throws -> Etcdserverpb_AlarmMember? {
        var alarm = Etcdserverpb_AlarmMember()
        alarm.memberID = member
        alarm.alarm = type
        if isActive(type, member: member) { return nil }
        try backend.put(.alarm, key: Array(try alarm.serializedData()), value: [])
        alarms.withLock { $0[type, default: [:]][member] = alarm }
        if type == .nospace { noSpace.store(true, ordering: .relaxed) }
        if type == .corrupt { corrupt.store(true, ordering: .relaxed) }
        return alarm
    }

    /// Disarms `type` for `member`; nil when it was not raised.
    func deactivate(_ type: Etcdserverpb_AlarmType, member: UInt64, in backend: Backend) throws -> Etcdserverpb_AlarmMember? {
        guard let alarm = alarms.withLock({ $0[type]?[member] }) else { return nil }
        try backend.delete(.alarm, key: Array(try alarm.serializedData()))
        let left = alarms.withLock { alarms -> (noSpace: Int, corrupt: Int) in
            alarms[type]?[member] = nil
            return (alarms[.nospace]?.count ?? 0, alarms[.corrupt]?.count ?? 0)
        }
        noSpace.store(left.noSpace > 0, ordering: .relaxed)
        corrupt.store(left.corrupt > 0, ordering: .relaxed)
        return alarm
    }
}

extension Etcdserverpb_AlarmType {
    /// The name etcd prints (`NOSPACE`, `CORRUPT`).
    public var etcdName: String {
        switch self {
        case .none: "NONE"
        case .nospace: "NOSPACE"
        case .corrupt: "CORRUPT"
        case .UNRECOGNIZED(let value): "\(value)"
        }
    }
}
