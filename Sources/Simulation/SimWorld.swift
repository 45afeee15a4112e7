import Checkers
import EtcdProto
import EtcdServer
import Foundation
import Logging
import PeerTransport
import Raft
import SimulatedDisk

/// One simulated member: its config, its disk (the WAL's simulated file
/// system lives as long as the node, across crashes), and the running
/// `Member` when it is up.
final class SimNode: @unchecked Sendable {
    let index: Int
    var config: ServerConfig
    let walFS = SimulatedFileSystem()
    var id: UInt64 = 0
    var member: Member?
    var delegate: (any PeerTransportDelegate)?
    /// Deliveries and ticks wait until then (a SIGSTOP-style pause).
    var pausedUntil: Int64 = 0
    /// Bumped on every crash, so a dead instance's tick events stop.
    var generation = 0
    /// The highest (applied index, revision) seen: after a restart, once
    /// the member has applied as far again, its revision must be as high.
    var highWater: (applied: UInt64, revision: Int64) = (0, 0)
    /// Removed from the cluster: never restarted, left out of the checks.
    var removed = false
    /// Added as a learner and not yet promoted.
    var learner = false
    /// Restarted with `corruptPut` armed: out of the client workload and the
    /// data checks (see Corruption.swift).
    var corrupted = false

    init(index: Int, config: ServerConfig) {
        self.index = index
        self.config = config
    }

    var name: String { config.name }
}

/// The simulated world: one thread, one seeded generator, simulated time
/// in microseconds, and an event queue. Everything a member does happens
/// inside `settle`, called from an event.
final class SimWorld: @unchecked Sendable {
    let options: SimulationOptions
    var random: SplitMix64
    /// Simulated time, in microseconds since the start.
    var now: Int64 = 0
    var queue = EventQueue()
    let origin = ContinuousClock.now
    var nodes: [SimNode] = []
    var faults = NetworkFaults()
    let root: String
    var report: SimulationReport
    var snapshotFiles = 0
    /// Snapshots streamed and checked so far (names their scratch dirs).
    var snapshotChecks = 0
    var backendBatchLimit = 1
    /// The revision the first member to apply each index was at.
    var revisionAtIndex: [UInt64: (String, Int64)] = [:]
    static let tickMicroseconds: Int64 = 100_000
    let traceMessages = ProcessInfo.processInfo.environment["SIM_TRACE_MESSAGES"] != nil
    static let maxEvents = 3_000_000

    // Workload state (see Workload.swift).
    var history: [HistoryOperation<KVInput, KVOutput>] = []
    var clients: [SimClient] = []
    var clientsStopped = false
    var inFlight = 0
    var keys: [String] = []
    var serializableReads: [(key: String, record: KVRecord?, invoke: Int64)] = []
    var leaseChecks: [LeaseCheck] = []
    var nextLeaseID: Int64 = 1
    // Watches (see Watches.swift).
    var watchStreams: [SimWatchStream] = []
    var watchLogical: [Int: Int] = [:]
    var appliedEvents: [Int64: [KVEvent]] = [:]
    /// Revisions compactions succeeded at.
    var compactedAt: Set<Int64> = []
    /// The seed's small space quota and its fill/reclaim (Quota.swift).
    var quota: QuotaState
    // Corruption (see Corruption.swift).
    var corruptVictim: SimNode?
    var hashCheckStartedAt: Int64?
    var compactHashCheckStartedAt: Int64?
    var corruptCheckIntervalMicroseconds: Int64 = 1_000_000
    // Auth (see AuthWorkload.swift): nil on seeds without it.
    var authMode: AuthMode?
    // Locks (see LockWorkload.swift).
    var locks: LockWorkloadState

    init(options: SimulationOptions) {
        self.options = options
        random = SplitMix64(seed: options.seed &* 0x9E37_79B9 &+ 0x5EED)
        locks = LockWorkloadState(random: SplitMix64(seed: options.seed &* 0xBF58_476D_1CE4_E5B9 &+ 0x10C4))
        root = options.rootDirectory + "/etcd-sim-\(getpid())-\(options.seed)"
        report = SimulationReport(seed: options.seed, members: options.members)
        quota = QuotaState(bytes: Self.chooseQuota(seed: options.seed))
    }

    func log(_ text: @autoclosure () -> String) {
        if options.verbose { print("[\(now / 1000) ms] \(text())") }
    }

    func count(_ fault: String) {
        report.faults[fault, default: 0] += 1
    }

    func violation(_ text: String) {
        log("VIOLATION: \(text)")
        if report.violations.count < 20 { report.violations.append(text) }
    }

    // MARK: - Time

    func schedule(after delay: Int64, _ action: @escaping () -> Void) {
        queue.schedule(at: now + max(0, delay), action)
    }

    /// Runs events up to `time` (or until `stop` says so, checked between events).
    func run(until time: Int64, stop: () -> Bool = { false }) {
        while let next = queue.nextTime, next <= time, report.events < Self.maxEvents {
            if stop() { return }
            let event = queue.pop()!
            now = event.time
            report.events += 1
            event.action()
        }
        if report.events >= Self.maxEvents {
            violation("more than \(Self.maxEvents) events: runaway run")
            return
        }
        now = max(now, time)
    }

    // MARK: - Members

    func environment(for node: SimNode) -> MemberEnvironment {
        var environment = MemberEnvironment()
        let origin = self.origin
        environment.now = { [unowned self] in origin + .microseconds(self.now) }
        environment.wallMilliseconds = { [unowned self] in 1_750_000_000_000 + UInt64(self.now / 1000) }
        environment.makeTransport = { [unowned self, node] config, delegate in
            node.delegate = delegate
            return SimTransport(localID: config.localID, world: self)
        }
        environment.walFileSystem = node.walFS
        environment.walSegmentSizeBytes = 64 << 10
        environment.backendBatchIntervalMilliseconds = 1 << 30
        environment.backendBatchLimitOps = backendBatchLimit
        environment.manualLoop = true
        environment.runInBackground = { $0() }
        environment.observeApply = { [unowned self] member, revision, events in observed(member, revision, events) }
        environment.observeCompaction = { [unowned self] _, revision in compactedAt.insert(revision) }
        environment.logger = Logger(label: "etcd-sim", factory: { _ in SwiftLogNoOpLogHandler() })
        return environment
    }

    func makeNodes() {
        let count = options.members
        let names = (0..<count).map { "m\($0)" }
        let urls = names.map { "http://\($0).sim:2380" }
        let snapshotCount = UInt64(random.int(10...200))
        let catchUp = UInt64(random.int(2...30))
        let preVote = random.chance(0.8)
        backendBatchLimit = Int(random.int(1...100))
        corruptCheckIntervalMicroseconds = random.int(500_000...3_000_000)
        let autoCompaction = chooseAutoCompaction()
        log("members \(count), snapshot-count \(snapshotCount), catch-up \(catchUp), pre-vote \(preVote), backend batch \(backendBatchLimit), "
            + "auto-compaction \(report.autoCompaction), quota \(quota.bytes >> 10) KiB")
        for i in 0..<count {
            var config = ServerConfig(name: names[i], dataDir: root + "/" + names[i],
                                      listenClientURLs: [], advertiseClientURLs: ["http://\(names[i]).sim:2379"])
            config.initialAdvertisePeerURLs = [urls[i]]
            config.listenPeerURLs = [urls[i]]
            config.initialCluster = zip(names, urls).map { ($0, [$1]) }
            config.initialClusterToken = "sim-\(options.seed)"
            config.snapshotCount = snapshotCount
            config.snapshotCatchUpEntries = catchUp
            config.preVote = preVote
            config.quotaBackendBytes = quota.bytes
            // --strict-reconfig-check on odd seeds only: with faults every
            // second or two, its contact rule (every voter heard from for
            // 5 s) refuses most adds, and the membership changes would
            // hardly run. Taken from the seed, so the random stream stays.
            config.strictReconfigCheck = options.seed % 2 == 1
            // The simulation runs the compaction hash check itself (see
            // Corruption.swift); the setting says so.
            config.compactHashCheck = options.compactHashCheck
            if let (policy, checkInterval) = autoCompaction {
                config.autoCompaction = policy
                config.autoCompactionRevisionCheckIntervalMilliseconds = checkInterval
            }
            // The planted bug, when asked for, is a failpoint like any other.
            config.failpoints = Failpoints(specification: options.bug == .localReads ? "bugLocalLinearizableReads=on" : "")
            nodes.append(SimNode(index: i, config: config))
        }
    }

    /// Auto-compaction for this seed, from a generator of its own (so runs
    /// without it stay as they were): off, periodic with a retention of
    /// 0.5–4 s, or revision mode keeping 1–40 revisions, checked every
    /// 0.3–3 s. The compactions it makes count in `report.autoCompactions`.
    func chooseAutoCompaction() -> (AutoCompactionPolicy, checkIntervalMilliseconds: Int)? {
        var choice = SplitMix64(seed: options.seed &* 0xC2B2_AE3D_27D4_EB4F &+ 0xA070)
        switch choice.next() % 10 {
        case 0..<4:
            report.autoCompaction = "off"
            return nil
        case 4..<7:
            let retention = choice.int(500...4_000)
            report.autoCompaction = "periodic \(retention) ms"
            return (.periodic(retention: .milliseconds(retention)), 300_000)
        default:
            let revisions = choice.int(1...40)
            let interval = choice.int(300...3_000)
            report.autoCompaction = "revision \(revisions) every \(interval) ms"
            return (.revision(revisions: revisions), Int(interval))
        }
    }

    /// A member leaves (crash, removal, the end): its auto-compactions count.
    func retire(_ member: Member) {
        report.autoCompactions += member.autoCompactions
    }

    /// Starts (or restarts) a node's member; a failure to open is a finding.
    func start(_ node: SimNode) {
        guard node.member == nil else { return }
        do {
            let member = try Member(config: node.config, environment: environment(for: node))
            node.member = member
            node.id = member.memberID
            let status = member.raftStatus()
            log("\(node.name) up (\(String(node.id, radix: 16))): term \(status.term), commit \(status.committedIndex), applied \(status.appliedIndex), store \(member.storeState().map { "\($0)" } ?? "?")")
        } catch {
            violation("\(node.name) cannot restart: \(error)")
            return
        }
        let generation = node.generation
        // Each member ticks at its own phase.
        scheduleTick(node, generation: generation, at: now + random.int(1...Self.tickMicroseconds))
        settle(node)
    }

    func scheduleTick(_ node: SimNode, generation: Int, at time: Int64) {
        queue.schedule(at: time) { [self] in
            guard node.generation == generation, node.member != nil else { return }
            if now < node.pausedUntil {
                scheduleTick(node, generation: generation, at: node.pausedUntil)
                return
            }
            settle(node)
            if let member = node.member {
                serviceWatchers(on: node, member)
                settle(node)
            }
            scheduleTick(node, generation: generation, at: now + Self.tickMicroseconds)
        }
    }

    /// A `kill -9`: the member stops dead and its disk keeps only what was
    /// fsynced (plus a seeded part of the rest, the last write maybe torn).
    func crash(_ node: SimNode) {
        guard let member = node.member else { return }
        let status = member.raftStatus()
        log("\(node.name) crashes: term \(status.term), commit \(status.committedIndex), applied \(status.appliedIndex), store \(member.storeState().map { "\($0)" } ?? "?")")
        node.walFS.crashNow()
        retire(member)
        node.member = nil
        node.delegate = nil
        node.generation += 1
        node.pausedUntil = 0
        member.crash()
        node.walFS.recoverFromCrash(using: &random)
        streamsOfCrashed(node)
    }

    /// Runs the member's loop until it has nothing left to do right now.
    func settle(_ node: SimNode) {
        guard let member = node.member, now >= node.pausedUntil else { return }
        var rounds = 0
        repeat {
            if !member.step() {
                // It applied its own removal (its table no longer has it),
                // or another member already has.
                if member.member(id: node.id) == nil || wasRemoved(node) {
                    markRemoved(node)
                    log("\(node.name) stopped: removed from the cluster")
                } else {
                    violation("\(node.name) stopped on its own")
                }
                retire(member)
                node.member = nil
                node.delegate = nil
                node.generation += 1
                streamsOfCrashed(node)
                return
            }
            rounds += 1
        } while member.hasPendingInput && rounds < 10_000
        guard !node.corrupted, let (applied, revision) = member.storeState() else { return }
        // The state is a function of the log prefix: every member whose
        // store holds the log up to index i is at the same revision.
        if let (other, expected) = revisionAtIndex[applied], expected != revision {
            violation("\(node.name) is at revision \(revision) after applying index \(applied); \(other) was at \(expected)")
        } else if revisionAtIndex[applied] == nil {
            revisionAtIndex[applied] = (node.name, revision)
        }
        if applied >= node.highWater.applied {
            if revision < node.highWater.revision {
                violation("\(node.name): revision went back from \(node.highWater.revision) to \(revision) at applied index \(applied)")
            }
            node.highWater = (applied, revision)
        }
    }

    func node(id: UInt64) -> SimNode? { nodes.first { $0.id == id } }

    /// The nodes still in the cluster.
    var liveNodes: [SimNode] { nodes.filter { !$0.removed } }

    var leader: SimNode? {
        nodes.first { node in !node.removed && (node.member.map { $0.raftStatus().leader == $0.memberID } ?? false) }
    }

    // MARK: - Network

    func transmit(_ message: Data, from: UInt64, to: UInt64) {
        if faults.isBlocked(from, to) || random.chance(faults.lossRate) { return }
        // Duplicates, but never of a proposal: raft would append it twice
        // (and apply it twice); TCP never duplicates, only a network model
        // could, so that is not a finding about the member.
        var copies = 1
        if random.chance(faults.duplicateRate),
           let decoded = try? Raftpb_Message(serializedBytes: message), decoded.type != .msgProp {
            copies = 2
        }
        for _ in 0..<copies {
            let delay = random.int(100...2_000) + random.int(faults.extraDelay) + (faults.slowSender[from] ?? 0)
            schedule(after: delay) { [self] in deliver(message, from: from, to: to) }
        }
    }

    func deliver(_ message: Data, from: UInt64, to: UInt64) {
        guard let node = node(id: to), node.member != nil else { return }
        if now < node.pausedUntil {
            queue.schedule(at: node.pausedUntil) { [self] in deliver(message, from: from, to: to) }
            return
        }
        // A link cut while the message was on its way loses it too.
        if faults.isBlocked(from, to) { return }
        // As the peer transport does: a member removed from the cluster is
        // refused, and told so (it then stops).
        if node.delegate?.transport(isRemoved: from) == true {
            if let sender = self.node(id: from), sender.member != nil {
                sender.delegate?.transport(rejectedBy: to, reason: "member removed")
                settle(sender)
            }
            return
        }
        if traceMessages, let m = try? Raftpb_Message(serializedBytes: message) {
            print("[\(now / 1000) ms] \(nodes.first { $0.id == from }?.name ?? "?")→\(node.name) \(m.type) term \(m.term) index \(m.index) logTerm \(m.logTerm) commit \(m.commit) entries \(m.entries.count)\(m.entries.last.map { "..\($0.index)" } ?? "") reject \(m.reject)")
        }
        node.delegate?.transport(received: message, from: from)
        settle(node)
    }

    func transmitSnapshot(
        _ message: Data, from: UInt64, to: UInt64,
        writeBody: @escaping @Sendable (_ write: (UnsafeRawBufferPointer) throws -> Void) throws -> Void,
        completion: @escaping @Sendable (Bool) -> Void
    ) {
        func fail() {
            schedule(after: 10_000) { [self] in
                completion(false)
                if let sender = node(id: from) { settle(sender) }
            }
        }
        guard let target = node(id: to), target.member != nil, !faults.isBlocked(from, to) else { return fail() }
        snapshotFiles += 1
        let path = target.config.snapDir + "/sim-\(snapshotFiles).db.part"
        let fd = Glibc.open(path, O_CREAT | O_TRUNC | O_WRONLY, 0o644)
        guard fd >= 0 else { return fail() }
        var size = 0
        do {
            try writeBody { buffer in
                var offset = 0
                while offset < buffer.count {
                    let n = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                    guard n > 0 else { throw POSIXError(.EIO) }
                    offset += n
                }
                size += buffer.count
            }
        } catch {
            close(fd)
            unlink(path)
            return fail()
        }
        close(fd)
        report.snapshotsSent += 1
        log("snapshot of \(size) bytes \(String(from, radix: 16)) → \(String(to, radix: 16))")
        // 100 MB/s plus the link's delay.
        let delay = 5_000 + Int64(size / 100) + random.int(faults.extraDelay) + (faults.slowSender[from] ?? 0)
        schedule(after: delay) { [self] in
            guard let target = node(id: to), target.member != nil, !faults.isBlocked(from, to) else {
                unlink(path)
                completion(false)
                if let sender = node(id: from) { settle(sender) }
                return
            }
            // A corrupted member's backend carries its damage along.
            if node(id: from)?.corrupted == true && !target.corrupted { spreadCorruption(to: target) }
            target.delegate?.transport(receivedSnapshot: message, bodyPath: path, from: from)
            settle(target)
            schedule(after: 1_000) { [self] in
                completion(true)
                if let sender = node(id: from) { settle(sender) }
            }
        }
    }

    // MARK: - The run

    func run() -> SimulationReport {
        try? FileManager.default.removeItem(atPath: root)
        defer { try? FileManager.default.removeItem(atPath: root) }
        makeNodes()
        for node in nodes { start(node) }
        startAuth()
        startWorkload()
        startWatchers()
        startLocks()
        scheduleCorruptionChecks()
        if options.compactHashCheck { scheduleCompactionHashChecks(after: corruptCheckIntervalMicroseconds * 3 / 2) }
        if options.faults { scheduleFaults(until: options.workloadMilliseconds * 1000) }
        run(until: options.workloadMilliseconds * 1000)

        // Heal: no new operations, no faults, everyone up; let in-flight
        // requests finish (they time out within etcd's request timeout).
        clientsStopped = true
        heal()
        let healEnd = now + 10_000_000
        run(until: healEnd) { inFlight == 0 && now > healEnd - 8_000_000 }
        finalPhase()
        checkCorruptionDetection()
        checkHistory()
        checkWatches()
        checkLocks()
        checkAuth()
        report.quota = "\(quota.bytes >> 10) KiB (\(quota.refusals) refused, \(quota.cleared) reclaimed)"
        tearDown()
        report.simulatedMilliseconds = now / 1000
        return report
    }

    func heal() {
        log("heal")
        faults = NetworkFaults()
        for node in nodes where !node.removed {
            node.pausedUntil = 0
            if node.member == nil { start(node) }
        }
    }

    func tearDown() {
        for node in nodes {
            node.member?.stop()
            if let member = node.member { retire(member) }
            node.member = nil
            node.delegate = nil
            node.generation += 1
        }
        queue = EventQueue()
    }
}
