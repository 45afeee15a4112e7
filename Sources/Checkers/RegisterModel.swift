// A map of independent registers: per-key values only, no revisions. Because keys do
// not interact, a history is linearizable iff each key's sub-history is (linearizability
// is local), so per-key partitioning is sound and complete here -- unlike for `KVModel`,
// whose global revision counter couples keys.

public struct RegisterModel: LinearizabilityModel, Sendable {
    public enum Input: Hashable, Sendable, CustomStringConvertible {
        case read(key: String)
        case write(key: String, value: String)
        /// Compare-and-set; `expected == nil` means "the key is absent".
        case cas(key: String, expected: String?, new: String)
        /// Deletes the key.
        case delete(key: String)

        public var key: String {
            switch self {
            case .read(let k), .write(let k, _), .cas(let k, _, _), .delete(let k): return k
            }
        }

        public var description: String {
            switch self {
            case .read(let k): return "read(\(k))"
            case .write(let k, let v): return "write(\(k)=\(v))"
            case .cas(let k, let e, let n): return "cas(\(k): \(e ?? "<absent>") -> \(n))"
            case .delete(let k): return "delete(\(k))"
            }
        }
    }

    public enum Output: Hashable, Sendable, CustomStringConvertible {
        /// The value read (nil: absent).
        case read(String?)
        case written
        case cas(succeeded: Bool)
        case deleted

        public var description: String {
            switch self {
            case .read(let v): return v ?? "<absent>"
            case .written: return "ok"
            case .cas(let ok): return ok ? "swapped" : "not swapped"
            case .deleted: return "ok"
            }
        }
    }

    /// Current values; absent keys are not stored.
    public typealias State = [String: String]

    public var partitionByKey: Bool

    public init(partitionByKey: Bool = true) {
        self.partitionByKey = partitionByKey
    }

    public var initialState: State { [:] }

    public func step(_ state: State, _ input: Input, _ output: Output?) -> (ok: Bool, newState: State) {
        var s = state
        switch input {
        case .read(let k):
            guard let output else { return (true, state) }
            guard case .read(let v) = output else { return (false, state) }
            return (v == state[k], state)
        case .write(let k, let v):
            if let output, output != .written { return (false, state) }
            s[k] = v
            return (true, s)
        case .delete(let k):
            if let output, output != .deleted { return (false, state) }
            s[k] = nil
            return (true, s)
        case .cas(let k, let expected, let new):
            let swaps = state[k] == expected
            if let output {
                guard case .cas(let ok) = output, ok == swaps else { return (false, state) }
            }
            if swaps { s[k] = new }
            return (true, s)
        }
    }

    public func mayChangeState(_ input: Input) -> Bool {
        if case .read = input { return false }
        return true
    }

    public func partition(_ history: [HistoryOperation<Input, Output>]) -> [[HistoryOperation<Input, Output>]] {
        guard partitionByKey else { return [history] }
        var order: [String] = []
        var parts: [String: [HistoryOperation<Input, Output>]] = [:]
        for op in history {
            let k = op.input.key
            if parts[k] == nil { order.append(k) }
            parts[k, default: []].append(op)
        }
        return order.map { parts[$0]! }
    }

    public func describe(_ operation: HistoryOperation<Input, Output>) -> String {
        defaultDescription(of: operation, input: operation.input.description,
                           output: operation.output?.description)
    }

    public func describe(state: State) -> String {
        "{" + state.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ") + "}"
    }

    public func describeModel() -> String {
        "RegisterModel(\(partitionByKey ? "partitioned by key" : "one partition"))"
    }
}
