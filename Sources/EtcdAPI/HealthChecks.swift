import EtcdProto
import EtcdServer
import Foundation
import Locks
import NIOCore

/// `/health`, `/livez` and `/readyz` as etcd 3.6 answers them.
///
/// `/health`: `{"health":"true","reason":""}` (200), or `"false"` with a
/// reason (503): an active alarm not excluded by `?exclude=NAME`
/// (`ALARM NOSPACE`, `ALARM CORRUPT`), no leader (`RAFT NO LEADER`, skipped
/// with `?serializable=true`), or a failed read (`RANGE ERROR:…`; the read
/// is serializable with `?serializable=true`). GET only.
///
/// `/livez` (check `serializable_read`) and `/readyz` (`data_corruption`,
/// `serializable_read`, `linearizable_read`, `non_learner`): `ok` (200), with
/// `[+]name ok` lines first under `?verbose`; on a failure 503 and every
/// line (`[-]name failed: reason`). `?exclude=name` skips a check; each
/// check also has its own path (`/readyz/linearizable_read`).
enum HealthChecks {
    enum Kind: String, Sendable { case livez, readyz }

    static let livez = ["serializable_read"]
    static let readyz = ["data_corruption", "serializable_read", "linearizable_read", "non_learner"]

    /// The checks a path runs (the root path: all of its kind), or nil.
    static func endpoint(_ path: String) -> (kind: Kind, checks: [String], root: Bool)? {
        for (kind, checks) in [(Kind.livez, livez), (Kind.readyz, readyz)] {
            let root = "/" + kind.rawValue
            if path == root || path == root + "/" { return (kind, checks, true) }
            if path.hasPrefix(root + "/"), checks.contains(String(path.dropFirst(root.count + 1))) {
                return (kind, [String(path.dropFirst(root.count + 1))], false)
            }
        }
        return nil
    }

    /// How long a read check may take: etcd's request timeout.
    static func timeout(_ member: Member) -> Duration {
        .seconds(5) + .milliseconds(2 * member.config.electionTimeoutMilliseconds)
    }

    /// Runs one check; nil when it passed, else why not.
    static func run(_ name: String, on member: Member) async -> String? {
        switch name {
        case "data_corruption":
            return member.activeAlarms().contains { $0.alarm == .corrupt } ? "alarm activated: CORRUPT" : nil
        case "serializable_read", "linearizable_read":
            return await read(member, serializable: name == "serializable_read")
        case "non_learner":
            return member.isLearner ? "not supported for learner" : nil
        default:
            return "unknown check"
        }
    }

    /// etcd's read check: a one-key, keys-only range as root, within the
    /// request timeout; the error text when it fails.
    static func read(_ member: Member, serializable: Bool) async -> String? {
        var request = Etcdserverpb_RangeRequest()
        request.key = Data([0])
        request.keysOnly = true
        request.limit = 1
        request.serializable = serializable
        let limit = timeout(member)
        let range = request
        // Whichever comes first: the read's answer or the timeout (a read
        // waiting for a leader may wait far longer).
        return await withCheckedContinuation { continuation in
            let answered = Mutex(false)
            let finish: @Sendable (String?) -> Void = { failure in
                let first = answered.withLock { done in
                    defer { done = true }
                    return !done
                }
                if first { continuation.resume(returning: failure) }
            }
            let timer = Task {
                try await Task.sleep(for: limit)
                finish("context deadline exceeded")
            }
            Task {
                do {
                    _ = try await member.range(range)
                    finish(nil)
                } catch let error as EtcdError {
                    finish(error.message)
                } catch {
                    finish("\(error)")
                }
                timer.cancel()
            }
        }
    }
}

extension HTTPService {
    func health(_ request: HTTPRequest, _ responder: any HTTPResponder) {
        guard request.method == "GET" else {
            return responder.error(405, "Method Not Allowed", extraHeaders: [("allow", "GET")])
        }
        guard let member else { return healthAnswer(true, "", responder) }
        let excluded = Set(request.queryValues("exclude"))
        let serializable = request.queryValues("serializable").first == "true"
        for alarm in member.activeAlarms() {
            let name = switch alarm.alarm {
            case .nospace: "NOSPACE"
            case .corrupt: "CORRUPT"
            default: "UNKNOWN"
            }
            if excluded.contains(name) { continue }
            return healthAnswer(false, "ALARM \(name)", responder)
        }
        if !serializable && member.raftStatus().leader == 0 {
            return healthAnswer(false, "RAFT NO LEADER", responder)
        }
        Task {
            if let failure = await HealthChecks.read(member, serializable: serializable) {
                healthAnswer(false, "RANGE ERROR:\(failure)", responder)
            } else {
                healthAnswer(true, "", responder)
            }
        }
    }

    private func healthAnswer(_ healthy: Bool, _ reason: String, _ responder: any HTTPResponder) {
        let body = "{\"health\":\"\(healthy)\",\"reason\":\(Gateway.jsonString(reason))}"
        if healthy {
            responder.respond(status: 200, contentType: "text/plain; charset=utf-8", ByteBuffer(string: body))
        } else {
            responder.error(503, body)
        }
    }

    func healthChecks(_ endpoint: (kind: HealthChecks.Kind, checks: [String], root: Bool), _ request: HTTPRequest,
                      _ responder: any HTTPResponder) {
        let excluded = endpoint.root ? Set(request.queryValues("exclude")) : []
        let checks = endpoint.checks.filter { !excluded.contains($0) }
        let verbose = request.hasQuery("verbose")
        let member = self.member
        Task {
            var lines = ""
            var failed = false
            for name in checks {
                let failure: String? = if let member { await HealthChecks.run(name, on: member) } else { nil }
                if let failure {
                    failed = true
                    lines += "[-]\(name) failed: \(failure)\n"
                } else {
                    lines += "[+]\(name) ok\n"
                }
            }
            if failed {
                responder.error(503, lines)
            } else {
                responder.respond(status: 200, contentType: "text/plain; charset=utf-8", ByteBuffer(string: (verbose ? lines : "") + "ok\n"),
                                  extraHeaders: [("x-content-type-options", "nosniff")])
            }
        }
    }
}
