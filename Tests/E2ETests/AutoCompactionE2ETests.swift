import Foundation
import Testing

/// `--auto-compaction-retention=2s` (periodic) on ours and on etcd 3.4, as
/// the Go etcdctl sees it: two puts, then nothing; each server compacts on
/// its own to the revision of the second put, after which a read at the
/// first put's revision gets etcd's error and one at the second still
/// works, on both alike. A bad retention refuses to start, naming the flag.
@Suite(.serialized) struct AutoCompactionE2ETests {
    @Test func periodicCompactsAsEtcdDoes() throws {
        let retention = ["--auto-compaction-retention", "2s"]
        let ours = try EtcdProcess(extraArguments: retention)
        defer { ours.terminate() }
        let theirs = try RealEtcdProcess(extraArguments: retention)
        defer { theirs.terminate() }
        for port in [ours.port, theirs.port] {
            #expect(try AlarmE2ETests.etcdctl(port, ["put", "k", "v1"], input: nil).status == 0)
            #expect(try AlarmE2ETests.etcdctl(port, ["put", "k", "v2"], input: nil).status == 0)
        }
        // The windows are 200 ms; the first compaction comes 2 s after the
        // start, the next 2 s later to the revision of ~2.2 s before. Wait
        // (bounded) until the first put's revision is gone on each.
        for port in [ours.port, theirs.port] {
            let deadline = Date().addingTimeInterval(20)
            while try AlarmE2ETests.etcdctl(port, ["get", "k", "--rev=2"], input: nil).status == 0, Date() < deadline {
                Thread.sleep(forTimeInterval: 0.2)
            }
        }
        for arguments in [["get", "k", "--rev=2"], ["get", "k", "--rev=3"], ["get", "k"]] {
            let mine = try AlarmE2ETests.etcdctl(ours.port, arguments, input: nil)
            let real = try AlarmE2ETests.etcdctl(theirs.port, arguments, input: nil)
            #expect(mine.status == real.status, "\(arguments): exit \(mine.status) vs \(real.status)")
            #expect(mine.out == real.out, "\(arguments): \(mine.out) vs \(real.out)")
            #expect(mine.err == real.err, "\(arguments): \(mine.err) vs \(real.err)")
        }
        let compacted = try AlarmE2ETests.etcdctl(ours.port, ["get", "k", "--rev=2"], input: nil)
        #expect(compacted.err == "Error: etcdserver: mvcc: required revision has been compacted")
        #expect(try AlarmE2ETests.etcdctl(ours.port, ["get", "k", "--rev=3", "--print-value-only"], input: nil).out == "v2\n")
    }

    @Test func aBadRetentionRefusesToStart() throws {
        let result = try EtcdProcess.run(EtcdProcess.binary, ["--auto-compaction-mode=revision", "--auto-compaction-retention=1h",
                                                               "--data-dir", "/nonexistent/never-created"],
                                         environment: [:], input: nil)
        #expect(result.status != 0)
        #expect(result.err.contains(#"invalid value "1h" for --auto-compaction-retention: expected a number of revisions"#), "\(result.err)")
        let mode = try EtcdProcess.run(EtcdProcess.binary, ["--auto-compaction-mode=hourly", "--data-dir", "/nonexistent/never-created"],
                                       environment: [:], input: nil)
        #expect(mode.status != 0)
        #expect(mode.err.contains(#"invalid value "hourly" for --auto-compaction-mode: expected periodic or revision"#), "\(mode.err)")
    }
}
