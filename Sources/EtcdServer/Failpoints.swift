import Foundation
import Synchronization

/// Named points in the write path where tests make a member crash or
/// stall, switched on by the `ETCD_FAILPOINTS` environment variable (off,
/// and one branch on an empty table, in production):
///
///     ETCD_FAILPOINTS='afterWALSave=panic@20;beforeWALSave=sleep(50)'
///
/// Actions: `panic` ends the process at once with exit status 137 (as a
/// `kill -9` there would: nothing more is written or flushed), `sleep(MS)`
/// stalls the raft loop (a slow disk or a slow peer), `off`. `@N` delays
/// the action to the N-th time the point is reached (1-based); without it,
/// every time.
public enum Failpoint: String, CaseIterable, Sendable {
    case beforeWALSave, afterWALSave
    case beforeBackendCommit, afterBackendCommit
    /// Before each step of a scheduled compaction (it is not finished yet).
    case midCompaction
    /// A received snapshot is recorded (snap file, WAL marker) but its
    /// backend not yet swapped in; and right after the swap.
    case beforeApplySnapshot, afterApplySnapshot
    case beforeSendToPeers, afterSendToPeers
}

public final class Failpoints: Sendable {
    public enum Action: Equatable, Sendable {
        case panic
        case sleep(milliseconds: Int)
    }

    private struct Rule: Sendable {
        var action: Action
        var at: Int?
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
        var at: Int?
        if let sign = body.lastIndex(of: "@") {
            guard let n = Int(body[body.index(after: sign)...]), n > 0 else { return nil }
            at = n
            body = body[..<sign]
        }
        if body == "off" { return .some(nil) }
        if body == "panic" { return Rule(action: .panic, at: at) }
        if body.hasPrefix("sleep("), body.hasSuffix(")"), let ms = Int(body.dropFirst(6).dropLast()), ms >= 0 {
            return Rule(action: .sleep(milliseconds: ms), at: at)
        }
        return nil
    }

    /// The raft loop passes `point`: act if it is armed.
    @inline(__always)
    public func hit(_ point: Failpoint) {
        guard !rules.isEmpty, let rule = rules[point] else { return }
        let count = hits[point]!.increment()
        if let at = rule.at, count != at { return }
        switch rule.action {
        case .panic:
            FileHandle.standardError.write(Data("etcd: failpoint \(point.rawValue) fired: exiting\n".utf8))
            _exit(137)
        case .sleep(let milliseconds):
            usleep(UInt32(min(milliseconds, 60_000)) * 1000)
        }
    }

    private final class Counter: Sendable {
        private let value = Mutex<Int>(0)
        func increment() -> Int { value.withLock { $0 += 1; return $0 } }
    }
}
