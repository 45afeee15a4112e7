/// What `--auto-compaction-mode` and `--auto-compaction-retention` ask for.
public enum AutoCompactionPolicy: Equatable, Sendable {
    /// Keep `retention` of history: etcd's periodic compactor.
    case periodic(retention: Duration)
    /// Keep the last `revisions` revisions: etcd's revision compactor.
    case revision(revisions: Int64)

    /// The longest periodic retention we take, ~14 months: the compactor
    /// remembers a revision per window (100,001 of them at this length), so
    /// this bounds its memory. etcd has no bound.
    public static let maxPeriodicRetention = Duration.seconds(10_000 * 3600)

    /// The retention parsed as etcd parses it (`parseCompactionRetention`):
    /// a non-negative integer is hours in periodic mode and a revision count
    /// in revision mode; anything else must be a Go duration (`30m`, `1.5h`,
    /// `10s`). Zero, of either kind, is nil: auto-compaction off.
    ///
    /// Deliberate departures, all refusals of what etcd takes but cannot
    /// mean: a duration in revision mode (etcd 3.4 counts its nanoseconds as
    /// revisions, so `1h` keeps 3.6e12 revisions), a negative duration
    /// (etcd then compacts in a loop), and a periodic retention over
    /// `maxPeriodicRetention`.
    public static func parse(mode: String, retention text: String) throws(SettingsError) -> AutoCompactionPolicy? {
        let key = ConfigKey.autoCompactionRetention.rawValue
        let trimmed = text.trimmingWhitespace()
        switch mode {
        case "revision":
            guard let count = Int64(trimmed), count >= 0 else {
                throw .invalid(key: key, value: text, reason: "expected a number of revisions to keep, such as 1000 (--auto-compaction-mode revision)")
            }
            return count == 0 ? nil : .revision(revisions: count)
        default:
            precondition(mode == "periodic", "unknown auto-compaction mode \(mode)")
            let retention: Duration
            if let hours = Int64(trimmed), hours >= 0 {
                guard hours <= 10_000 else { throw tooLong(text) }
                retention = .seconds(hours * 3600)
            } else {
                guard let milliseconds = GoDuration.exactMilliseconds(trimmed) else {
                    throw .invalid(key: key, value: text, reason: "expected a duration such as 1h, 30m or 10s, or a number of hours")
                }
                guard milliseconds <= Double(maxPeriodicRetention.components.seconds) * 1000 else { throw tooLong(text) }
                retention = .nanoseconds(Int64((milliseconds * 1_000_000).rounded()))
            }
            return retention == .zero ? nil : .periodic(retention: retention)
        }
    }

    private static func tooLong(_ text: String) -> SettingsError {
        .invalid(key: ConfigKey.autoCompactionRetention.rawValue, value: text, reason: "expected a retention of at most 10000h")
    }
}

/// etcd's auto-compactors (`v3compactor`'s periodic and revision modes) as
/// a pure state machine: no clock, thread or I/O of its own. The raft loop
/// calls `check` on every tick with the time, the store's revision and
/// whether this member leads; it proposes the compaction `check` returns
/// through the normal proposal path and reports how it ended with
/// `finished`. At most one compaction is in flight (etcd's compactor waits
/// for its Compact call), and it ends within the request timeout.
///
/// **Periodic**, retention P: a window is R = min(P, 1 h) / 10 long. At the
/// end of every window the compactor remembers the store's revision,
/// keeping the last P / R + 1, so the oldest is the revision of P ago. The
/// first compaction comes P after the start, to that oldest revision; after
/// it, one every min(P, 1 h) since the last success (so a 24 h retention
/// compacts hourly, each time to the revision of 24 h ago); a failure is
/// retried one window later. Worked example, P = 10 s: R = 1 s; revisions
/// are remembered at 0 s, 1 s, ..., 9 s; at 10 s the compactor compacts to
/// the one of 0 s and remembers the revision once it is done; at 20 s it
/// compacts to the one of 9 s (the eleven remembered are those of 9 s to
/// 19 s), at 30 s to the one of 19 s: from then on to the revision of P + R
/// ago, as etcd's does.
///
/// **Revision**, retention N: every `checkInterval` (etcd: 5 minutes),
/// compact to the current revision − N, unless that is not positive or is
/// the revision compacted last time.
///
/// Both: a member that does not lead skips its checks (etcd pauses the
/// compactor of a follower and resumes it on election) — the periodic one
/// still remembers revisions, so a new leader that has been up for P
/// compacts at its next check. A compaction refused because its revision is
/// already compacted counts as done, as in etcd.
struct AutoCompactor {
    typealias Instant = ContinuousClock.Instant

    /// How a proposed compaction ended.
    enum Outcome: Equatable {
        case compacted
        /// Refused with `required revision has been compacted`: done all the same.
        case alreadyCompacted
        case failed(String)
    }

    let policy: AutoCompactionPolicy
    /// Periodic: the window R; revision: the check interval.
    let checkInterval: Duration
    /// When `check` looks next (it does nothing before, or while a
    /// compaction is in flight).
    private(set) var nextCheck: Instant
    /// The compaction proposed and not yet finished, and when it started.
    private(set) var inFlight: (revision: Int64, started: Instant)?

    // Periodic mode.
    /// The store's revision at the end of each of the last windows, oldest
    /// first; at most `windowLimit` (P / R + 1).
    private(set) var windowRevisions: [Int64] = []
    let windowLimit: Int
    /// min(P, 1 h): the time between compactions after the first.
    let compactInterval: Duration
    private var lastSuccess: Instant
    /// Before the first compaction attempt the compactor waits a whole P.
    private var attempted = false

    // Revision mode.
    /// The revision last compacted (0: none yet).
    private var lastCompacted: Int64 = 0

    init(policy: AutoCompactionPolicy, revisionCheckInterval: Duration, now: Instant, revision: Int64) {
        self.policy = policy
        lastSuccess = now
        switch policy {
        case .periodic(let retention):
            precondition(retention > .zero, "a periodic retention must be positive")
            compactInterval = min(retention, .seconds(3600))
            // A window of at least 1 ns (etcd divides by zero below 10 ns).
            checkInterval = max(compactInterval / 10, .nanoseconds(1))
            windowLimit = Int(retention.nanoseconds / checkInterval.nanoseconds) + 1
            precondition(windowLimit <= 1_000_001, "retention \(retention) needs \(windowLimit) windows")
            windowRevisions = [revision]
        case .revision(let revisions):
            precondition(revisions > 0, "a revision retention must be positive")
            precondition(revisionCheckInterval > .zero, "the revision check interval must be positive")
            checkInterval = revisionCheckInterval
            compactInterval = revisionCheckInterval
            windowLimit = 0
        }
        nextCheck = now + checkInterval
    }

    /// The retention as etcd logs it: `compact-period` (a Go duration) or
    /// `revision-compaction-retention` (a count).
    var retentionField: (name: String, value: String) {
        switch policy {
        case .periodic(let retention): return ("compact-period", GoDuration.string(retention))
        case .revision(let revisions): return ("revision-compaction-retention", String(revisions))
        }
    }

    /// Called on every tick: the revision to compact to now, if any (it is
    /// then in flight until `finished`).
    mutating func check(now: Instant, revision: Int64, leading: Bool) -> Int64? {
        guard inFlight == nil, now >= nextCheck else { return nil }
        switch policy {
        case .periodic(let retention):
            // Wait a whole retention before the first compaction, then the
            // compaction interval after each success.
            let wait = attempted ? compactInterval : retention
            guard leading, now - lastSuccess >= wait, let oldest = windowRevisions.first else {
                endWindow(now: now, revision: revision)
                return nil
            }
            attempted = true
            inFlight = (oldest, now)
            return oldest
        case .revision(let revisions):
            nextCheck = now + checkInterval
            let target = revision - revisions
            guard leading, target > 0, target != lastCompacted else { return nil }
            inFlight = (target, now)
            return target
        }
    }

    /// The compaction in flight ended; `revision` is the store's now.
    mutating func finished(_ outcome: Outcome, now: Instant, revision: Int64) {
        guard let target = inFlight?.revision else { preconditionFailure("no auto-compaction in flight") }
        inFlight = nil
        let succeeded = outcome == .compacted || outcome == .alreadyCompacted
        switch policy {
        case .periodic:
            if succeeded { lastSuccess = now }
            endWindow(now: now, revision: revision)
        case .revision:
            if succeeded { lastCompacted = target }
            nextCheck = now + checkInterval
        }
    }

    /// Periodic: remember the revision at the end of a window; the next
    /// window ends R from now.
    private mutating func endWindow(now: Instant, revision: Int64) {
        windowRevisions.append(revision)
        if windowRevisions.count > windowLimit { windowRevisions.removeFirst(windowRevisions.count - windowLimit) }
        precondition(windowRevisions.count <= windowLimit)
        nextCheck = now + checkInterval
    }
}

extension Duration {
    /// Whole nanoseconds.
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

extension GoDuration {
    /// Go's `time.Duration.String()`: `1h0m0s`, `1m30s`, `1.5s`, `500ms`,
    /// `250µs`, `0s` — how etcd's logs print durations.
    static func string(_ duration: Duration) -> String {
        let nanoseconds = duration.nanoseconds
        if nanoseconds < 0 { return "-" + string(.nanoseconds(-nanoseconds)) }
        func decimal(_ value: Int64, unit: Int64) -> String {
            let whole = value / unit, fraction = value % unit
            guard fraction != 0 else { return String(whole) }
            var digits = String(fraction)
            digits = String(repeating: "0", count: String(unit).count - 1 - digits.count) + digits
            while digits.hasSuffix("0") { digits.removeLast() }
            return "\(whole).\(digits)"
        }
        switch nanoseconds {
        case 0: return "0s"
        case ..<1_000: return "\(nanoseconds)ns"
        case ..<1_000_000: return decimal(nanoseconds, unit: 1_000) + "µs"
        case ..<1_000_000_000: return decimal(nanoseconds, unit: 1_000_000) + "ms"
        default:
            let hours = nanoseconds / 3_600_000_000_000
            let minutes = nanoseconds / 60_000_000_000 % 60
            let rest = decimal(nanoseconds % 60_000_000_000, unit: 1_000_000_000) + "s"
            if hours > 0 { return "\(hours)h\(minutes)m\(rest)" }
            return minutes > 0 ? "\(minutes)m\(rest)" : rest
        }
    }
}
