import Backend
import Foundation
import Locks

/// One member of the cluster as etcd records it: in the backend's `members`
/// bucket (key: the id in hex, value: this JSON), and in the context of the
/// raft conf change that added or updated it.
public struct MemberRecord: Equatable, Sendable {
    public var id: UInt64
    public var peerURLs: [String]
    /// Empty until the member has started and published its attributes.
    public var name: String
    public var clientURLs: [String]
    public var isLearner: Bool

    public init(id: UInt64, peerURLs: [String], name: String = "", clientURLs: [String] = [], isLearner: Bool = false) {
        self.id = id
        self.peerURLs = peerURLs
        self.name = name
        self.clientURLs = clientURLs
        self.isLearner = isLearner
    }

    /// etcd's JSON form (Go `encoding/json` of its Member: empty name and
    /// client URLs and a false learner flag are left out).
    public func json() -> String {
        func list(_ items: [String]) -> String { "[" + items.map(EtcdLogHandler.quoted).joined(separator: ",") + "]" }
        var text = #"{"id":\#(id),"peerURLs":\#(list(peerURLs))"#
        if isLearner { text += #","isLearner":true"# }
        if !name.isEmpty { text += #","name":\#(EtcdLogHandler.quoted(name))"# }
        if !clientURLs.isEmpty { text += #","clientURLs":\#(list(clientURLs))"# }
        return text + "}"
    }

    struct Wire: Codable {
        var id: UInt64
        var peerURLs: [String]?
        var name: String?
        var clientURLs: [String]?
        var isLearner: Bool?
    }

    /// Parses etcd's JSON form; nil when it is not one.
    public init?(json: some DataProtocol) {
        guard let wire = try? JSONDecoder().decode(Wire.self, from: Data(json)) else { return nil }
        self.init(wire)
    }

    init(_ wire: Wire) {
        self.init(id: wire.id, peerURLs: wire.peerURLs ?? [], name: wire.name ?? "",
                  clientURLs: wire.clientURLs ?? [], isLearner: wire.isLearner ?? false)
    }
}

/// The members of the cluster, as applied from the raft log: kept in memory
/// for MemberList, the peer transport and request checks, and written to
/// the backend (`members`, `members_removed`) in the apply step. Removed ids
/// are remembered so a removed member can never come back.
final class MembershipTable: Sendable {
    private struct State {
        var members: [UInt64: MemberRecord] = [:]
        var removed: Set<UInt64> = []
    }
    private let state = Mutex(State())
    /// The cluster version and downgrade job (etcd keeps them with the
    /// membership, in the `cluster` bucket).
    let versions = ClusterVersionStore()

    /// Loads both buckets and the cluster version (after start or after
    /// installing a snapshot).
    func load(from backend: Backend) throws {
        try versions.load(from: backend)
        var loaded = State()
        try backend.read { tx in
            try tx.forEach(.members) { _, value in
                if let record = MemberRecord(json: value) { loaded.members[record.id] = record }
                return true
            }
            try tx.forEach(.membersRemoved) { key, _ in
                if let id = UInt64(String(decoding: key, as: UTF8.self), radix: 16) { loaded.removed.insert(id) }
                return true
            }
        }
        state.withLock { $0 = loaded }
    }

    /// Members sorted by id, as etcd lists them.
    var members: [MemberRecord] {
        state.withLock { $0.members.values.sorted { $0.id < $1.id } }
    }

    func member(_ id: UInt64) -> MemberRecord? { state.withLock { $0.members[id] } }
    func isRemoved(_ id: UInt64) -> Bool { state.withLock { $0.removed.contains(id) } }
    /// Whether `id` is a learner, without copying its record (checked on
    /// every client call).
    func isLearner(_ id: UInt64) -> Bool { state.withLock { $0.members[id]?.isLearner == true } }

    /// Adds or replaces a member and writes it (backend writer thread).
    func save(_ record: MemberRecord, to backend: Backend) throws(BackendError) {
        try backend.put(.members, key: Self.key(record.id), value: Array(record.json().utf8))
        state.withLock { $0.members[record.id] = record }
    }

    /// Removes a member for good (backend writer thread).
    func remove(_ id: UInt64, from backend: Backend) throws(BackendError) {
        try backend.delete(.members, key: Self.key(id))
        try backend.put(.membersRemoved, key: Self.key(id), value: Array("removed".utf8))
        state.withLock { state in
            state.members[id] = nil
            state.removed.insert(id)
        }
    }

    static func key(_ id: UInt64) -> [UInt8] { Array(String(id, radix: 16).utf8) }
}
