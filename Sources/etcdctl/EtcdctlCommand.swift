import ArgumentParser
import EtcdClient

/// `etcdctl`: the command-line client. Commands arrive with the client issue.
@main
struct EtcdctlCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "etcdctl",
        abstract: "A simple command line client for etcd3.",
        subcommands: [Version.self]
    )

    struct Version: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Prints the version of etcdctl.")
        func run() {
            print("etcdctl version: 3.6.0")
            print("API version: 3.6")
        }
    }
}
