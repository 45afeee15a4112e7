@testable import EtcdServer
import EtcdProto
import Foundation
import Locks
import Logging
import Testing

/// Auto-compaction on a real member whose clock the test moves (a
/// manual-loop member: the test steps it, so no waiting on real time):
/// history older than the retention is compacted, newer history is not,
/// and the member logs etcd's lines.
@Suite struct MemberAutoCompactionTests {
    /// A value shared with the member's closures.
    final class Shared<Value: Sendable>: Sendable {
        let value: Mutex<Value>
        init(_ value: Value) { self.value = Mutex(value) }
        var current: Value { value.withLock { $0 } }
        func set(_ newValue: Value) { value.withLock { $0 = newValue } }
    }

    /// A member in manual-loop mode on a clock the test sets, with its log lines kept.
    final class Driven: Sendable {
        let member: Member
        let lines: Shared<[String]>
        private let offset: Shared<Duration>

        init(_ config: ServerConfig) throws {
            let base = ContinuousClock.now
            var environment = MemberEnvironment()
            environment.manualLoop = true
            let (offset, lines) = (Shared<Duration>(.zero), Shared<[String]>([]))
            (self.offset, self.lines) = (offset, lines)
            environment.now = { base + offset.current }
            environment.logger = Logger(label: "etcd") { _ in
                EtcdLogHandler(level: .info) { line in lines.value.withLock { $0.append(line) } }
            }
            member = try Member(config: config, environment: environment)
            settle()
        }

        /// Steps the member until it has nothing more to do now.
        func settle() {
            var rounds = 0
            repeat {
                member.step()
                rounds += 1
            } while member.hasPendingInput && rounds < 1000
        }

        /// Moves the clock to `seconds` after the start and lets the member tick.
        func at(seconds: Int) {
            offset.set(.seconds(seconds))
            settle()
        }

        /// Puts `key` and returns the revision it was written at.
        func put(_ key: String) throws -> Int64 {
            let result = Shared<Result<ApplyResult, any Error>?>(nil)
            var request = Etcdserverpb_InternalRaftRequest()
            request.put = MemberTests.put(key, "v")
            member.submit(request) { result.set($0) }
            settle()
            guard case .success(.put(let response))? = result.current else {
                throw EtcdError(.internal, "put \(key): \(String(describing: result.current))")
            }
            return response.header.revision
        }

        /// A serializable range of `key` at `revision`: its error, if any.
        func rangeError(_ key: String, at revision: Int64) -> EtcdError? {
            var request = MemberTests.get(key)
            request.revision = revision
            request.serializable = true
            do { _ = try member.rangeNow(request); return nil } catch { return error as? EtcdError }
        }

        var compactRevision: Int64 { (try? member.hashKV(revision: 0).compactRevision) ?? -1 }

        func logged(_ message: String) -> [String] {
            lines.current.filter { $0.contains(#""msg":"\#(message)""#) }
        }
    }

    static func config(_ dir: String, _ settings: [ConfigKey: String]) throws -> ServerConfig {
        var all = settings
        all[.name] = "m1"
        all[.dataDir] = dir
        return try ServerConfig(settings: all)
    }

    /// --auto-compaction-retention=10s: windows of 1 s; the first
    /// compaction 10 s after the start (to the revision then), the next at
    /// 20 s to the revision of 9 s, as etcd's periodic compactor does.
    @Test func periodicCompactsHistoryOlderThanTheRetention() throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try Self.config(dir, [.autoCompactionRetention: "10s"])
        #expect(config.autoCompaction == .periodic(retention: .seconds(10)))
        let driven = try Driven(config)
        defer { driven.member.stop() }
        #expect(driven.member.isLeader)

        // One put per second: the one at second s gets revision s + 2, so
        // the revision when the window of second s ends is s + 1.
        for second in 0...19 {
            driven.at(seconds: second)
            #expect(try driven.put("k") == Int64(second + 2))
        }
        #expect(driven.member.autoCompactions == 1)
        #expect(driven.compactRevision == 1)
        #expect(driven.rangeError("k", at: 2) == nil)

        driven.at(seconds: 20)
        #expect(driven.member.autoCompactions == 2)
        #expect(driven.compactRevision == 10)
        // Older than the retention: gone, with etcd's error.
        for revision in 2...9 { #expect(driven.rangeError("k", at: Int64(revision)) == EtcdError.compacted, "revision \(revision)") }
        // Newer: still there.
        for revision in 10...21 { #expect(driven.rangeError("k", at: Int64(revision)) == nil, "revision \(revision)") }

        let started = driven.logged("starting auto periodic compaction")
        #expect(started.count == 2)
        #expect(started.last?.contains(#""compact-period":"10s""#) == true)
        #expect(started.last?.contains(#""revision":"10""#) == true)
        let completed = driven.logged("completed auto periodic compaction")
        #expect(completed.count == 2)
        #expect(completed.last?.contains(#""took":"#) == true)
        #expect(driven.logged("failed auto periodic compaction").isEmpty)
    }

    /// --auto-compaction-mode=revision --auto-compaction-retention=5, checked
    /// every second (etcd: every 5 minutes): each check keeps the last 5
    /// revisions, and a check with nothing new to compact does nothing.
    @Test func revisionKeepsTheLastRevisions() throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = try Self.config(dir, [.autoCompactionMode: "revision", .autoCompactionRetention: "5"])
        #expect(config.autoCompaction == .revision(revisions: 5))
        config.autoCompactionRevisionCheckIntervalMilliseconds = 1000
        let driven = try Driven(config)
        defer { driven.member.stop() }

        for i in 0..<20 { #expect(try driven.put("k") == Int64(i + 2)) }
        #expect(driven.rangeError("k", at: 2) == nil)
        driven.at(seconds: 1)
        #expect(driven.member.autoCompactions == 1)
        #expect(driven.compactRevision == 16)
        for revision in 2...15 { #expect(driven.rangeError("k", at: Int64(revision)) == EtcdError.compacted, "revision \(revision)") }
        for revision in 16...21 { #expect(driven.rangeError("k", at: Int64(revision)) == nil, "revision \(revision)") }

        // Nothing written since: nothing to compact.
        driven.at(seconds: 2)
        #expect(driven.member.autoCompactions == 1)
        for _ in 0..<3 { _ = try driven.put("k") }
        driven.at(seconds: 3)
        #expect(driven.member.autoCompactions == 2)
        #expect(driven.compactRevision == 19)

        let started = driven.logged("starting auto revision compaction")
        #expect(started.count == 2)
        #expect(started.first?.contains(#""revision-compaction-retention":"5""#) == true)
        #expect(started.first?.contains(#""revision":"16""#) == true)
        #expect(driven.logged("completed auto revision compaction").count == 2)
    }

    /// A compaction refused as already compacted (a client compacted
    /// further meanwhile) is logged as completed and the compactor goes on.
    @Test func alreadyCompactedCountsAsDone() throws {
        let dir = MemberTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = try Self.config(dir, [.autoCompactionMode: "revision", .autoCompactionRetention: "5"])
        config.autoCompactionRevisionCheckIntervalMilliseconds = 1000
        let driven = try Driven(config)
        defer { driven.member.stop() }
        for _ in 0..<20 { _ = try driven.put("k") }
        // A client compacts past what the compactor will ask for (16).
        var compaction = Etcdserverpb_InternalRaftRequest()
        compaction.compaction.revision = 18
        driven.member.submit(compaction) { _ in }
        driven.settle()
        #expect(driven.compactRevision == 18)
        driven.at(seconds: 1)
        #expect(driven.member.autoCompactions == 1)
        #expect(driven.compactRevision == 18)
        #expect(driven.logged("completed auto revision compaction").count == 1)
        #expect(driven.logged("failed auto revision compaction").isEmpty)
    }
}
