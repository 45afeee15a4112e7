import ArgumentParser
import Foundation
import Simulation

/// Runs the deterministic cluster simulation: one seed, or a sweep.
/// Exact replay needs Swift's hashing fixed, so the tool re-executes itself
/// with SWIFT_DETERMINISTIC_HASHING=1 when it is not set.
struct EtcdSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "etcd-sim",
        abstract: "Runs real etcd members in a seeded simulation of time, network and disk, and checks what clients saw.")

    @Option(help: "The seed to run (with --seeds: the first of the sweep).")
    var seed: UInt64 = 1

    @Option(help: "How many consecutive seeds to run.")
    var seeds: Int = 1

    @Option(help: "Members: 1, 3 or 5 (default: by seed, cycling 1, 3, 3, 5).")
    var members: Int?

    @Option(help: "Simulated milliseconds of workload per seed.")
    var workloadMs: Int64 = 15_000

    @Option(help: "Concurrent clients.")
    var clients: Int = 4

    @Flag(help: "No faults (network, crashes, pauses, transfers).")
    var noFaults = false

    @Option(help: "Plant a bug to show the checks catch it: \(SimulationBug.allCases.map(\.rawValue).joined(separator: ", ")).")
    var bug: String?

    @Flag(help: "No compaction hash check (CompactHashCheck): only the periodic corruption check runs.")
    var noCompactHashCheck = false

    @Option(help: "Where data dirs go (default: /dev/shm when writable).")
    var root: String?

    @Flag(help: "Print every fault and milestone.")
    var verbose = false

    @Flag(help: "Stop at the first failing seed.")
    var failFast = false

    func validate() throws {
        if let members, ![1, 3, 5].contains(members) { throw ValidationError("--members must be 1, 3 or 5") }
        if let bug, SimulationBug(rawValue: bug) == nil { throw ValidationError("unknown --bug \(bug)") }
        if seeds < 1 { throw ValidationError("--seeds must be at least 1") }
    }

    func run() throws {
        var failed: [UInt64] = []
        var totals = (operations: 0, unknown: 0, faults: 0, undecided: 0, other: 0)
        let started = Date()
        for offset in 0..<seeds {
            let current = seed &+ UInt64(offset)
            var options = SimulationOptions(seed: current, members: members ?? Simulation.members(forSeed: current))
            options.workloadMilliseconds = workloadMs
            options.clients = clients
            options.faults = !noFaults
            options.bug = bug.flatMap(SimulationBug.init(rawValue:))
            options.compactHashCheck = !noCompactHashCheck
            if let root { options.rootDirectory = root }
            options.verbose = verbose
            let report = Simulation.run(options)
            emit("\(report)")
            totals.operations += report.operations
            totals.unknown += report.unknownOutcomes
            totals.faults += report.faultCount
            totals.other += report.otherChecks
            if report.undecided { totals.undecided += 1 }
            if !report.passed {
                failed.append(current)
                if failFast { break }
            }
        }
        let seconds = Int(Date().timeIntervalSince(started))
        emit("seeds: \(seeds), failed: \(failed.count)\(failed.isEmpty ? "" : " \(failed)"), operations checked: \(totals.operations) "
            + "(\(totals.unknown) unknown outcome), other checks: \(totals.other), faults injected: \(totals.faults), "
            + "undecided: \(totals.undecided), \(seconds) s")
        if !failed.isEmpty { throw ExitCode(1) }
    }
}

/// Unbuffered, so a crash does not swallow the reports before it.
func emit(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

if ProcessInfo.processInfo.environment["SWIFT_DETERMINISTIC_HASHING"] == nil {
    setenv("SWIFT_DETERMINISTIC_HASHING", "1", 1)
    let arguments = CommandLine.arguments
    let path = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
    var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    execv(path, &argv)
    perror("etcd-sim: cannot re-execute with SWIFT_DETERMINISTIC_HASHING=1")
}
EtcdSim.main()
