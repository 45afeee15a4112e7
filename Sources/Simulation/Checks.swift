import Checkers
import Foundation

extension SimWorld {
    /// Everything the clients saw, against etcd's guarantees: the history
    /// is linearizable; no two acknowledged writes share a revision; each
    /// client's revisions never go back; serializable reads only return
    /// values some write wrote, at that write's revision.
    func checkHistory() {
        report.operations = history.count
        var fingerprint = Hasher.Deterministic()
        for op in history {
            fingerprint.combine("\(op.clientID)|\(op.invoke)|\(op.returnTime ?? 0)|\(op.input)|\(op.output.map(\.description) ?? "?")")
        }
        report.traceHash = fingerprint.value

        let checker = LinearizabilityChecker(model: KVModel(revisions: .gapsAllowed, partitionByKey: true),
                                             maxStates: options.checkerMaxStates, shrinkTimeout: .seconds(10))
        let verdict = checker.check(history, timeout: .seconds(600))
        switch verdict {
        case .linearizable: report.linearizability = "linearizable"
        case .undecided: report.linearizability = "undecided"
        case .notLinearizable:
            report.linearizability = "not linearizable"
            violation("history not linearizable: \(verdict)")
        }

        var revisionOwner: [Int64: String] = [:]
        var written: [String: [Int64?]] = [:]
        for op in history {
            var writes: [(key: String, value: String)] = []
            collectPuts(op.input, output: op.output?.result, into: &writes)
            for write in writes { written[write.value, default: []].append(op.output?.revision) }
            guard let output = op.output, changesStore(op.input, output.result) else { continue }
            if let other = revisionOwner[output.revision] {
                violation("two acknowledged writes at revision \(output.revision): \(other) and \(op.input)")
            }
            revisionOwner[output.revision] = "\(op.input)"
        }

        var lastRevision: [Int: (Int64, String)] = [:]
        for op in history.sorted(by: { $0.invoke < $1.invoke }) {
            guard let output = op.output else { continue }
            if let (previous, what) = lastRevision[op.clientID], output.revision < previous {
                violation("client \(op.clientID): revision went back from \(previous) (\(what)) to \(output.revision) (\(op.input))")
            }
            lastRevision[op.clientID] = (max(output.revision, lastRevision[op.clientID]?.0 ?? 0), "\(op.input)")
        }

        for read in serializableReads {
            report.otherChecks += 1
            guard let record = read.record else { continue }
            let value = String(decoding: record.value.bytes, as: UTF8.self)
            guard let revisions = written[value] else {
                violation("serializable get(\(read.key)) returned \(value), which no client wrote")
                continue
            }
            let known = revisions.compactMap { $0 }
            if revisions.allSatisfy({ $0 != nil }), !known.contains(record.modRevision) {
                violation("serializable get(\(read.key)) returned \(value) at mod revision \(record.modRevision); it was written at \(known)")
            }
        }
    }

    /// The puts a request made on the path its result shows (all of them
    /// when the outcome is unknown).
    private func collectPuts(_ input: KVInput, output: KVResult?, into writes: inout [(key: String, value: String)]) {
        switch input {
        case let .put(key, value, _):
            writes.append((key.description, value.description))
        case let .txn(_, success, failure):
            var branches: [KVInput] = success + failure
            if case let .txn(succeeded, _)? = output { branches = succeeded ? success : failure }
            for branch in branches { collectPuts(branch, output: nil, into: &writes) }
        default:
            break
        }
    }

    private func changesStore(_ input: KVInput, _ result: KVResult) -> Bool {
        switch (input, result) {
        case (.put, _): return true
        case (.delete, .delete(let deleted, _)): return deleted > 0
        case (.txn, .txn(let succeeded, _)): return succeeded
        default: return false
        }
    }
}

extension Hasher {
    /// FNV-1a over strings: the same on every run (Swift's `Hasher` is
    /// seeded per process).
    struct Deterministic {
        private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325
        mutating func combine(_ text: String) {
            for byte in text.utf8 {
                value ^= UInt64(byte)
                value = value &* 0x100_0000_01B3
            }
        }
    }
}
