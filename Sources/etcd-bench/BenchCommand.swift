import ArgumentParser

/// `etcd-bench`: load generator and micro-benchmarks. Each benchmark is a
/// subcommand reporting throughput and latency percentiles.
@main
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "etcd-bench",
        abstract: "Benchmarks for etcd in Swift: the store, raft and a running cluster.",
        subcommands: [PutLoad.self, RangeLoad.self, TxnPutLoad.self, WatchLoad.self, LeaseKeepAliveLoad.self, RaftBench.self, WALBench.self, MVCCBench.self, FsyncBench.self]
    )
}

extension Duration {
    /// The duration in seconds, for rates in the benchmarks' output.
    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
