import Foundation

/// A bug planted on purpose, to show that the simulation finds it.
public enum SimulationBug: String, Sendable, CaseIterable {
    /// Linearizable reads are served from the local store, without ReadIndex.
    case localReads = "local-reads"
}

/// One simulated run: which seed, how many members, what to switch on.
public struct SimulationOptions: Sendable {
    public var seed: UInt64
    /// 1, 3 or 5 members.
    public var members: Int
    /// Concurrent clients of the recorded workload.
    public var clients = 4
    /// Simulated time of the workload (faults happen in it); a heal phase
    /// and the final checks follow.
    public var workloadMilliseconds: Int64 = 15_000
    public var faults = true
    public var bug: SimulationBug?
    /// Where the members' data dirs go (a tmpfs is fastest); each run uses
    /// and removes a directory of its own below it.
    public var rootDirectory = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : NSTemporaryDirectory()
    /// The linearizability search's bound in states (deterministic, unlike
    /// a time limit); a history it cannot decide within it is "undecided".
    public var checkerMaxStates = 2_000_000
    /// Prints the run's milestones and faults as they happen.
    public var verbose = false
    /// The leader's compaction hash check (off: only the periodic check
    /// can catch a corrupted member, which misses what compaction hides).
    public var compactHashCheck = true

    public init(seed: UInt64, members: Int) {
        self.seed = seed
        self.members = members
    }
}

/// What one run did and found.
public struct SimulationReport: Sendable, CustomStringConvertible {
    public var seed: UInt64
    public var members: Int
    /// Client operations recorded for the checkers (including the final reads).
    public var operations = 0
    /// Of those, writes whose outcome is unknown (timed out, member crashed).
    public var unknownOutcomes = 0
    /// Serializable reads and lease checks, checked outside the history.
    public var otherChecks = 0
    public var faults: [String: Int] = [:]
    /// Watch streams opened (resumes included) and events they delivered.
    public var watchStreams = 0
    public var watchEvents = 0
    /// Backend snapshots streamed to members too far behind.
    public var snapshotsSent = 0
    /// Periodic corruption checks and compaction hash checks the leader
    /// ran, and corrupted members whose damage was visible in their hash
    /// (each must be caught).
    public var hashChecks = 0
    public var compactHashChecks = 0
    /// Compaction hash checks that found members' hashes differing.
    public var compactHashMismatches = 0
    public var corruptionsToDetect = 0
    /// This seed's auto-compaction ("off", "periodic 1500 ms", ...) and
    /// the compactions it made.
    public var autoCompaction = "off"
    public var autoCompactions = 0
    /// Auth mode: "off", or the writes refused for want of permission and
    /// the permission changes made mid-run.
    public var auth = "off"
    /// The small space quota: its size, fill puts refused with NOSPACE and
    /// reclaims finished (compact, defragment, disarm).
    public var quota = ""
    /// Lock workload: "off", or how many holds it checked.
    public var locks = "off"
    /// "linearizable", "undecided" or the failing sub-history.
    public var linearizability = ""
    public var violations: [String] = []
    /// A hash of everything the clients saw: equal for two runs of one seed.
    public var traceHash: UInt64 = 0
    public var simulatedMilliseconds: Int64 = 0
    public var events = 0

    public var passed: Bool { violations.isEmpty }
    public var undecided: Bool { linearizability == "undecided" }
    public var faultCount: Int { faults.values.reduce(0, +) }

    public var description: String {
        let faultText = faults.keys.sorted().map { "\($0)=\(faults[$0]!)" }.joined(separator: " ")
        var text = "seed \(seed) members \(members): \(passed ? "ok" : "FAILED") — \(operations) ops (\(unknownOutcomes) unknown), "
            + "\(otherChecks) other checks, \(watchStreams) watch streams (\(watchEvents) events), \(snapshotsSent) snapshots, "
            + "\(hashChecks) hash checks, \(compactHashChecks) compaction hash checks, \(compactHashMismatches) mismatched (\(corruptionsToDetect) corruptions to catch), "
            + "auto-compaction \(autoCompaction) (\(autoCompactions) done), auth \(auth), locks \(locks), "
            + "quota \(quota), "
            + "faults [\(faultText)], \(events) events, \(simulatedMilliseconds) ms simulated, "
            + "linearizability: \(linearizability.prefix(200)), trace \(String(traceHash, radix: 16))"
        for violation in violations { text += "\n  violation: \(violation)" }
        if !passed { text += "\n  replay: etcd-sim --seed \(seed) --members \(members)" }
        return text
    }
}

public enum Simulation {
    /// Runs one seed to the end: workload with faults, heal, checks.
    /// Synchronous, on the calling thread (the members' backends must be
    /// written from one thread); never call it from two threads at once.
    public static func run(_ options: SimulationOptions) -> SimulationReport {
        let world = SimWorld(options: options)
        return world.run()
    }

    /// The member count seed `seed` uses in a sweep over 1, 3 and 5 members.
    public static func members(forSeed seed: UInt64) -> Int {
        [1, 3, 3, 5][Int(seed % 4)]
    }
}
