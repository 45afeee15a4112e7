import FoundationEssentials

/// How linearizable reads are served.
public enum ReadOnlyOption: Sendable, Hashable {
    /// Confirm leadership with a heartbeat round to a quorum per read batch.
    case safe
    /// Trust the leader lease (needs check-quorum; depends on bounded clock drift).
    case leaseBased
}

/// The answer to a `readIndex` request: once the application has applied up
/// to `index`, a read tagged `requestContext` is linearizable.
public struct ReadState: Sendable, Hashable {
    public var index: UInt64
    public var requestContext: Data

    public init(index: UInt64, requestContext: Data) {
        self.index = index
        self.requestContext = requestContext
    }
}

/// A read waiting for its heartbeat round.
struct ReadIndexStatus {
    var request: Message
    var index: UInt64
    var acks: [NodeID: Bool]
}

/// Leader-side queue of read requests waiting for quorum confirmation.
struct ReadOnly {
    let option: ReadOnlyOption
    private var pending: [Data: ReadIndexStatus] = [:]
    private var queue: [Data] = []

    init(option: ReadOnlyOption) { self.option = option }

    /// Queues a read request (contexts must be unique; duplicates are ignored)
    /// at the commit index the leader had when it arrived.
    mutating func addRequest(index: UInt64, message: Message) {
        let ctx = message.entries[0].data
        if pending[ctx] != nil { return }
        pending[ctx] = ReadIndexStatus(request: message, index: index, acks: [:])
        queue.append(ctx)
    }

    /// Records that `id` acknowledged the heartbeat carrying `context`;
    /// returns the acks so far, or nil if the context is unknown.
    mutating func receiveAck(from id: NodeID, context: Data) -> [NodeID: Bool]? {
        guard pending[context] != nil else { return nil }
        pending[context]!.acks[id] = true
        return pending[context]!.acks
    }

    /// Removes and returns every request up to and including the one with
    /// `context`: a quorum confirming a later heartbeat confirms earlier ones.
    mutating func advance(through context: Data) -> [ReadIndexStatus] {
        guard let position = queue.firstIndex(of: context) else { return [] }
        var done: [ReadIndexStatus] = []
        done.reserveCapacity(position + 1)
        for ctx in queue[...position] {
            guard let rs = pending.removeValue(forKey: ctx) else {
                preconditionFailure("cannot find corresponding read state from pending map")
            }
            done.append(rs)
        }
        queue.removeFirst(position + 1)
        return done
    }

    var lastPendingRequestContext: Data? { queue.last }
}
