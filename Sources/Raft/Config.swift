/// Parameters of a raft node. Times are in ticks: the application decides
/// how long a tick is.
public struct Config {
    /// This node's id; must not be 0.
    public var id: NodeID
    /// A follower that hears nothing for this many ticks starts an election;
    /// the actual timeout is randomised in [electionTick, 2 * electionTick).
    public var electionTick: Int
    /// A leader sends heartbeats every this many ticks.
    public var heartbeatTick: Int
    /// Where persisted entries, hard state and snapshots are read from.
    public var storage: any Storage
    /// The last applied index when restarting (entries up to it are not
    /// handed out again).
    public var applied: UInt64 = 0
    /// Upper bound on the size of entries in one MsgApp; 0 means one entry
    /// per message, `.max` means unlimited.
    public var maxSizePerMsgBytes: UInt64 = 1 << 20
    /// Upper bound on the size of committed entries handed out in one Ready;
    /// 0 means "same as maxSizePerMsgBytes".
    public var maxCommittedSizePerReadyBytes: UInt64 = 0
    /// How many MsgApp may be in flight to one follower in replicate state.
    public var maxInflightMsgs: Int = 256
    /// Proposals are dropped once uncommitted payload exceeds this; 0 = no limit.
    public var maxUncommittedEntriesSizeBytes: UInt64 = 0
    /// The leader steps down if it has not heard from a quorum within an
    /// election timeout; followers then also reject disruptive votes.
    public var checkQuorum = false
    /// Run a pre-election round before bumping the term (§9.6 of the thesis).
    public var preVote = false
    public var readOnlyOption: ReadOnlyOption = .safe
    /// Followers drop proposals instead of forwarding them to the leader.
    public var disableProposalForwarding = false
    /// A leader removed from the configuration steps down immediately.
    public var stepDownOnRemoval = false
    /// Seed for the election-timeout jitter. Give each node its own.
    public var randomSeed: UInt64 = 0
    /// How conf changes are encoded in entries.
    public var confChangeCodec: any ConfChangeCodec = ProtobufConfChangeCodec()

    public init(id: NodeID, electionTick: Int = 10, heartbeatTick: Int = 1, storage: any Storage) {
        self.id = id
        self.electionTick = electionTick
        self.heartbeatTick = heartbeatTick
        self.storage = storage
        self.randomSeed = id
    }

    func validate() throws(RaftError) {
        if id == noNode { throw .invalidConfig("cannot use none as id") }
        if heartbeatTick <= 0 { throw .invalidConfig("heartbeat tick must be greater than 0") }
        if electionTick <= heartbeatTick { throw .invalidConfig("election tick must be greater than heartbeat tick") }
        if maxInflightMsgs <= 0 { throw .invalidConfig("max inflight messages must be greater than 0") }
        if readOnlyOption == .leaseBased && !checkQuorum {
            throw .invalidConfig("checkQuorum must be enabled when readOnlyOption is leaseBased")
        }
    }
}

/// A small, fast, seeded generator (SplitMix64). Deterministic for a given
/// seed, which is what makes simulation runs replayable.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
