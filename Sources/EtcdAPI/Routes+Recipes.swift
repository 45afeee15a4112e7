import Auth
import EtcdGRPC
import EtcdProto
import EtcdServer
import GRPCWire

/// The Lock and Election services: every call acts as its caller (see
/// `RecipeKV`), in a task (they wait on other clients).
///
/// etcd serves them over its in-process client, whose errors are not gRPC
/// statuses: every error reaches the caller as UNKNOWN with its message
/// ("etcdserver: requested lease not found", "election: no leader"), as
/// `recipeErrors` reports them.
extension WireRouter {
    mutating func addLock(_ lock: LockService, member: Member) {
        unaryAsUser(V3lockpb_Lock.Method.Lock.descriptor, member, recipeErrors(lock.lock(_:as:)))
        unaryAsUser(V3lockpb_Lock.Method.Unlock.descriptor, member, recipeErrors(lock.unlock(_:as:)))
    }

    mutating func addElection(_ election: ElectionService, member: Member) {
        typealias Election = V3electionpb_Election.Method
        unaryAsUser(Election.Campaign.descriptor, member, recipeErrors(election.campaign(_:as:)))
        unaryAsUser(Election.Proclaim.descriptor, member, recipeErrors(election.proclaim(_:as:)))
        unaryAsUser(Election.Leader.descriptor, member, recipeErrors(election.leader(_:as:)))
        unaryAsUser(Election.Resign.descriptor, member, recipeErrors(election.resign(_:as:)))
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
                try await recipeErrors { try await election.observe(request, as: info) { try await writer.write($0) } }
            }
            return handler
        }
    }
}

/// A recipe call's errors as etcd's in-process client hands them on: UNKNOWN
/// with the message (a cancelled call stays CANCELLED).
private func recipeErrors<Request, Response>(
    _ body: @escaping @Sendable (Request, AuthInfo?) async throws -> Response
) -> @Sendable (Request, AuthInfo?) async throws -> Response {
    { request, info in try await recipeErrors { try await body(request, info) } }
}

private func recipeErrors<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as EtcdError where error.code != .canceled {
        throw EtcdError(.unknown, error.message)
    }
}
