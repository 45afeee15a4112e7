@testable import EtcdServer
import Testing

/// The auto-compactor's rules, one test each, on a clock the test moves
/// (etcd's `periodic_test.go` and `revision_test.go` check the same).
@Suite struct AutoCompactorTests {
    let start = ContinuousClock.now

    /// Drives a compactor: `at(seconds:revision:leading:)` is one tick;
    /// a compaction it starts is finished at once unless `outcome` says
    /// otherwise.
    struct Driver {
        var compactor: AutoCompactor
        let start: ContinuousClock.Instant
        var compacted: [Int64] = []

        @discardableResult
        mutating func at(_ seconds: Double, revision: Int64, leading: Bool = true,
                         outcome: AutoCompactor.Outcome? = .compacted) -> Int64? {
            let now = start + .milliseconds(Int64(seconds * 1000))
            guard let target = compactor.check(now: now, revision: revision, leading: leading) else { return nil }
            compacted.append(target)
            if let outcome { compactor.finished(outcome, now: now, revision: revision) }
            return target
        }
    }

    func periodic(_ retention: Duration, revision: Int64 = 1) -> Driver {
        Driver(compactor: AutoCompactor(policy: .periodic(retention: retention), revisionCheckInterval: .seconds(300),
                                        now: start, revision: revision), start: start)
    }

    func revision(_ keep: Int64, every interval: Duration = .seconds(300)) -> Driver {
        Driver(compactor: AutoCompactor(policy: .revision(revisions: keep), revisionCheckInterval: interval, now: start, revision: 1),
               start: start)
    }

    @Test func periodicWindowsAreATenthOfTheRetentionUpToAnHour() {
        for (retention, window, windows): (Duration, Duration, Int) in [
            (.seconds(10), .seconds(1), 11), (.seconds(3600), .seconds(360), 11),
            (.seconds(2 * 3600), .seconds(360), 21), (.seconds(24 * 3600), .seconds(360), 241),
        ] {
            let compactor = periodic(retention).compactor
            #expect(compactor.checkInterval == window)
            #expect(compactor.windowLimit == windows)
            #expect(compactor.compactInterval == min(retention, .seconds(3600)))
        }
    }

    /// Retention 10 s: nothing for the first 10 s, then to the revision of
    /// 10 s ago; from then on every 10 s to the oldest remembered window.
    @Test func periodicCompactsToTheOldestWindow() {
        var driver = periodic(.seconds(10), revision: 1)
        // One write per second: the revision at second s is 1 + 10 s.
        for second in 1...9 { #expect(driver.at(Double(second), revision: 1 + 10 * Int64(second)) == nil) }
        #expect(driver.at(10, revision: 101) == 1)
        for second in 11...19 { #expect(driver.at(Double(second), revision: 1 + 10 * Int64(second)) == nil) }
        // Remembered: the revisions of 9 s ... 19 s (the one at 10 s when the compaction finished).
        #expect(driver.at(20, revision: 201) == 91)
        for second in 21...29 { #expect(driver.at(Double(second), revision: 1 + 10 * Int64(second)) == nil) }
        #expect(driver.at(30, revision: 301) == 191)
        #expect(driver.compacted == [1, 91, 191])
    }

    /// Retention 2 h: the first compaction after 2 h, then hourly, each to
    /// the revision of about 2 h before.
    @Test func periodicLongerThanAnHourCompactsHourly() {
        var driver = periodic(.seconds(2 * 3600), revision: 0)
        var compactedAt: [Int] = []
        // A check every 6 minutes; the revision is the minute.
        for minute in stride(from: 6, through: 300, by: 6) {
            if let target = driver.at(Double(minute * 60), revision: Int64(minute)) {
                compactedAt.append(minute)
                #expect(Int64(minute) - target >= 120 && Int64(minute) - target <= 126, "at \(minute) min to \(target)")
            }
        }
        #expect(compactedAt == [120, 180, 240, 300])
    }

    /// A follower skips its checks but keeps remembering revisions: when it
    /// is elected it compacts at its next check, to the revision of about
    /// one retention before.
    @Test func periodicPausesWhileNotLeading() {
        var driver = periodic(.seconds(10))
        for second in 1...25 {
            #expect(driver.at(Double(second), revision: Int64(100 + second), leading: false) == nil)
        }
        #expect(driver.at(26, revision: 126) == 115)
        #expect(driver.compactor.windowRevisions.count <= driver.compactor.windowLimit)
    }

    /// A failure is retried one window later; "already compacted" counts as
    /// done; nothing is checked while a compaction is in flight.
    @Test func periodicRetriesFailuresAfterAWindow() {
        var driver = periodic(.seconds(10))
        for second in 1...9 { driver.at(Double(second), revision: Int64(second + 1)) }
        #expect(driver.at(10, revision: 11, outcome: .failed("etcdserver: request timed out")) == 1)
        #expect(driver.at(11, revision: 12, outcome: nil) == 1)
        // In flight: later ticks do nothing until it finishes.
        #expect(driver.at(12, revision: 13) == nil)
        #expect(driver.compactor.inFlight?.revision == 1)
        driver.compactor.finished(.alreadyCompacted, now: start + .seconds(12), revision: 13)
        #expect(driver.compactor.inFlight == nil)
        // Succeeded at 12 s: the next one 10 s later.
        for second in 13...21 { #expect(driver.at(Double(second), revision: Int64(second + 1)) == nil) }
        #expect(driver.at(22, revision: 23) != nil)
    }

    /// Revision mode: every check interval to current − N, never to a
    /// revision below 1 and never twice to the same one.
    @Test func revisionKeepsTheLastRevisions() {
        var driver = revision(100)
        #expect(driver.at(299, revision: 1000) == nil)
        #expect(driver.at(300, revision: 1000) == 900)
        #expect(driver.at(400, revision: 2000) == nil)
        // Unchanged since the last compaction: nothing to do.
        #expect(driver.at(600, revision: 1000) == nil)
        #expect(driver.at(900, revision: 1050) == 950)
        var young = revision(100)
        #expect(young.at(300, revision: 100) == nil)
        #expect(young.at(600, revision: 101) == 1)
    }

    @Test func revisionPausesWhileNotLeadingAndRetriesFailures() {
        var driver = revision(10, every: .seconds(1))
        #expect(driver.at(1, revision: 50, leading: false) == nil)
        #expect(driver.at(2, revision: 60, outcome: .failed("etcdserver: no leader")) == 50)
        // Failed: the same revision is tried again at the next check.
        #expect(driver.at(3, revision: 60) == 50)
        #expect(driver.at(4, revision: 60) == nil)
        #expect(driver.at(5, revision: 61, outcome: .alreadyCompacted) == 51)
        #expect(driver.at(6, revision: 61) == nil)
        #expect(driver.compacted == [50, 50, 51])
    }
}
