// The Raft consensus library: see RawNode.
