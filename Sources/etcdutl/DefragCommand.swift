import ArgumentParser
import Backend
import WAL

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension EtcdutlCommand {
    /// `etcdutl defrag --data-dir DIR`: rewrites a stopped member's backend
    /// without its free pages. The member's WAL lock keeps it from running
    /// against a live server.
    struct Defrag: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Defragments the storage of the etcd")

        @Option(name: .customLong("data-dir"), help: "Required. Defragments a data directory not in use by etcd.")
        var dataDir: String = ""

        /// How long to wait for a running etcd to release the data dir.
        static let lockWaitSeconds = 60

        func run() throws {
            guard !dataDir.isEmpty else {
                throw failure("--data-dir is required")
            }
            let database = dataDir + "/member/snap/db"
            let walDirectory = dataDir + "/member/wal"
            guard access(database, F_OK) == 0 else {
                throw failure("cannot open database at \(database)")
            }
            // The server holds its WAL directory's lock while it runs.
            var lock: (any WALDirectoryLock)?
            if access(walDirectory, F_OK) == 0 {
                var waited = 0
                while lock == nil {
                    do {
                        lock = try PosixFileSystem().lockDirectory(atPath: walDirectory)
                    } catch WALError.locked {
                        if waited == 0 {
                            printError("waiting for etcd to close and release its lock on \"\(walDirectory)\". To defrag a running etcd instance, use `etcdctl defrag` instead.")
                        }
                        waited += 1
                        guard waited <= Self.lockWaitSeconds else {
                            throw failure("\(walDirectory) is still locked by a running etcd after \(Self.lockWaitSeconds)s")
                        }
                        sleep(1)
                    } catch {
                        throw failure("\(error)")
                    }
                }
            }
            defer { withExtendedLifetime(lock) {} }
            do {
                let backend = try Backend(path: database)
                try backend.defragment()
                try backend.close()
            } catch {
                throw failure("\(error)")
            }
        }

        private func failure(_ reason: String) -> some Error {
            printError("Error: Failed to defragment etcd data[\(dataDir)] (\(reason))")
            return ExitCode(1)
        }

        private func printError(_ line: String) {
            let text = line + "\n"
            _ = text.withCString { write(2, $0, strlen($0)) }
        }
    }
}
