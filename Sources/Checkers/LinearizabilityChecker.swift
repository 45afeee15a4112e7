// Linearizability checker: Wing & Gong's backtracking search with Lowe's just-in-time
// linearization and memoization of (set of linearized operations, model state), the
// approach popularized by Porcupine. Written from the published descriptions.
//
// Search. Every operation contributes a call entry (at `invoke`) and, unless its outcome
// is unknown, a return entry (at `returnTime`); the entries form one doubly-linked list
// sorted by time (calls before returns at equal times, i.e. touching operations count
// as concurrent). Scanning from the head, a call entry may be linearized now if the model
// accepts the operation in the current state and the resulting (linearized-set, state)
// pair was never seen before; it is then lifted out of the list (together with its
// return entry) and the scan restarts at the head. Reaching a return entry means that
// operation should already have been linearized: backtrack (pop the last linearized
// operation, restore it and continue after it). The history is linearizable once no
// return entry is left.
//
// Unknown outcomes. A pending operation has no return entry, so it never forces a
// backtrack: it may be linearized anywhere after its invoke (its call entry stays
// available), or never (the search stops when only pending call entries remain).
// Pending operations that cannot change the state (`Model.mayChangeState`) are dropped
// up front. Candidates are tried completed-first: pending ones only once no completed
// candidate remains before the first return entry, latest-invoked first -- the order
// does not change the answer, only how fast it is found. Models can prune further by
// refusing a pending step that is impossible or changes nothing (`KVModel` does, using
// the revisions the history's completed writes claim).
//
// Bounds. A deadline and a cap on memoized states; hitting either yields `.undecided`,
// never a pass.
//
// Shrinking (not linearizable). (1) Binary search for the shortest failing time prefix:
// keep the operations invoked up to a return time T, with those still running at T
// turned into unknown-outcome operations -- a prefix cut this way of a linearizable
// history is always linearizable, so any model can use it. (2) If the relaxation
// `model.subhistoryModel()` still rejects that prefix (or else the whole history, whose
// tail is then cut by removal instead), binary search for the latest
// instant S such that dropping every operation that returned before S still fails under
// it. (3) Greedy removal of whole clients, then of chunks of halving size, down to
// single operations, keeping each removal that leaves the rest non-linearizable (under
// the relaxation when (2) applied, otherwise under the model itself). Bounded by
// `shrinkTimeout`; whatever is reported has been confirmed non-linearizable.

/// Checks histories against a `LinearizabilityModel`.
public struct LinearizabilityChecker<Model: LinearizabilityModel> {
    public typealias Operation = HistoryOperation<Model.Input, Model.Output>
    public typealias Result = LinearizabilityResult<Model.Input, Model.Output>

    public var model: Model
    /// Cap on memoized (linearized-set, state) pairs per search; reaching it gives
    /// `.undecided`. Bounds memory (each entry is one bitset plus one state).
    public var maxStates: Int
    /// Time budget for shrinking a failing history (on top of the check's own timeout).
    public var shrinkTimeout: Duration

    public init(model: Model, maxStates: Int = 5_000_000, shrinkTimeout: Duration = .seconds(10)) {
        self.model = model
        self.maxStates = maxStates
        self.shrinkTimeout = shrinkTimeout
    }

    /// Decides whether `history` is linearizable within `timeout` (the search itself;
    /// shrinking a failing history takes up to `shrinkTimeout` more).
    public func check(_ history: [Operation], timeout: Duration) -> Result {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        var ops = history
        for i in ops.indices {
            if ops[i].id == nil { ops[i].id = i }
            if ops[i].isPending { ops[i] = ops[i].asPending() }
        }
        ops.removeAll { $0.isPending && !model.mayChangeState($0.input) }
        let parts = model.partition(ops)
        var undecided: [String] = []
        for (index, part) in parts.enumerated() where !part.isEmpty {
            let outcome = runSearch(model, part, deadline: deadline, maxStates: maxStates, explain: false)
            switch outcome.verdict {
            case .linearizable:
                continue
            case .undecided(let reason):
                undecided.append("partition \(index + 1) of \(parts.count) (\(part.count) operations): \(reason)")
            case .notLinearizable:
                return failure(part, partitionIndex: index, partitionCount: parts.count)
            }
        }
        if !undecided.isEmpty {
            return .undecided(reason: undecided.joined(separator: "; "))
        }
        return .linearizable
    }

    // MARK: Shrinking and explanation

    private func failure(_ part: [Operation], partitionIndex: Int, partitionCount: Int) -> Result {
        let clock = ContinuousClock()
        let shrinkDeadline = clock.now.advanced(by: shrinkTimeout)
        let perCheck = max(shrinkTimeout / 8, .milliseconds(100))

        func fails(_ ops: [Operation], _ m: Model) -> Bool {
            if ops.isEmpty { return false }
            let now = clock.now
            if now >= shrinkDeadline { return false }
            let limit = min(shrinkDeadline, now.advanced(by: perCheck))
            if case .notLinearizable = runSearch(m, ops, deadline: limit, maxStates: maxStates, explain: false).verdict {
                return true
            }
            return false
        }

        // (1) Shortest failing time prefix (sound for any model).
        var current = part
        let cutTimes = Array(Set(part.compactMap { $0.returnTime })).sorted()
        if !cutTimes.isEmpty {
            func prefix(_ t: UInt64) -> [Operation] {
                part.compactMap { op in
                    guard op.invoke <= t else { return nil }
                    if let r = op.returnTime, r <= t { return op }
                    return model.mayChangeState(op.input) ? op.asPending() : nil
                }
            }
            var lo = 0
            var hi = cutTimes.count - 1
            while lo < hi {
                let mid = (lo + hi) / 2
                if fails(prefix(cutTimes[mid]), model) { hi = mid } else { lo = mid + 1 }
            }
            let candidate = prefix(cutTimes[hi])
            if fails(candidate, model) { current = candidate }
        }

        // (2) Prefer the relaxed sub-history model: on the prefix if it still fails there,
        // else on the whole part (turning in-flight operations into unknown-outcome ones
        // weakens the relaxation), whose tail is then cut by plain removal instead.
        let relaxed = model.subhistoryModel()
        var useRelaxed = fails(current, relaxed)
        if !useRelaxed && current.count < part.count && fails(part, relaxed) {
            useRelaxed = true
            let ends = Array(Set(part.map(\.invoke))).sorted()
            func head(_ t: UInt64) -> [Operation] { part.filter { $0.invoke <= t } }
            var lo = 0
            var hi = ends.count - 1
            while lo < hi {
                let mid = (lo + hi) / 2
                if fails(head(ends[mid]), relaxed) { hi = mid } else { lo = mid + 1 }
            }
            current = head(ends[hi])
            if !fails(current, relaxed) { current = part }
        }
        let m = useRelaxed ? relaxed : model
        func timeLeft() -> Bool { clock.now < shrinkDeadline }

        // (2a) With the relaxation, also drop the longest failing time prefix: the
        // operations that returned before some instant S.
        if useRelaxed {
            let starts = Array(Set(current.compactMap { $0.returnTime })).sorted()
            func suffix(_ t: UInt64) -> [Operation] { current.filter { ($0.returnTime ?? .max) >= t } }
            var lo = 0
            var hi = starts.count - 1
            while lo < hi {
                let mid = (lo + hi + 1) / 2
                if fails(suffix(starts[mid]), m) { lo = mid } else { hi = mid - 1 }
            }
            if !starts.isEmpty && lo > 0 { current = suffix(starts[lo]) }
        }

        var clients: [Int] = []
        for op in current where !clients.contains(op.clientID) { clients.append(op.clientID) }
        if clients.count > 1 {
            for c in clients where timeLeft() {
                let candidate = current.filter { $0.clientID != c }
                if fails(candidate, m) { current = candidate }
            }
        }
        var size = max(1, current.count / 2)
        chunks: while true {
            var i = 0
            while i < current.count {
                guard timeLeft() else { break chunks }
                var candidate = current
                candidate.removeSubrange(i..<min(current.count, i + size))
                if fails(candidate, m) { current = candidate } else { i += size }
            }
            if size == 1 { break }
            size = max(1, size / 2)
        }

        // Explanation.
        var text = "History is not linearizable."
        if partitionCount > 1 {
            text += " Failing partition: \(partitionIndex + 1) of \(partitionCount) (\(part.count) operations)."
        }
        text += "\nMinimal failing sub-history (\(current.count) of \(part.count) operations"
        if !timeLeft() { text += "; shrinking stopped at its time limit" }
        text += ", checked with \(m.describeModel())):"
        for op in current.sorted(by: { $0.invoke < $1.invoke }) {
            text += "\n  " + m.describe(op)
        }
        let detail = runSearch(m, current, deadline: clock.now.advanced(by: .seconds(2)),
                               maxStates: maxStates, explain: true)
        text += "\n" + explain(detail, current, m)
        return .notLinearizable(minimalFailingSubhistory: current, explanation: text)
    }

    private func explain(_ outcome: SearchOutcome<Model.State>, _ ops: [Operation], _ m: Model) -> String {
        guard case .notLinearizable = outcome.verdict else {
            return "(No detailed explanation: re-checking the minimal sub-history did not conclude.)"
        }
        var text: String
        if outcome.bestPrefix.isEmpty {
            text = "No operation can be linearized first."
        } else {
            text = "Longest linearizable prefix found (\(outcome.bestPrefix.count) operations): "
            text += outcome.bestPrefix.map { ops[$0].id.map { "#\($0)" } ?? "#?" }.joined(separator: ", ")
        }
        if let state = outcome.bestState {
            text += "\nModel state after it: " + m.describe(state: state)
        }
        if let b = outcome.blocker {
            let op = ops[b]
            text += "\nOperation \(op.id.map { "#\($0)" } ?? "#?") could not be placed before it returned:"
            text += "\n  " + m.describe(op)
            if let state = outcome.bestState, !m.prepared(for: ops).step(state, op.input, op.output).ok {
                text += "\n  (the model rejects its response in that state; no other order of the concurrent operations helps)"
            } else {
                text += "\n  (every order of the operations concurrent with it was tried and failed)"
            }
        }
        return text
    }
}

// MARK: - Search

struct SearchOutcome<State> {
    enum Verdict {
        case linearizable
        case notLinearizable
        case undecided(String)
    }
    var verdict: Verdict
    var bestPrefix: [Int] = []
    var bestState: State?
    var blocker: Int?
    var states = 0
}

/// Bitset of linearized operations with an incrementally maintained Zobrist hash.
struct LinearizedSet: Hashable {
    var words: [UInt64]
    var zobrist: UInt64 = 0

    init(count: Int) { words = Array(repeating: 0, count: (count + 63) / 64) }

    mutating func toggle(_ i: Int, key: UInt64) {
        words[i >> 6] ^= 1 << UInt64(i & 63)
        zobrist ^= key
    }

    static func == (a: LinearizedSet, b: LinearizedSet) -> Bool {
        a.zobrist == b.zobrist && a.words == b.words
    }

    func hash(into hasher: inout Hasher) { hasher.combine(zobrist) }
}

struct MemoKey<State: Hashable>: Hashable {
    var set: LinearizedSet
    var state: State
}

@inline(__always) func splitMix64(_ x: inout UInt64) -> UInt64 {
    x &+= 0x9E37_79B9_7F4A_7C15
    var z = x
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

func runSearch<M: LinearizabilityModel>(
    _ model: M,
    _ ops: [HistoryOperation<M.Input, M.Output>],
    deadline: ContinuousClock.Instant,
    maxStates: Int,
    explain: Bool
) -> SearchOutcome<M.State> {
    let model = model.prepared(for: ops)
    let n = ops.count
    var outcome = SearchOutcome<M.State>(verdict: .linearizable)
    if n == 0 { return outcome }

    // Entries: (time, kind, op); kind 0 = call, 1 = return.
    var raw: [(time: UInt64, kind: UInt8, op: Int32)] = []
    raw.reserveCapacity(2 * n)
    var returns = 0
    for (i, op) in ops.enumerated() {
        raw.append((op.invoke, 0, Int32(i)))
        if !op.isPending, let r = op.returnTime {
            raw.append((max(r, op.invoke), 1, Int32(i)))
            returns += 1
        }
    }
    if returns == 0 { return outcome }
    raw.sort { a, b in
        if a.time != b.time { return a.time < b.time }
        if a.kind != b.kind { return a.kind < b.kind }
        return a.op < b.op
    }
    let count = raw.count
    let head = count
    var entryOp = [Int32](repeating: 0, count: count)
    var isCall = [Bool](repeating: false, count: count)
    var match = [Int32](repeating: -1, count: count)
    var callOf = [Int32](repeating: -1, count: n)
    for (e, r) in raw.enumerated() {
        entryOp[e] = r.op
        if r.kind == 0 {
            isCall[e] = true
            callOf[Int(r.op)] = Int32(e)
        } else {
            match[Int(callOf[Int(r.op)])] = Int32(e)
        }
    }
    var next = [Int32](repeating: -1, count: count + 1)
    var prev = [Int32](repeating: -1, count: count + 1)
    for e in 0..<count {
        next[e] = e + 1 < count ? Int32(e + 1) : -1
        prev[e] = e == 0 ? Int32(head) : Int32(e - 1)
    }
    next[head] = 0

    var zobrist = [UInt64](repeating: 0, count: n)
    var seed: UInt64 = 0x5EED_0F_CAFE
    for i in 0..<n { zobrist[i] = splitMix64(&seed) }

    var linearized = LinearizedSet(count: n)
    var state = model.initialState
    // Stack frame: the lifted call entry, the state before it, and the scan phase it was
    // lifted in (with the phase's stop entry), to resume the scan after backtracking.
    var stack: [(entry: Int32, state: M.State, pendingPhase: Bool, stop: Int32)] = []
    stack.reserveCapacity(n)
    var memo = Set<MemoKey<M.State>>()
    var remainingReturns = returns
    var entry = Int(next[head])
    // Candidate order: first the completed operations before the first return entry
    // `stop` (normal phase, forwards), then the pending ones before it (pending phase,
    // backwards from `stop`). Unknown-outcome operations are thus only applied when
    // needed; the order does not affect completeness.
    var pendingPhase = false
    var stop = -1
    var iterations = 0
    let clock = ContinuousClock()
    var bestDepth = 0
    if explain { outcome.bestState = state }
    var hasPending = [Bool](repeating: false, count: count)
    for e in 0..<count where isCall[e] && match[e] < 0 { hasPending[e] = true }

    func lift(_ e: Int) {
        let p = Int(prev[e]), nx = next[e]
        next[p] = nx
        if nx >= 0 { prev[Int(nx)] = Int32(p) }
        let m = Int(match[e])
        if m >= 0 {
            let pm = Int(prev[m]), nm = next[m]
            next[pm] = nm
            if nm >= 0 { prev[Int(nm)] = Int32(pm) }
        }
    }
    func unlift(_ e: Int) {
        let m = Int(match[e])
        if m >= 0 {
            next[Int(prev[m])] = Int32(m)
            if next[m] >= 0 { prev[Int(next[m])] = Int32(m) }
        }
        next[Int(prev[e])] = Int32(e)
        if next[e] >= 0 { prev[Int(next[e])] = Int32(e) }
    }

    while true {
        if remainingReturns == 0 {
            outcome.verdict = .linearizable
            outcome.states = memo.count
            return outcome
        }
        iterations &+= 1
        if iterations & 1023 == 0 {
            if clock.now >= deadline {
                outcome.verdict = .undecided("time limit reached after \(memo.count) memoized states (\(n) operations)")
                outcome.states = memo.count
                return outcome
            }
        }
        let atStop = pendingPhase ? entry == head : (entry < 0 || !isCall[entry])
        if !atStop {
            // A call entry: a candidate if it belongs to this phase.
            if hasPending[entry] == pendingPhase {
                let opIndex = Int(entryOp[entry])
                let op = ops[opIndex]
                let (ok, newState) = model.step(state, op.input, op.output)
                if ok {
                    linearized.toggle(opIndex, key: zobrist[opIndex])
                    if memo.insert(MemoKey(set: linearized, state: newState)).inserted {
                        if memo.count > maxStates {
                            outcome.verdict = .undecided("state limit of \(maxStates) memoized states reached (\(n) operations)")
                            outcome.states = memo.count
                            return outcome
                        }
                        stack.append((Int32(entry), state, pendingPhase, Int32(stop)))
                        state = newState
                        lift(entry)
                        if match[entry] >= 0 { remainingReturns -= 1 }
                        if explain && stack.count > bestDepth {
                            bestDepth = stack.count
                            outcome.bestPrefix = stack.map { Int(entryOp[Int($0.entry)]) }
                            outcome.bestState = state
                            outcome.blocker = nil
                        }
                        entry = Int(next[head])
                        pendingPhase = false
                        continue
                    }
                    linearized.toggle(opIndex, key: zobrist[opIndex])
                }
            }
            entry = pendingPhase ? Int(prev[entry]) : Int(next[entry])
            continue
        }
        if !pendingPhase {
            // Reached the first return entry: now try the pending operations before it,
            // latest invoked first (an operation that timed out usually took effect soon
            // after its invoke, if at all).
            pendingPhase = true
            stop = entry
            entry = stop >= 0 ? Int(prev[stop]) : head
            continue
        }
        // Pending phase exhausted too: the operation returning at `stop` cannot be
        // linearized in this configuration. Backtrack.
        if explain && outcome.blocker == nil && stack.count == bestDepth && stop >= 0 {
            outcome.blocker = Int(entryOp[stop])
        }
        guard let top = stack.popLast() else {
            outcome.verdict = .notLinearizable
            outcome.states = memo.count
            return outcome
        }
        let e = Int(top.entry)
        let opIndex = Int(entryOp[e])
        state = top.state
        linearized.toggle(opIndex, key: zobrist[opIndex])
        unlift(e)
        if match[e] >= 0 { remainingReturns += 1 }
        pendingPhase = top.pendingPhase
        stop = Int(top.stop)
        entry = pendingPhase ? Int(prev[e]) : Int(next[e])
    }
}
