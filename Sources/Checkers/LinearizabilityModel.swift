// Generic vocabulary of the linearizability checker: operations, models, results.

/// One operation of a concurrent history, as observed by a client.
///
/// `invoke` and `returnTime` are readings of one monotonic clock (for example
/// nanoseconds). An operation whose outcome is unknown (a timeout, a dropped
/// connection) has `returnTime == nil` and `output == nil`: it may have taken effect
/// at any point after `invoke`, or never.
public struct HistoryOperation<Input, Output> {
    /// Caller-chosen identifier; `check` fills `nil` ids with the operation's index in
    /// the history it was given, so results can be traced back.
    public var id: Int?
    public var clientID: Int
    public var invoke: UInt64
    /// `nil`: unknown outcome (treated as returning at +infinity).
    public var returnTime: UInt64?
    public var input: Input
    /// `nil` for an operation with unknown outcome. An operation with a return time
    /// but no output is treated as having an unknown outcome as well.
    public var output: Output?

    public init(id: Int? = nil, clientID: Int, invoke: UInt64, returnTime: UInt64?, input: Input, output: Output?) {
        self.id = id
        self.clientID = clientID
        self.invoke = invoke
        self.returnTime = returnTime
        self.input = input
        self.output = output
    }

    /// True when the outcome is unknown (no return, or no output).
    public var isPending: Bool { returnTime == nil || output == nil }

    /// The same operation with its outcome forgotten (it may or may not have happened).
    public func asPending() -> HistoryOperation {
        var op = self
        op.returnTime = nil
        op.output = nil
        return op
    }
}

extension HistoryOperation: Sendable where Input: Sendable, Output: Sendable {}
extension HistoryOperation: Equatable where Input: Equatable, Output: Equatable {}
extension HistoryOperation: Hashable where Input: Hashable, Output: Hashable {}

/// A sequential specification that histories are checked against.
///
/// `step` must be deterministic. It is called with `output == nil` for an operation
/// whose outcome is unknown: it then returns the state as if the operation had taken
/// effect at this point, with `ok: true` -- or `ok: false` when taking effect here is
/// impossible, or would change nothing (leaving the operation out altogether is
/// explored by the checker itself, so such a step is redundant).
public protocol LinearizabilityModel {
    associatedtype State: Hashable
    associatedtype Input
    associatedtype Output

    /// The state before any operation.
    var initialState: State { get }

    /// Applies `input` to `state`; `ok` tells whether `output` is a legal response in
    /// that state. `newState` is ignored when `ok` is false.
    func step(_ state: State, _ input: Input, _ output: Output?) -> (ok: Bool, newState: State)

    /// Splits a history into independent sub-histories that are checked one by one
    /// (the history is linearizable iff each part is, *for this model*). The default
    /// returns the whole history as one part.
    func partition(_ history: [HistoryOperation<Input, Output>]) -> [[HistoryOperation<Input, Output>]]

    /// The model used to check arbitrary sub-histories while shrinking a failing
    /// history. Requirements: it accepts every sub-history of a history this model
    /// accepts, and whatever it rejects this model rejects too (it is a relaxation).
    /// The default is `self`, which is right for models without counters that couple
    /// operations (e.g. `RegisterModel`); `KVModel` returns a variant that tolerates the
    /// revision gaps left behind by removed writes.
    func subhistoryModel() -> Self

    /// A short description of the model and its options (used in explanations).
    func describeModel() -> String

    /// Whether applying `input` can change the state. Unknown-outcome operations that
    /// cannot (reads) are dropped before checking: they constrain nothing, but each would
    /// double the search space. Default: true.
    func mayChangeState(_ input: Input) -> Bool

    /// The model to use for searching `history` (called once per search). Lets a model
    /// precompute facts about the history that prune the search. Default: `self`.
    func prepared(for history: [HistoryOperation<Input, Output>]) -> Self

    /// Human-readable rendering of one operation (used in explanations).
    func describe(_ operation: HistoryOperation<Input, Output>) -> String

    /// Human-readable rendering of a state (used in explanations).
    func describe(state: State) -> String
}

extension LinearizabilityModel {
    public func partition(_ history: [HistoryOperation<Input, Output>]) -> [[HistoryOperation<Input, Output>]] {
        [history]
    }

    public func subhistoryModel() -> Self { self }

    public func prepared(for history: [HistoryOperation<Input, Output>]) -> Self { self }

    public func mayChangeState(_ input: Input) -> Bool { true }

    public func describe(_ operation: HistoryOperation<Input, Output>) -> String {
        defaultDescription(of: operation, input: "\(operation.input)",
                           output: operation.output.map { "\($0)" })
    }

    public func describe(state: State) -> String { "\(state)" }

    public func describeModel() -> String { "\(Self.self)" }
}

/// Renders `#id [client c] input -> output  @[invoke, return]`.
func defaultDescription<I, O>(of op: HistoryOperation<I, O>, input: String, output: String?) -> String {
    let id = op.id.map { "#\($0)" } ?? "#?"
    let ret = op.returnTime.map { "\($0)" } ?? "∞"
    let out = op.isPending ? "<unknown outcome>" : (output ?? "<none>")
    return "\(id) [client \(op.clientID)] \(input) -> \(out)  @[\(op.invoke), \(ret)]"
}

/// Outcome of a linearizability check.
public enum LinearizabilityResult<Input, Output> {
    /// A linearization was found (for every partition).
    case linearizable
    /// No linearization exists. `minimalFailingSubhistory` is a (greedily) shrunk set of
    /// operations that is by itself not linearizable; `explanation` is human-readable.
    case notLinearizable(minimalFailingSubhistory: [HistoryOperation<Input, Output>], explanation: String)
    /// The search hit a time or state limit before deciding. Never a pass.
    case undecided(reason: String)

    public var isLinearizable: Bool {
        if case .linearizable = self { return true }
        return false
    }

    public var isNotLinearizable: Bool {
        if case .notLinearizable = self { return true }
        return false
    }

    public var isUndecided: Bool {
        if case .undecided = self { return true }
        return false
    }

    /// The minimal failing sub-history, when not linearizable.
    public var minimalFailingSubhistory: [HistoryOperation<Input, Output>]? {
        if case .notLinearizable(let ops, _) = self { return ops }
        return nil
    }

    /// The explanation (not linearizable) or the reason (undecided).
    public var explanation: String? {
        switch self {
        case .linearizable: return nil
        case .notLinearizable(_, let text): return text
        case .undecided(let reason): return reason
        }
    }
}

extension LinearizabilityResult: Sendable where Input: Sendable, Output: Sendable {}
