import EtcdProto
import Foundation
import Locks

/// A one-shot signal that tasks can wait for.
final class DoneSignal: Sendable {
    private let state = Mutex<(done: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    var isDone: Bool { state.withLock { $0.done } }

    func fire() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            if s.done { return [] }
            s.done = true
            defer { s.waiters = [] }
            return s.waiters
        }
        waiters.forEach { $0.resume() }
    }

    func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let done = state.withLock { s -> Bool in
                if s.done { return true }
                s.waiters.append(c)
                return false
            }
            if done { c.resume() }
        }
    }
}

func hexID(_ id: Int64) -> String { String(UInt64(bitPattern: id), radix: 16) }

/// A lease kept alive in the background: the lifetime of locks, elections and registrations.
///
/// ```swift
/// let session = try await Session(client: client, ttl: 10)
/// defer { Task { try? await session.close() } }
/// ```
public final class Session: Sendable {
    public let client: EtcdClient
    /// The session's lease.
    public let leaseID: Int64
    /// The lease's TTL in seconds.
    public let ttl: Int64
    private let doneSignal = DoneSignal()
    private let keepAlive: Mutex<Task<Void, Never>?> = Mutex(nil)

    /// Grants a lease of `ttl` seconds (or adopts `leaseID`) and starts keeping it alive.
    public init(client: EtcdClient, ttl: Int64 = 60, leaseID: Int64 = 0) async throws {
        self.client = client
        if leaseID != 0 {
            self.leaseID = leaseID
            self.ttl = ttl
        } else {
            let grant = try await client.leaseGrant(ttl: ttl)
            self.leaseID = grant.id
            self.ttl = grant.ttl
        }
        let id = self.leaseID
        let signal = doneSignal
        let task = Task {
            do { for try await _ in client.leaseKeepAlive(id: id) {} } catch {}
            signal.fire()
        }
        keepAlive.withLock { $0 = task }
    }

    /// True once the lease expired or the session was closed.
    public var isDone: Bool { doneSignal.isDone }

    /// Waits until the session ends (lease expired, revoked, or closed).
    public func done() async { await doneSignal.wait() }

    /// Stops the keep-alive and revokes the lease (deleting the session's keys).
    public func close() async throws {
        orphan()
        try await client.leaseRevoke(id: leaseID)
    }

    /// Stops the keep-alive without revoking; the lease expires after its TTL.
    public func orphan() {
        keepAlive.withLock { $0 }?.cancel()
        doneSignal.fire()
    }
}

extension EtcdClient {
    /// Waits until every key under `prefix` created at or before `maxCreateRevision` is deleted.
    func waitDeletes(prefix: String, maxCreateRevision: Int64) async throws -> ResponseHeader {
        while true {
            var options = GetOptions(range: .prefix, limit: 1, sortOrder: .descend, sortTarget: .create)
            options.maxCreateRevision = maxCreateRevision
            let response = try await get(prefix, options: options)
            guard let last = response.kvs.first else { return response.header }
            try await waitDelete(key: last.key, revision: response.header.revision)
        }
    }

    /// Waits for a delete of `key` after `revision`.
    func waitDelete(key: Data, revision: Int64) async throws {
        let watch = try await self.watch(key, options: WatchOptions(startRevision: revision, noPut: true))
        defer { watch.cancel() }
        for try await response in watch where response.events.contains(where: { $0.type == .delete }) {
            return
        }
        throw EtcdClientError.canceled
    }
}

/// A distributed lock (etcd's `concurrency.Mutex`): waiters queue in key-creation order.
///
/// Holding the lock means owning the oldest key under the lock's prefix; the
/// key's create revision (``revision``) is a fencing token that grows with
/// every new holder. The lock is released by ``unlock()`` or when the session ends.
public final class EtcdMutex: Sendable {
    public let session: Session
    /// The lock's prefix (name + "/").
    public let prefix: String
    private let state = Mutex<(key: String, revision: Int64, header: ResponseHeader)>(("", 0, ResponseHeader()))

    public init(session: Session, name: String) {
        self.session = session
        prefix = name + "/"
    }

    /// This holder's key (`prefix` + lease ID in hex).
    public var key: String { state.withLock { $0.key } }
    /// The fencing token: the create revision of ``key`` (0 before locking).
    public var revision: Int64 { state.withLock { $0.revision } }
    /// The header of the response that granted the lock.
    public var header: ResponseHeader { state.withLock { $0.header } }

    private func enqueue() async throws -> (owner: Bool, response: TxnResponse) {
        let client = session.client
        let myKey = prefix + hexID(session.leaseID)
        let firstCreate = GetOptions(range: .prefix, limit: 1, sortOrder: .ascend, sortTarget: .create)
        let response = try await client.txn(Txn()
            .when(.createRevision(myKey, .equal, 0))
            .then(.put(myKey, "", options: PutOptions(lease: session.leaseID)), .get(prefix, options: firstCreate))
            .orElse(.get(myKey), .get(prefix, options: firstCreate)))
        var myRevision = response.header.revision
        if !response.succeeded, case let .responseRange(own)? = response.responses.first?.response, let kv = own.kvs.first {
            myRevision = kv.createRevision
        }
        state.withLock { $0 = (myKey, myRevision, response.header) }
        var ownerRevision: Int64?
        if response.responses.count > 1, case let .responseRange(owner)? = response.responses[1].response {
            ownerRevision = owner.kvs.first?.createRevision
        }
        return (ownerRevision == nil || ownerRevision == myRevision, response)
    }

    /// Acquires the lock, waiting for earlier holders.
    public func lock() async throws {
        let client = session.client
        let (owner, _) = try await enqueue()
        if owner { return }
        do {
            let header = try await client.waitDeletes(prefix: prefix, maxCreateRevision: revision - 1)
            let mine = try await client.get(key)
            if mine.kvs.isEmpty { throw EtcdClientError.sessionExpired }
            state.withLock { $0.header = header }
        } catch {
            // Leave the queue even when cancelled: run the delete in a task of its own.
            let myKey = key
            _ = await Task { try? await client.delete(myKey) }.value
            throw EtcdClientError(error)
        }
    }

    /// Acquires the lock only if it is free; returns false (and leaves no key) otherwise.
    public func tryLock() async throws -> Bool {
        let (owner, _) = try await enqueue()
        if owner { return true }
        try await session.client.delete(key)
        state.withLock { $0.revision = 0 }
        return false
    }

    /// Releases the lock.
    public func unlock() async throws {
        let myKey = key
        guard !myKey.isEmpty else { return }
        try await session.client.delete(myKey)
        state.withLock { $0 = ("", 0, $0.header) }
    }
}

/// Leader election (etcd's `concurrency.Election`).
///
/// Candidates queue under the election's prefix by key creation; the oldest
/// key is the leader and its value is the leader's proclamation.
public final class Election: Sendable {
    public let session: Session
    /// The election's prefix (name + "/").
    public let prefix: String
    private let state = Mutex<(key: String, revision: Int64, header: ResponseHeader)>(("", 0, ResponseHeader()))

    public init(session: Session, name: String) {
        self.session = session
        prefix = name + "/"
    }

    /// Our candidate key while campaigning or leading ("" otherwise).
    public var key: String { state.withLock { $0.key } }
    /// Our key's create revision.
    public var revision: Int64 { state.withLock { $0.revision } }
    /// The header of the response that made us leader.
    public var header: ResponseHeader { state.withLock { $0.header } }

    /// Campaigns with `value` and returns once elected.
    public func campaign(_ value: some EtcdBytes) async throws {
        let client = session.client
        let myKey = prefix + hexID(session.leaseID)
        let response = try await client.txn(Txn()
            .when(.createRevision(myKey, .equal, 0))
            .then(.put(myKey, value, options: PutOptions(lease: session.leaseID)))
            .orElse(.get(myKey)))
        var myRevision = response.header.revision
        state.withLock { $0 = (myKey, myRevision, response.header) }
        if !response.succeeded, case let .responseRange(own)? = response.responses.first?.response, let kv = own.kvs.first {
            myRevision = kv.createRevision
            state.withLock { $0.revision = myRevision }
            if kv.value != value.etcdBytes {
                do { try await proclaim(value) } catch {
                    try? await resign()
                    throw error
                }
            }
        }
        do {
            let header = try await client.waitDeletes(prefix: prefix, maxCreateRevision: myRevision - 1)
            state.withLock { $0.header = header }
        } catch {
            _ = await Task { try? await self.resign() }.value
            throw EtcdClientError(error)
        }
    }

    /// Changes the leader's value without a new election.
    /// - Throws: ``EtcdClientError/electionNotLeader`` when we are not the leader.
    public func proclaim(_ value: some EtcdBytes) async throws {
        let (myKey, myRevision, _) = state.withLock { $0 }
        guard !myKey.isEmpty else { throw EtcdClientError.electionNotLeader }
        let response = try await session.client.txn(Txn()
            .when(.createRevision(myKey, .equal, myRevision))
            .then(.put(myKey, value, options: PutOptions(lease: session.leaseID))))
        if !response.succeeded {
            state.withLock { $0.key = "" }
            throw EtcdClientError.electionNotLeader
        }
    }

    /// Gives up leadership (or candidacy).
    public func resign() async throws {
        let (myKey, myRevision, _) = state.withLock { $0 }
        guard !myKey.isEmpty else { return }
        let response = try await session.client.txn(Txn()
            .when(.createRevision(myKey, .equal, myRevision))
            .then(.delete(myKey)))
        state.withLock { $0 = ("", 0, response.header) }
    }

    /// The current leader's key-value.
    /// - Throws: ``EtcdClientError/electionNoLeader`` when nobody leads.
    public func leader() async throws -> RangeResponse {
        let response = try await session.client.get(prefix, options: GetOptions(range: .prefix, limit: 1, sortOrder: .ascend, sortTarget: .create))
        if response.kvs.isEmpty { throw EtcdClientError.electionNoLeader }
        return response
    }

    /// Every leader (and every proclamation) in turn, starting with the
    /// current one. As with Go's `Observe`, the newest value is always
    /// delivered; an observer that falls more than
    /// ``Election/observedBuffer`` values behind skips the oldest of them.
    public func observe() -> AsyncThrowingStream<RangeResponse, any Error> {
        Election.observe(client: session.client, prefix: prefix)
    }

    /// Observes an election without a session.
    public static func observe(client: EtcdClient, name: String) -> AsyncThrowingStream<RangeResponse, any Error> {
        observe(client: client, prefix: name + "/")
    }

    /// How many values an observer that does not keep up may fall behind.
    public static let observedBuffer = 16

    static func observe(client: EtcdClient, prefix: String) -> AsyncThrowingStream<RangeResponse, any Error> {
        let (stream, continuation) = AsyncThrowingStream<RangeResponse, any Error>.makeLatest(keeping: observedBuffer)
        let task = Task {
            do {
                let firstCreate = GetOptions(range: .prefix, limit: 1, sortOrder: .ascend, sortTarget: .create)
                while !Task.isCancelled {
                    var response = try await client.get(prefix, options: firstCreate)
                    if response.kvs.isEmpty {
                        // Wait for a first candidate.
                        let watch = try await client.watch(prefix, options: WatchOptions(range: .prefix, startRevision: response.header.revision + 1, noDelete: true))
                        var found: KeyValue?
                        for try await batch in watch {
                            if let event = batch.events.first(where: { $0.type == .put }) { found = event.kv; response.header = batch.header; break }
                        }
                        watch.cancel()
                        guard let kv = found else { break }
                        // The first put may not be the oldest candidate; re-read.
                        _ = kv
                        continue
                    }
                    let leader = response.kvs[0]
                    continuation.yield(response)
                    let watch = try await client.watch(leader.key, options: WatchOptions(startRevision: response.header.revision + 1))
                    var lastValue = leader.value
                    outer: for try await batch in watch {
                        for event in batch.events {
                            if event.type == .delete { break outer }
                            if event.kv.value != lastValue {
                                lastValue = event.kv.value
                                var update = RangeResponse()
                                update.header = batch.header
                                update.kvs = [event.kv]
                                update.count = 1
                                continuation.yield(update)
                            }
                        }
                    }
                    watch.cancel()
                }
                continuation.finish()
            } catch {
                continuation.finish(throwing: EtcdClientError(error))
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }
}

/// A software-transactional-memory transaction: reads are recorded, writes buffered.
public final class STMTransaction: Sendable {
    let client: EtcdClient
    private let state = Mutex<(reads: [Data: (value: Data?, modRevision: Int64)], writes: [Data: Data?], order: [Data])>(([:], [:], []))

    init(client: EtcdClient) { self.client = client }

    /// The value of `key` as this transaction sees it (its own writes included); nil when absent.
    public func get(_ key: some EtcdBytes) async throws -> Data? {
        let k = key.etcdBytes
        if let written = state.withLock({ $0.writes[k] }) { return written }
        if let read = state.withLock({ $0.reads[k] }) { return read.value }
        let response = try await client.get(k)
        let kv = response.kvs.first
        state.withLock { $0.reads[k] = (kv?.value, kv?.modRevision ?? 0) }
        return kv?.value
    }

    /// `get` decoded as UTF-8.
    public func getString(_ key: some EtcdBytes) async throws -> String? {
        try await get(key).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Buffers a write.
    public func put(_ key: some EtcdBytes, _ value: some EtcdBytes) {
        let k = key.etcdBytes, v = value.etcdBytes
        state.withLock { s in
            if s.writes[k] == nil { s.order.append(k) }
            s.writes[k] = .some(v)
        }
    }

    /// Buffers a delete.
    public func delete(_ key: some EtcdBytes) {
        let k = key.etcdBytes
        state.withLock { s in
            if s.writes[k] == nil { s.order.append(k) }
            s.writes[k] = .some(nil)
        }
    }

    func commitTxn() -> Txn {
        state.withLock { s in
            let compares = s.reads.map { key, read in Compare.modRevision(key, .equal, read.modRevision) }
            let ops: [Op] = s.order.map { key in
                if case let .some(.some(value)) = s.writes[key] { return Op.put(key, value) }
                return Op.delete(key)
            }
            return Txn().when(compares).then(ops)
        }
    }
}

extension EtcdClient {
    /// Runs `apply` as a serializable transaction, retrying when another writer changed what it read.
    ///
    /// ```swift
    /// try await client.stm { tx in
    ///     let a = Int(try await tx.getString("a") ?? "0")!
    ///     tx.put("a", String(a + 1))
    /// }
    /// ```
    /// - Throws: ``EtcdClientError/stmConflict`` after `retries` conflicting attempts.
    @discardableResult
    public func stm(retries: Int = 20, _ apply: @Sendable (STMTransaction) async throws -> Void) async throws -> TxnResponse {
        for _ in 0..<max(1, retries) {
            let transaction = STMTransaction(client: self)
            try await apply(transaction)
            let response = try await txn(transaction.commitTxn())
            if response.succeeded { return response }
        }
        throw EtcdClientError.stmConflict
    }
}

/// One registered instance of a service.
public struct ServiceEndpoint: Sendable, Equatable, Hashable {
    /// The etcd key (`service/address`).
    public var key: String
    /// The instance's address.
    public var address: String
    /// Free-form metadata (JSON text), if any.
    public var metadata: String?
}

/// Service registration and discovery: instances register under `service/`
/// with a session's lease (they vanish when the process dies); clients watch
/// the prefix as a live list.
///
/// Values use the JSON shape of etcd's Go naming resolver:
/// `{"Op":0,"Addr":"10.0.0.1:8080","Metadata":...}`.
public struct ServiceRegistry: Sendable {
    public let client: EtcdClient
    public let service: String

    public init(client: EtcdClient, service: String) {
        self.client = client
        self.service = service
    }

    private var prefix: String { service.hasSuffix("/") ? service : service + "/" }

    /// Registers `address` under the session's lease.
    public func register(address: String, metadata: String? = nil, session: Session) async throws {
        var value = "{\"Op\":0,\"Addr\":" + goJSONString(address)
        value += ",\"Metadata\":" + (metadata ?? "null") + "}"
        try await client.put(prefix + address, value, options: PutOptions(lease: session.leaseID))
    }

    /// Removes a registration.
    public func unregister(address: String) async throws {
        try await client.delete(prefix + address)
    }

    /// The currently registered endpoints.
    public func endpoints() async throws -> [ServiceEndpoint] {
        let response = try await client.get(prefix, options: .prefix)
        return response.kvs.compactMap(Self.decode).sorted { $0.key < $1.key }
    }

    /// The endpoint list now and after every change. Each list is whole, so
    /// a consumer that falls behind gets only the newest one.
    public func watchEndpoints() -> AsyncThrowingStream<[ServiceEndpoint], any Error> {
        let (stream, continuation) = AsyncThrowingStream<[ServiceEndpoint], any Error>.makeLatest(keeping: 1)
        let client = self.client, prefix = self.prefix
        let task = Task {
            do {
                let initial = try await client.get(prefix, options: .prefix)
                var current: [String: ServiceEndpoint] = [:]
                for kv in initial.kvs { if let e = Self.decode(kv) { current[e.key] = e } }
                continuation.yield(current.values.sorted { $0.key < $1.key })
                let watch = try await client.watch(prefix, options: WatchOptions(range: .prefix, startRevision: initial.header.revision + 1))
                for try await batch in watch {
                    for event in batch.events {
                        let key = String(decoding: event.kv.key, as: UTF8.self)
                        if event.type == .delete { current[key] = nil } else if let e = Self.decode(event.kv) { current[key] = e }
                    }
                    if !batch.events.isEmpty { continuation.yield(current.values.sorted { $0.key < $1.key }) }
                }
                continuation.finish()
            } catch {
                continuation.finish(throwing: EtcdClientError(error))
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    static func decode(_ kv: KeyValue) -> ServiceEndpoint? {
        let key = String(decoding: kv.key, as: UTF8.self)
        guard let object = try? JSONSerialization.jsonObject(with: kv.value) as? [String: Any],
              let address = object["Addr"] as? String else {
            return ServiceEndpoint(key: key, address: String(decoding: kv.value, as: UTF8.self), metadata: nil)
        }
        var metadata: String?
        if let m = object["Metadata"], !(m is NSNull),
           let data = try? JSONSerialization.data(withJSONObject: m, options: [.fragmentsAllowed]) {
            metadata = String(decoding: data, as: UTF8.self)
        }
        return ServiceEndpoint(key: key, address: address, metadata: metadata)
    }
}

extension AsyncThrowingStream where Failure == any Error {
    /// A stream whose buffer holds the newest `count` elements: a recipe's
    /// producer never waits for its consumer, and never holds more than
    /// this for one that stopped reading.
    static func makeLatest(keeping count: Int) -> (stream: Self, continuation: Continuation) {
        makeStream(bufferingPolicy: .bufferingNewest(count))
    }
}

/// A JSON string literal escaped as Go's encoding/json escapes it (HTML
/// characters and U+2028/2029 too), so records read by Go programs and
/// etcdctl's json output match byte for byte.
package func goJSONString(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case "<": out += "\\u003c"
        case ">": out += "\\u003e"
        case "&": out += "\\u0026"
        case "\u{2028}": out += "\\u2028"
        case "\u{2029}": out += "\\u2029"
        default:
            if scalar.value < 0x20 { out += String(format: "\\u%04x", scalar.value) } else { out.unicodeScalars.append(scalar) }
        }
    }
    return out + "\""
}
