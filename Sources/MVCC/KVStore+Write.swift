import Backend
import EtcdProto
import Foundation

/// The state of one write request while it is applied.
struct WriteContext {
    /// The store revision before the request.
    let beginRevision: Int64
    /// Changes made so far; the next change gets `sub = changes`.
    var changes = 0
    var events: [Mvccpb_Event] = []
    /// False for read-only txns served outside the writer.
    let canWrite: Bool

    /// The revision every change of this request gets.
    var revision: Int64 { beginRevision + 1 }
    /// The revision reads inside the request see (its own changes included).
    var readRevision: Int64 { changes > 0 ? beginRevision + 1 : beginRevision }
}

/// The branch a txn takes: whether its compares held, and the same for
/// each nested txn on that branch, in order.
struct TxnPath {
    var succeeded: Bool
    var nested: [TxnPath]
}

extension KVStore {
    // MARK: - Public write API (writer thread)

    /// etcd's Put. `leaseExists` answers whether a lease id is granted; a
    /// put naming an unknown lease fails with `leaseNotFound` before anything
    /// else is checked, as in etcd.
    public func put(
        _ request: Etcdserverpb_PutRequest, leaseExists: (Int64) -> Bool = { _ in true }
    ) throws(MVCCError) -> WriteResult<Etcdserverpb_PutResponse> {
        try RequestValidation.check(request)
        if request.lease != 0 && !leaseExists(request.lease) { throw .leaseNotFound }
        return try write { context, tx in try applyPut(request, &context, tx) }
    }

    /// Deletes `keys` (those that exist) in one revision: how a lease revoke
    /// removes its keys. Keys that do not exist are skipped.
    public func deleteKeys(_ keys: [Data]) throws(MVCCError) -> WriteResult<Int64> {
        try write { context, tx in
            var deleted: Int64 = 0
            for key in keys where !key.isEmpty {
                var request = Etcdserverpb_DeleteRangeRequest()
                request.key = key
                deleted += try applyDelete(request, &context, tx).deleted
            }
            return deleted
        }
    }

    /// etcd's DeleteRange.
    public func deleteRange(
        _ request: Etcdserverpb_DeleteRangeRequest
    ) throws(MVCCError) -> WriteResult<Etcdserverpb_DeleteRangeResponse> {
        try RequestValidation.check(request)
        return try write { context, tx in try applyDelete(request, &context, tx) }
    }

    /// etcd's Txn: compares, then the success or failure ops (nested txns
    /// included) as one revision. Checks the request first (operation count,
    /// empty keys, duplicate writes), then the ops on the chosen branch
    /// (`ignore_*` on missing keys, range revisions), and fails as a whole
    /// without changes if any check fails.
    public func txn(
        _ request: Etcdserverpb_TxnRequest, leaseExists: (Int64) -> Bool = { _ in true }
    ) throws(MVCCError) -> WriteResult<Etcdserverpb_TxnResponse> {
        try RequestValidation.check(request, maxOperations: config.maxTxnOps)
        return try write { context, tx in try applyTxn(request, &context, tx, leaseExists: leaseExists) }
    }

    /// A txn whose ops are all ranges (nested txns included), served as a
    /// read on any thread. Use `txn` for anything that may write.
    public func readOnlyTxn(_ request: Etcdserverpb_TxnRequest) throws(MVCCError) -> Etcdserverpb_TxnResponse {
        try RequestValidation.check(request, maxOperations: config.maxTxnOps)
        precondition(KVStore.isReadOnly(request), "readOnlyTxn needs a txn without writes")
        lock.readLock()
        defer { lock.unlock() }
        var context = WriteContext(beginRevision: currentRev, canWrite: false)
        do {
            return try backend.read { tx in try applyTxn(request, &context, tx, leaseExists: { _ in true }) }
        } catch {
            throw KVStore.mvccError(error)
        }
    }

    /// Whether a txn only reads, whichever branch it takes.
    public static func isReadOnly(_ request: Etcdserverpb_TxnRequest) -> Bool {
        (request.success + request.failure).allSatisfy { op in
            switch op.request {
            case .requestRange?: return true
            case .requestTxn(let nested)?: return isReadOnly(nested)
            default: return false
            }
        }
    }

    // MARK: - Write plumbing

    private func write<R: Sendable>(
        _ body: (inout WriteContext, ReadTx) throws -> R
    ) throws(MVCCError) -> WriteResult<R> {
        if let failure { throw .backend(failure) }
        lock.writeLock()
        defer { lock.unlock() }
        var context = WriteContext(beginRevision: currentRev, canWrite: true)
        do {
            let response = try backend.withWriteView { tx in try body(&context, tx) }
            if context.changes > 0 { currentRev += 1 }
            return WriteResult(response: response, events: context.events, revision: currentRev)
        } catch {
            let mapped = KVStore.mvccError(error)
            if case .backend(let backendError) = mapped {
                failure = backendError
            } else if context.changes > 0 {
                failure = .lmdb(operation: "write request", code: 0, message: "aborted after partial changes: \(mapped)")
            }
            throw mapped
        }
    }

    /// The current entry of `key` at the request's read revision.
    private func current(_ key: [UInt8], _ context: WriteContext, _ tx: ReadTx) throws -> Mvccpb_KeyValue? {
        guard let found = index.get(key)?.get(at: context.readRevision) else { return nil }
        return try fetch(found.modified, tx)
    }

    func applyPut(
        _ request: Etcdserverpb_PutRequest, _ context: inout WriteContext, _ tx: ReadTx
    ) throws -> Etcdserverpb_PutResponse {
        let key = byteArray(request.key)
        let needsPrevious = request.ignoreValue || request.ignoreLease || request.prevKv || config.eventsIncludePrevKv
        let previous = needsPrevious ? try current(key, context, tx) : nil
        if (request.ignoreValue || request.ignoreLease) && previous == nil {
            throw MVCCError.keyNotFound
        }
        var response = Etcdserverpb_PutResponse()
        if request.prevKv, let previous { response.prevKv = previous }

        let revision = Revision(main: context.revision, sub: Int64(context.changes))
        let keyIndex = index.getOrInsert(key) { KeyIndex(key: key) }
        let existing = keyIndex.get(at: context.revision)
        var kv = Mvccpb_KeyValue()
        kv.key = request.key
        kv.value = request.ignoreValue ? previous!.value : request.value
        kv.lease = request.ignoreLease ? previous!.lease : request.lease
        kv.createRevision = existing?.created.main ?? context.revision
        kv.modRevision = context.revision
        kv.version = (existing?.version ?? 0) + 1

        try backend.put(.key, key: RevisionKey.encode(revision), value: KeyValueCodec.encode(kv))
        keyIndex.put(revision)
        context.changes += 1

        var event = Mvccpb_Event()
        event.type = .put
        event.kv = kv
        if config.eventsIncludePrevKv, let previous { event.prevKv = previous }
        context.events.append(event)

        response.header.revision = context.revision
        return response
    }

    func applyDelete(
        _ request: Etcdserverpb_DeleteRangeRequest, _ context: inout WriteContext, _ tx: ReadTx
    ) throws -> Etcdserverpb_DeleteRangeResponse {
        var response = Etcdserverpb_DeleteRangeResponse()
        let targets = liveKeys(KeyRange(key: request.key, rangeEnd: request.rangeEnd), at: context.readRevision)
        let wantsPrevious = request.prevKv || config.eventsIncludePrevKv
        for (keyIndex, modified) in targets {
            let previous = wantsPrevious ? try fetch(modified, tx) : nil
            if request.prevKv, let previous { response.prevKvs.append(previous) }

            let revision = Revision(main: context.revision, sub: Int64(context.changes))
            var tombstone = Mvccpb_KeyValue()
            tombstone.key = Data(keyIndex.key)
            try backend.put(
                .key, key: RevisionKey.encode(revision, tombstone: true), value: KeyValueCodec.encode(tombstone))
            keyIndex.tombstone(revision)
            context.changes += 1

            var event = Mvccpb_Event()
            event.type = .delete
            tombstone.modRevision = context.revision
            event.kv = tombstone
            if config.eventsIncludePrevKv, let previous { event.prevKv = previous }
            context.events.append(event)
        }
        response.deleted = Int64(targets.count)
        response.header.revision = context.changes > 0 ? context.revision : context.beginRevision
        return response
    }

    // MARK: - Txn

    func applyTxn(
        _ request: Etcdserverpb_TxnRequest, _ context: inout WriteContext, _ tx: ReadTx,
        leaseExists: (Int64) -> Bool
    ) throws -> Etcdserverpb_TxnResponse {
        // Every compare, nested ones too, sees the store before the txn.
        let path = try evaluate(request, at: context.beginRevision, tx)
        try check(request, path, at: context.beginRevision, tx, leaseExists: leaseExists)
        var response = try execute(request, path, &context, tx)
        response.header.revision = context.changes > 0 ? context.revision : context.beginRevision
        return response
    }

    private func branch(_ request: Etcdserverpb_TxnRequest, _ path: TxnPath) -> [Etcdserverpb_RequestOp] {
        path.succeeded ? request.success : request.failure
    }

    private func evaluate(_ request: Etcdserverpb_TxnRequest, at revision: Int64, _ tx: ReadTx) throws -> TxnPath {
        var succeeded = true
        for compare in request.compare where try !holds(compare, at: revision, tx) {
            succeeded = false
            break
        }
        var path = TxnPath(succeeded: succeeded, nested: [])
        for op in branch(request, path) {
            if case .requestTxn(let nested)? = op.request {
                path.nested.append(try evaluate(nested, at: revision, tx))
            }
        }
        return path
    }

    /// etcd's checks of the ops on the taken branch, before anything runs.
    private func check(
        _ request: Etcdserverpb_TxnRequest, _ path: TxnPath, at revision: Int64, _ tx: ReadTx,
        leaseExists: (Int64) -> Bool
    ) throws {
        var nested = path.nested.makeIterator()
        for op in branch(request, path) {
            switch op.request {
            case .requestTxn(let inner)?:
                try check(inner, nested.next()!, at: revision, tx, leaseExists: leaseExists)
            case .requestPut(let put)?:
                if put.ignoreValue || put.ignoreLease {
                    if index.get(byteArray(put.key))?.get(at: revision) == nil { throw MVCCError.keyNotFound }
                }
                if put.lease != 0 && !leaseExists(put.lease) { throw MVCCError.leaseNotFound }
            case .requestRange(let range)?:
                if range.revision > revision { throw MVCCError.futureRevision }
                if range.revision != 0 && range.revision < compactRev { throw MVCCError.compacted }
            default:
                break
            }
        }
    }

    private func execute(
        _ request: Etcdserverpb_TxnRequest, _ path: TxnPath, _ context: inout WriteContext, _ tx: ReadTx
    ) throws -> Etcdserverpb_TxnResponse {
        var response = Etcdserverpb_TxnResponse()
        response.header = Etcdserverpb_ResponseHeader()
        response.succeeded = path.succeeded
        var nested = path.nested.makeIterator()
        for op in branch(request, path) {
            var result = Etcdserverpb_ResponseOp()
            switch op.request {
            case .requestRange(let range)?:
                result.response = .responseRange(try rangeLocked(range, currentRevision: context.readRevision, tx))
            case .requestPut(let put)?:
                precondition(context.canWrite)
                result.response = .responsePut(try applyPut(put, &context, tx))
            case .requestDeleteRange(let delete)?:
                precondition(context.canWrite)
                result.response = .responseDeleteRange(try applyDelete(delete, &context, tx))
            case .requestTxn(let inner)?:
                result.response = .responseTxn(try execute(inner, nested.next()!, &context, tx))
            case nil:
                break
            }
            response.responses.append(result)
        }
        return response
    }

    /// Whether `compare` holds at `revision`: for every key in its range
    /// (or, when none exists, for an empty entry — except value compares,
    /// which then fail).
    private func holds(_ compare: Etcdserverpb_Compare, at revision: Int64, _ tx: ReadTx) throws -> Bool {
        let range = KeyRange(key: compare.key, rangeEnd: compare.rangeEnd)
        let (revisions, _) = self.revisions(range, at: revision, limit: 0)
        if revisions.isEmpty {
            if compare.target == .value { return false }
            return KVStore.compare(compare, Mvccpb_KeyValue())
        }
        for found in revisions where !KVStore.compare(compare, try fetch(found, tx)) {
            return false
        }
        return true
    }

    static func compare(_ compare: Etcdserverpb_Compare, _ kv: Mvccpb_KeyValue) -> Bool {
        let order: Int
        switch compare.target {
        case .value:
            var wanted = Data()
            if case .value(let v)? = compare.targetUnion { wanted = v }
            order = compareData(kv.value, wanted)
        case .create:
            var wanted: Int64 = 0
            if case .createRevision(let v)? = compare.targetUnion { wanted = v }
            order = kv.createRevision < wanted ? -1 : (kv.createRevision > wanted ? 1 : 0)
        case .mod:
            var wanted: Int64 = 0
            if case .modRevision(let v)? = compare.targetUnion { wanted = v }
            order = kv.modRevision < wanted ? -1 : (kv.modRevision > wanted ? 1 : 0)
        case .version:
            var wanted: Int64 = 0
            if case .version(let v)? = compare.targetUnion { wanted = v }
            order = kv.version < wanted ? -1 : (kv.version > wanted ? 1 : 0)
        case .lease:
            var wanted: Int64 = 0
            if case .lease(let v)? = compare.targetUnion { wanted = v }
            order = kv.lease < wanted ? -1 : (kv.lease > wanted ? 1 : 0)
        case .UNRECOGNIZED:
            order = 0
        }
        switch compare.result {
        case .equal: return order == 0
        case .notEqual: return order != 0
        case .greater: return order > 0
        case .less: return order < 0
        case .UNRECOGNIZED: return true
        }
    }
}
