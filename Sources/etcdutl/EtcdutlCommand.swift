import ArgumentParser

/// `etcdutl`: offline operations on a data dir (snapshot restore/status,
/// defrag, hashkv). Commands arrive with the storage and server issues.
@main
struct EtcdutlCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "etcdutl",
        abstract: "An administrative command line tool for etcd3.",
        subcommands: [Defrag.self, Version.self]
    )

    struct Version: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Prints the version of etcdutl.")
        func run() {
            print("etcdutl version: 3.6.0")
            print("API version: 3.6")
        }
    }
}
