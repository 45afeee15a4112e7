import Auth
import EtcdGRPC
import EtcdProto
import EtcdServer
import GRPCWire

/// The Lock and Election services: every call acts as its caller (see
/// `RecipeKV`), in a task (they wait on other clients).
extension WireRouter {
    mutating func addLock(_ lock: LockService, member: Member) {
        unaryAsUser(V3lockpb_Lock.Method.Lock.descriptor, member, lock.lock(_:as:))
        unaryAsUser(V3lockpb_Lock.Method.Unlock.descriptor, member, lock.unlock(_:as:))
    }

    mutating func addElection(_ election: ElectionService, member: Member) {
        typealias Election = V3electionpb_Election.Method
        unaryAsUser(Election.Campaign.descriptor, member, election.campaign(_:as:))
        unaryAsUser(Election.Proclaim.descriptor, member, election.proclaim(_:as:))
        unaryAsUser(Election.Leader.descriptor, member, election.leader(_:as:))
        unaryAsUser(Election.Resign.descriptor, member, election.resign(_:as:))
        self["/" + Election.Observe.descriptor.fullyQualifiedMethod] = .streaming { call in
            let handler = BridgedStream<V3electionpb_LeaderRequest>(call: call)
            let identity = Result { () throws(EtcdError) -> AuthInfo? in try member.identity(of: call) }
            handler.start { requests, _ in
                let info = try identity.get()
                var iterator = requests.makeAsyncIterator()
                guard let request = try await iterator.next() else {
                    throw WireStatus.internalError("grpc: server-streaming call ended without a message")
                }
                let writer = WireWriter<V3electionpb_LeaderResponse>(call: call)
                try await election.observe(request, as: info) { try await writer.write($0) }
            }
            return handler
        }
    }
}
