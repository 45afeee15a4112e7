/// Errors the library reports to its caller. Storage implementations throw
/// the storage cases; the state machine turns them into behaviour (for
/// example, `compacted` while building MsgApp means "send a snapshot").
public enum RaftError: Error, Sendable, Hashable {
    /// The proposal was not appended: no known leader, forwarding disabled,
    /// a leader transfer in progress, or the uncommitted-size budget exceeded.
    case proposalDropped
    /// Requested index is older than the storage's first index.
    case compacted
    /// A snapshot older than the storage's current one was offered.
    case snapshotOutOfDate
    /// Requested index is past the storage's last index.
    case unavailable
    /// Storage cannot produce a snapshot right now; raft retries later.
    case snapshotTemporarilyUnavailable
    /// A local-only message type (MsgHup, MsgBeat, ...) was passed to `step`.
    case stepLocalMessage
    /// A response arrived from a node that is not in the configuration.
    case stepPeerNotFound
    /// The configuration is invalid; the text says why.
    case invalidConfig(String)
    /// A membership change cannot be applied or decoded; the text says why.
    case invalidConfChange(String)
}
