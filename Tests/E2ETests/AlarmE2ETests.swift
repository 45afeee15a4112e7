import Foundation
import Testing

/// The NOSPACE alarm as the Go etcdctl sees it, ours beside etcd 3.4 with
/// the same 1 MiB quota: a put past the quota is refused and raises it,
/// `alarm list` prints it, it refuses even a small put; after delete,
/// compact, defrag and `alarm disarm` puts work again.
@Suite(.serialized) struct AlarmE2ETests {
    @Test func aFullStoreRaisesNoSpaceAsEtcdDoes() throws {
        let quota = ["--quota-backend-bytes", "1048576"]
        let ours = try EtcdProcess(extraArguments: quota)
        defer { ours.terminate() }
        let theirs = try RealEtcdProcess(extraArguments: quota)
        defer { theirs.terminate() }
        let value = String(repeating: "x", count: 700_000)
        // Fill each until a put is refused: how many fit depends on when
        // each backend last committed (both check the size they know), so
        // only the refusal is compared.
        for port in [ours.port, theirs.port] {
            var refusal: (status: Int32, out: String, err: String)?
            for i in 1...6 where refusal == nil {
                let put = try Self.etcdctl(port, ["put", "k\(i)"], input: value)
                if put.status != 0 { refusal = put }
            }
            #expect(refusal?.err == "Error: etcdserver: mvcc: database space exceeded", "port \(port): \(String(describing: refusal))")
        }
        // Then the way out, as etcd's docs give it: delete, compact, defrag,
        // disarm; a put works again.
        let steps: [(arguments: [String], input: String?)] = [
            (["alarm", "list"], nil), (["put", "small", "v"], nil), (["del", "k", "--prefix"], nil),
            (["compact", "REVISION"], nil), (["defrag"], nil),
            (["alarm", "disarm"], nil), (["alarm", "list"], nil), (["put", "small", "v"], nil),
        ]
        for step in steps {
            let mine = try Self.etcdctl(ours.port, Self.resolve(step.arguments, ours.port), input: step.input)
            let real = try Self.etcdctl(theirs.port, Self.resolve(step.arguments, theirs.port), input: step.input)
            #expect(mine.status == real.status, "\(step.arguments): exit \(mine.status) vs \(real.status)")
            // All the filler goes: each counts the keys it had, and how many
            // fit before the refusal differs (see above).
            if step.arguments.first == "del" {
                #expect(Int(mine.out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0 >= 1, "\(mine.out)")
                continue
            }
            #expect(mine.out == real.out, "\(step.arguments): \(mine.out) vs \(real.out)")
            #expect(mine.err == real.err, "\(step.arguments): \(mine.err) vs \(real.err)")
        }
    }

    /// `REVISION` becomes the server's current revision (how many puts fit
    /// differs between the two).
    static func resolve(_ arguments: [String], _ port: Int) throws -> [String] {
        guard arguments.contains("REVISION") else { return arguments }
        let header = try etcdctl(port, ["get", "none", "-w", "json"], input: nil).out
        let match = try #require(header.firstMatch(of: /"revision":(\d+)/))
        return arguments.map { $0 == "REVISION" ? String(match.1) : $0 }
    }

    /// The Go etcdctl's exit status, stdout with member ids masked, and the
    /// last line of stderr (the client's retry warnings before it differ).
    static func etcdctl(_ port: Int, _ arguments: [String], input: String?) throws -> (status: Int32, out: String, err: String) {
        let result = try EtcdProcess.run("/usr/bin/etcdctl", ["--endpoints=127.0.0.1:\(port)", "--dial-timeout=1s", "--command-timeout=5s"] + arguments,
                                         environment: ["ETCDCTL_API": "3"], input: input)
        let out = result.out.replacingOccurrences(of: #"memberID:[0-9]+"#, with: "memberID:ID", options: .regularExpression)
            .replacingOccurrences(of: #"revision [0-9]+"#, with: "revision N", options: .regularExpression)
            .replacingOccurrences(of: "127.0.0.1:\(port)", with: "ENDPOINT")
        let err = result.err.split(separator: "\n").last.map(String.init) ?? ""
        return (result.status, out, err)
    }
}
