import ArgumentParser
import Bbolt
import CLIText
import EtcdServer
import Foundation

extension EtcdutlCommand {
    /// `etcdutl snapshot status|restore`: offline work on etcd snapshot
    /// files (a bbolt database plus SHA-256), from the real etcd or ours.
    struct Snapshot: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manages etcd node snapshots",
            subcommands: [Status.self, Restore.self])

        struct Status: ParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Gets backend snapshot status of a given file")

            @Argument var filename: String

            @Option(name: [.customShort("w"), .customLong("write-out")], help: "set the output format (fields, json, simple, table)")
            var writeOut = "simple"

            func run() throws {
                guard ["simple", "json", "table", "fields"].contains(writeOut) else { exitWithError("unsupported output format", status: 3) }
                guard FileManager.default.fileExists(atPath: filename) else {
                    exitWithError("stat \(filename): no such file or directory", status: 1)
                }
                let s: EtcdSnapshotStatus
                do { s = try BboltReader(path: filename).etcdStatus() } catch { exitWithError("\(error)", status: 1) }
                let row = [String(s.hash, radix: 16), String(s.revision), String(s.totalKey), humanizeBytes(UInt64(s.totalSize)), s.storageVersion]
                switch writeOut {
                case "json":
                    print(#"{"hash":\#(s.hash),"revision":\#(s.revision),"totalKey":\#(s.totalKey),"totalSize":\#(s.totalSize),"version":"\#(s.storageVersion)"}"#)
                case "table":
                    print(renderTable(header: ["hash", "revision", "total keys", "total size", "version"], rows: [row]), terminator: "")
                case "fields":
                    print("\"Hash\" : \(s.hash)")
                    print("\"Revision\" : \(s.revision)")
                    print("\"Keys\" : \(s.totalKey)")
                    print("\"Size\" : \(s.totalSize)")
                    print("\"Version\" : \(s.storageVersion)")
                default:
                    print(row.joined(separator: ", "))
                }
            }
        }

        struct Restore: ParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Restores an etcd member snapshot to an etcd directory")

            @Argument var filename: String
            @Option(name: .customLong("data-dir"), help: "Path to the output data directory")
            var dataDir = ""
            @Option(name: .customLong("wal-dir"), help: "Path to the WAL directory to use (default: the data dir's member/wal)")
            var walDir = ""
            @Option(name: .customLong("name"), help: "Human-readable name for this member")
            var name = "default"
            @Option(name: .customLong("initial-cluster"), help: "Initial cluster configuration for restore bootstrap")
            var initialCluster = "default=http://localhost:2380"
            @Option(name: .customLong("initial-cluster-token"), help: "Initial cluster token for the etcd cluster during restore bootstrap")
            var initialClusterToken = "etcd-cluster"
            @Option(name: .customLong("initial-advertise-peer-urls"), help: "List of this member's peer URLs to advertise to the rest of the cluster")
            var initialAdvertisePeerURLs = "http://localhost:2380"
            @Flag(name: .customLong("skip-hash-check"), help: "Ignore snapshot integrity hash value (required if copied from data directory)")
            var skipHashCheck = false
            @Option(name: .customLong("bump-revision"), help: "How much to increase the latest revision after restore")
            var bumpRevision: UInt64 = 0
            @Flag(name: .customLong("mark-compacted"), help: "Mark the latest revision after restore as the point of scheduled compaction (required if --bump-revision > 0, disallowed otherwise)")
            var markCompacted = false

            func run() throws {
                if bumpRevision > 0 && !markCompacted {
                    exitWithError("--mark-compacted required if --bump-revision > 0", status: 1)
                }
                if markCompacted && bumpRevision == 0 {
                    exitWithError("--bump-revision > 0 required if --mark-compacted", status: 1)
                }
                var restore = SnapshotRestore(snapshotPath: filename)
                restore.name = name
                restore.dataDir = dataDir.isEmpty ? name + ".etcd" : dataDir
                restore.walDir = walDir
                restore.initialCluster = initialCluster
                restore.initialClusterToken = initialClusterToken
                restore.initialAdvertisePeerURLs = initialAdvertisePeerURLs
                restore.skipHashCheck = skipHashCheck
                restore.bumpRevision = bumpRevision
                let dir = restore.dataDir
                let wal = walDir.isEmpty ? dir + "/member/wal" : walDir
                let fields = #""path":\#(EtcdLogHandler.quoted(filename)),"wal-dir":\#(EtcdLogHandler.quoted(wal)),"data-dir":\#(EtcdLogHandler.quoted(dir)),"snap-dir":\#(EtcdLogHandler.quoted(dir + "/member/snap"))"#
                log("restoring snapshot", fields)
                do {
                    let result = try restore.run()
                    log("restored snapshot", fields + #","member-id":"\#(String(result.memberID, radix: 16))","cluster-id":"\#(String(result.clusterID, radix: 16))","keys":\#(result.keyCount)"#)
                } catch {
                    exitWithError("\(error)", status: 1)
                }
            }

            private func log(_ message: String, _ fields: String) {
                let ts = ISO8601DateFormatter().string(from: Date())
                FileHandle.standardError.write(Data(#"{"level":"info","ts":"\#(ts)","caller":"snapshot/v3_snapshot.go","msg":"\#(message)",\#(fields)}"#.utf8 + [0x0A]))
            }
        }
    }
}

/// cobrautl's ExitWithError: `Error: …` on standard error, then exit.
func exitWithError(_ message: String, status: Int32) -> Never {
    FileHandle.standardError.write(Data("Error: \(message)\n".utf8))
    Foundation.exit(status)
}
