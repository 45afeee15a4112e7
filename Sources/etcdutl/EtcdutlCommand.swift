import ArgumentParser
import Backend
import Foundation
import MVCC

/// `etcdutl`: offline operations on a data dir (snapshot restore/status,
/// defrag, hashkv). Commands arrive with the storage and server issues.
@main
struct EtcdutlCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "etcdutl",
        abstract: "An administrative command line tool for etcd3.",
        subcommands: [Defrag.self, HashKV.self, Snapshot.self, Version.self]
    )

    struct Version: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Prints the version of etcdutl.")
        func run() {
            print("etcdutl version: 3.6.0")
            print("API version: 3.6")
        }
    }

    /// etcd 3.6's `etcdutl hashkv <filename>`: the HashKV of a backend file
    /// (or, as a convenience, of a data dir's `member/snap/db`), equal to
    /// what Maintenance.HashKV answers online at the same revision. Output
    /// as etcdutl's printers: simple `hash, hash revision, compact revision`,
    /// or json `{"hash":…,"hashRevision":…,"compactRevision":…}`.
    struct HashKV: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "hashkv", abstract: "Prints the KV history hash of a given file")

        @Argument(help: "The backend file (member/snap/db), or a data dir.")
        var filename: String

        @Option(name: .customLong("rev"), help: "maximum revision to hash (default: latest revision)")
        var revision: Int64 = 0

        @Option(name: [.customShort("w"), .customLong("write-out")], help: "set the output format (simple, json)")
        var writeOut = "simple"

        func run() throws {
            guard writeOut == "simple" || writeOut == "json" else { fail("unsupported output format", status: 3) }
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: filename, isDirectory: &isDirectory) else {
                fail("open \(filename): no such file or directory", status: 1)
            }
            let path = isDirectory.boolValue ? filename + "/member/snap/db" : filename
            let hashed: KeyValueHash
            do {
                let backend = try Backend(path: path)
                defer { try? backend.close() }
                let store = try KVStore(backend: backend)
                hashed = try store.hashKV(revision).hash
            } catch {
                fail("\(error)", status: 1)
            }
            if writeOut == "json" {
                print(#"{"hash":\#(hashed.hash),"hashRevision":\#(hashed.revision),"compactRevision":\#(hashed.compactRevision)}"#)
            } else {
                print("\(hashed.hash), \(hashed.revision), \(hashed.compactRevision)")
            }
        }

        /// cobrautl's ExitWithError: `Error: …` on standard error.
        private func fail(_ message: String, status: Int32) -> Never {
            FileHandle.standardError.write(Data("Error: \(message)\n".utf8))
            Foundation.exit(status)
        }
    }
}
