import Foundation
import Locks

/// Named points in the write path where tests make a member crash or
/// stall, and deliberately planted bugs the simulation must catch. Armed
/// by the `ETCD_FAILPOINTS` environment variable or, in-process, by a
/// member's `ServerConfig.failpoints` (off, and one branch on an empty
/// table, in production):
///
///     ETCD_FAILPOINTS='afterWALSave=panic@20;beforeWALSave=sleep(50)'
///
/// Actions: `panic` ends the process at once with exit status 137 (as a
/// `kill -9` there would: nothing more is written or flushed); `crash`
/// stops an in-process member dead the same way (its loop writes nothing
/// more and drops the backend's open batch; the process lives on, so a
/// test can restart the member from its files); `sleep(MS)` stalls the
/// raft loop (a slow disk or a slow peer); `on` switches a planted bug on;
/// `off`. A trigger delays the action: `@N` to the N-th time the point is
/// reached (1-based), `@index=N` to when it is reached at raft index N or
/// later; without one, every time.
public enum Failpoint: String, CaseIterable, Sendable {
    case beforeWALSave, afterWALSave
    /// Entries are fsynced in the WAL and in raft's log, not yet applied
    /// (index: the last entry).
    case afterWALAppend
    /// Entries are applied to the backend batch, which is not yet
    /// committed (index: the last applied entry).
    case afterApplyBeforeBackendCommit
    case beforeBackendCommit, afterBackendCommit
    /// Before each step of a scheduled compaction (it is not finished yet).
    case midCompaction
    /// A received snapshot is recorded (snap file, WAL marker) but its
    /// backend not yet swapped in; and right after the swap.
    case beforeApplySnapshot, afterApplySnapshot
    case beforeSendToPeers, afterSendToPeers
    /// A planted bug (`=on`): linearizable reads are served locally,
    /// without a ReadIndex round — the simulation must catch the stale reads.
    case bugLocalLinearizableReads
    /// Silent data corruption (`=on`, `@N`: only the N-th put this member
    /// applies): the value of an applied put is stored with its first byte
    /// flipped, so this member's HashKV diverges from its peers' at the same
    /// revision — what the corruption checks must detect.
    case corruptPut
}

/// Thrown on the raft loop where a `crash` failpoint fires.
public struct FailpointCrash: Error, Sendable {
    public let point: Failpoint
}

public final class Failpoints: Sendable {
    public enum Action: Equatable, Sendable {
        case panic
        case crash
        case sleep(milliseconds: Int)
        case on
    }

    private enum Trigger: Sendable {
        case hit(Int)
        case index(UInt64)
    }

    private struct Rule: Sendable {
        var action: Action
        var at: Trigger?
    }

    private let rules: [Failpoint: Rule]
    private let hits: [Failpoint: Counter]

    /// The process's failpoints, from `ETCD_FAILPOINTS`.
    public static let shared = Failpoints(specification: ProcessInfo.processInfo.environment["ETCD_FAILPOINTS"] ?? "")

    /// Whether any point is armed.
    public var isEmpty: Bool { rules.isEmpty }

    /// Parses `name=action[@N];...`; unknown names or actions are reported
    /// on stderr and ignored (a test that mistypes one sees it fail to fire).
    public init(specification: String) {
        var rules: [Failpoint: Rule] = [:]
        for term in specification.split(separator: ";") where !String(term).trimmingWhitespace().isEmpty {
            let parts = term.split(separator: "=", maxSplits: 1).map { String($0).trimmingWhitespace() }
            guard parts.count == 2, let point = Failpoint(rawValue: parts[0]), let rule = Self.rule(parts[1]) else {
                FileHandle.standardError.write(Data("etcd: ignoring failpoint \"\(term)\"\n".utf8))
                continue
            }
            if let rule { rules[point] = rule } else { rules[point] = nil }
        }
        self.rules = rules
        self.hits = Dictionary(uniqueKeysWithValues: rules.keys.map { ($0, Counter()) })
        if !rules.isEmpty {
            let armed = rules.keys.map(\.rawValue).sorted().joined(separator: ", ")
            FileHandle.standardError.write(Data("etcd: failpoints armed: \(armed)\n".utf8))
        }
    }

    /// nil: not parseable; .some(nil): `off`.
    private static func rule(_ text: String) -> Rule??  {
        var body = Substring(text)
        var at: Trigger?
        if let sign = body.lastIndex(of: "@") {
            let trigger = body[body.index(after: sign)...]
            if trigger.hasPrefix("index=") {
                guard let index = UInt64(trigger.dropFirst(6)) else { return nil }
                at = .index(index)
            } else {
                guard let n = Int(trigger), n > 0 else { return nil }
                at = .hit(n)
            }
            body = body[..<sign]
        }
        if body == "off" { return .some(nil) }
        if body == "panic" { return Rule(action: .panic, at: at) }
        if body == "crash" { return Rule(action: .crash, at: at) }
        if body == "on" { return Rule(action: .on, at: at) }
        if body.hasPrefix("sleep("), body.hasSuffix(")"), let ms = Int(body.dropFirst(6).dropLast()), ms >= 0 {
            return Rule(action: .sleep(milliseconds: ms), at: at)
        }
        return nil
    }

    /// The raft loop passes `point` (at raft index `index`, where the
    /// point has one): act if it is armed. Throws where a `crash` fires.
    @inline(__always)
    public func hit(_ point: Failpoint, index: UInt64? = nil) throws(FailpointCrash) {
        guard !rules.isEmpty, let rule = rules[point] else { return }
        try act(point, rule, index: index)
    }

    /// Whether planted bug `point` is switched on.
    public func isOn(_ point: Failpoint) -> Bool {
        guard !rules.isEmpty, let rule = rules[point] else { return false }
        return rule.action == .on
    }

    /// Whether `point`, armed with `on`, fires at this hit (its trigger
    /// counts the hit: `@N` fires on the N-th only).
    public func fires(_ point: Failpoint, index: UInt64? = nil) -> Bool {
        guard !rules.isEmpty, let rule = rules[point], rule.action == .on else { return false }
        return triggered(point, rule, index: index)
    }

    private func triggered(_ point: Failpoint, _ rule: Rule, index: UInt64?) -> Bool {
        switch rule.at {
        case .hit(let n)?: hits[point]!.increment() == n
        case .index(let n)?: index.map { $0 >= n } ?? false
        case nil: true
        }
    }

    private func act(_ point: Failpoint, _ rule: Rule, index: UInt64?) throws(FailpointCrash) {
        guard triggered(point, rule, index: index) else { return }
        switch rule.action {
        case .panic:
            FileHandle.standardError.write(Data("etcd: failpoint \(point.rawValue) fired: exiting\n".utf8))
            _exit(137)
        case .crash:
            throw FailpointCrash(point: point)
        case .sleep(let milliseconds):
            usleep(UInt32(min(milliseconds, 60_000)) * 1000)
        case .on:
            break
        }
    }

    private final class Counter: Sendable {
        private let value = Mutex<Int>(0)
        func increment() -> Int { value.withLock { $0 += 1; return $0 } }
    }
}
