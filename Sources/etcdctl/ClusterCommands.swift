import EtcdClient
import EtcdProto
import Bbolt
import CLIText
import Foundation

func memberHex(_ id: UInt64) -> String { String(id, radix: 16) }
func memberHex16(_ id: UInt64) -> String {
    let s = memberHex(id)
    return String(repeating: " ", count: max(0, 16 - s.count)) + s
}

func parseMemberID(_ s: String) throws -> UInt64 {
    guard let id = UInt64(s, radix: 16) else {
        throw fail(ExitCode.badArgs, "bad member ID arg (\(parseIntError(s, "ParseUint"))), expecting ID in Hex")
    }
    return id
}

func memberRows(_ members: [Member]) -> [[String]] {
    members.map { m in
        [memberHex(m.id), m.name.isEmpty ? "unstarted" : "started", m.name, m.peerUrls.joined(separator: ","),
         m.clientUrls.joined(separator: ","), m.isLearner ? "true" : "false"]
    }
}

func memberCommand(_ g: @escaping (Invocation) -> Globals) -> Command {
    let member = Command("member <subcommand>", "Membership related commands")
    let add = Command("add <memberName> [options]", "Adds a member into the cluster") { inv in
        let globals = g(inv)
        if inv.args.isEmpty { throw fail(ExitCode.badArgs, "member name not provided") }
        if inv.args.count > 1 {
            var message = "too many arguments"
            for s in inv.args where s.lowercased().hasPrefix("http") { message += ", did you mean --peer-urls=\(s)" }
            throw fail(ExitCode.badArgs, message)
        }
        let name = inv.args[0]
        let peerURLs = inv.flag("peer-urls").string
        if peerURLs.isEmpty { throw fail(ExitCode.badArgs, "member peer urls not provided") }
        let urls = peerURLs.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        let client = try globals.makeClient()
        let r: Etcdserverpb_MemberAddResponse
        do { r = try await client.memberAdd(peerURLs: urls, isLearner: inv.flag("learner").bool) } catch { throw globals.rpcFailure(error) }
        let p = globals.printer
        switch p.format {
        case .simple:
            Out.print("Member \(memberHex16(r.member.id)) added to cluster \(memberHex16(r.header.clusterID))")
            var conf: [String] = []
            for m in r.members { for u in m.peerUrls { conf.append("\(m.id == r.member.id ? name : m.name)=\(u)") } }
            Out.print("")
            Out.print("ETCD_NAME=\(goQuote(name))")
            Out.print("ETCD_INITIAL_CLUSTER=\(goQuote(conf.joined(separator: ",")))")
            Out.print("ETCD_INITIAL_ADVERTISE_PEER_URLS=\(goQuote(peerURLs))")
            Out.print("ETCD_INITIAL_CLUSTER_STATE=\"existing\"")
        case .json: p.printJSON(JSONOf.members(header: r.header, member: r.member, members: r.members))
        case .protobuf: try p.protobuf(r)
        case .fields, .table: throw unsupported(p.format)
        }
    }
    add.flag("peer-urls", .string, "", "comma separated peer URLs for the new member.")
    add.flag("learner", .bool, "false", "indicates if the new member is raft learner")
    let remove = Command("remove <memberID>", "Removes a member from the cluster") { inv in
        let globals = g(inv)
        guard inv.args.count == 1 else { throw fail(ExitCode.badArgs, "member ID is not provided") }
        let id = try parseMemberID(inv.args[0])
        let client = try globals.makeClient()
        let r: Etcdserverpb_MemberRemoveResponse
        do { r = try await client.memberRemove(id: id) } catch { throw globals.rpcFailure(error) }
        let p = globals.printer
        switch p.format {
        case .simple: Out.print("Member \(memberHex16(id)) removed from cluster \(memberHex16(r.header.clusterID))")
        case .json: p.printJSON(JSONOf.members(header: r.header, members: r.members))
        case .protobuf: try p.protobuf(r)
        case .fields, .table: throw unsupported(p.format)
        }
    }
    let update = Command("update <memberID> [options]", "Updates a member in the cluster") { inv in
        let globals = g(inv)
        guard inv.args.count == 1 else { throw fail(ExitCode.badArgs, "member ID is not provided") }
        let id = try parseMemberID(inv.args[0])
        let peerURLs = inv.flag("peer-urls").string
        if peerURLs.isEmpty { throw fail(ExitCode.badArgs, "member peer urls not provided") }
        let client = try globals.makeClient()
        let r: Etcdserverpb_MemberUpdateResponse
        do { r = try await client.memberUpdate(id: id, peerURLs: peerURLs.split(separator: ",", omittingEmptySubsequences: false).map(String.init)) } catch {
            throw globals.rpcFailure(error)
        }
        let p = globals.printer
        switch p.format {
        case .simple: Out.print("Member \(memberHex16(id)) updated in cluster \(memberHex16(r.header.clusterID))")
        case .json: p.printJSON(JSONOf.members(header: r.header, members: r.members))
        case .protobuf: try p.protobuf(r)
        case .fields, .table: throw unsupported(p.format)
        }
    }
    update.flag("peer-urls", .string, "", "comma separated peer URLs for the updated member.")
    let list = Command("list", "Lists all members in the cluster", long: """
When --write-out is set to simple, this command prints out comma-separated member lists for each endpoint.
The items in the lists are ID, Status, Name, Peer Addrs, Client Addrs, Is Learner.

""") { inv in
        let globals = g(inv)
        let client = try globals.makeClient()
        let r: Etcdserverpb_MemberListResponse
        do { r = try await client.memberList() } catch { throw globals.rpcFailure(error) }
        let p = globals.printer
        switch p.format {
        case .simple: for row in memberRows(r.members) { Out.print(row.joined(separator: ", ")) }
        case .json: p.printJSON(JSONOf.members(header: r.header, members: r.members))
        case .protobuf: try p.protobuf(r)
        case .table:
            Out.print(renderTable(header: ["ID", "Status", "Name", "Peer Addrs", "Client Addrs", "Is Learner"], rows: memberRows(r.members)), terminator: "")
        case .fields:
            p.fieldsHeader(r.header)
            for m in r.members {
                Out.print("\"ID\" : \(m.id)")
                Out.print("\"Name\" : \(goQuote(m.name))")
                for u in m.peerUrls { Out.print("\"PeerURL\" : \(goQuote(u))") }
                for u in m.clientUrls { Out.print("\"ClientURL\" : \(goQuote(u))") }
                Out.print("\"IsLearner\" : \(m.isLearner)")
                Out.print("")
            }
        }
    }
    let promote = Command("promote <memberID>", "Promotes a non-voting member in the cluster", long: """
Promotes a non-voting learner member to a voting one in the cluster.

""") { inv in
        let globals = g(inv)
        guard inv.args.count == 1 else { throw fail(ExitCode.badArgs, "member ID is not provided") }
        let id = try parseMemberID(inv.args[0])
        let client = try globals.makeClient()
        let r: Etcdserverpb_MemberPromoteResponse
        do { r = try await client.memberPromote(id: id) } catch { throw globals.rpcFailure(error) }
        let p = globals.printer
        switch p.format {
        case .simple: Out.print("Member \(memberHex16(id)) promoted in cluster \(memberHex16(r.header.clusterID))")
        case .json: p.printJSON(JSONOf.members(header: r.header, members: r.members))
        case .protobuf: try p.protobuf(r)
        case .fields, .table: throw unsupported(p.format)
        }
    }
    return member.add(add, remove, update, list, promote)
}

// MARK: - endpoint

func clusterEndpoints(_ inv: Invocation, _ globals: Globals) async throws -> [String] {
    guard inv.command.lookup("cluster")?.bool == true else { return globals.endpoints }
    let client = try globals.makeClient(withAuth: false)
    defer { client.close() }
    let members: Etcdserverpb_MemberListResponse
    do { members = try await client.memberList() } catch {
        throw globals.rpcFailure(error, wrap: { "failed to fetch endpoints from etcd cluster member list: \($0)" })
    }
    return members.members.flatMap(\.clientUrls)
}

func endpointCommand(_ g: @escaping (Invocation) -> Globals) -> Command {
    let endpoint = Command("endpoint <subcommand>", "Endpoint related commands")
    endpoint.persistent("cluster", .bool, "false", "use all endpoints from the cluster member list")
    let health = Command("health", "Checks the healthiness of endpoints specified in `--endpoints` flag") { inv in
        let globals = g(inv)
        try globals.applyEnvironment()
        try globals.initDisplay()
        let eps = try await clusterEndpoints(inv, globals)
        let results = await withTaskGroup(of: (Int, String, Bool, String, String).self) { group in
            for (i, ep) in eps.enumerated() {
                group.addTask {
                    let clock = ContinuousClock()
                    let start = clock.now
                    do {
                        let client = try globals.makeClient(endpoints: [ep])
                        defer { client.close() }
                        _ = try await client.get("health")
                        return (i, ep, true, goDurationString(clock.now - start), "")
                    } catch {
                        let e = EtcdClientError(error)
                        if e == .permissionDenied { return (i, ep, true, goDurationString(clock.now - start), "") }
                        if case .deadlineExceeded = e { globals.logRetryWarning(e, endpoint: ep) }
                        return (i, ep, false, goDurationString(clock.now - start), "\(e)")
                    }
                }
            }
            var all: [(Int, String, Bool, String, String)] = []
            for await r in group { all.append(r) }
            return all.sorted { $0.0 < $1.0 }
        }
        let p = globals.printer
        switch p.format {
        case .simple:
            for r in results {
                if r.4.isEmpty { Out.err("\(r.1) is healthy: successfully committed proposal: took = \(r.3)") }
                else { Out.err("\(r.1) is unhealthy: failed to commit proposal: \(r.4)") }
            }
        case .json:
            p.printJSON(.array(results.map { r in
                var o = JSONObject()
                o.string("endpoint", r.1, omit: false); o.bool("health", r.2, omit: false); o.string("took", r.3, omit: false); o.string("error", r.4)
                return o.json
            }))
        case .table:
            Out.print(renderTable(header: ["endpoint", "health", "took", "error"], rows: results.map { [$0.1, $0.2 ? "true" : "false", $0.3, $0.4] }), terminator: "")
        case .fields:
            for r in results {
                Out.print("\"Endpoint\" : \(goQuote(r.1))")
                Out.print("\"Health\" : \(r.2)")
                Out.print("\"Took\" : \(r.3)")
                Out.print("\"Error\" : \(r.4)")
                Out.print("")
            }
        case .protobuf: throw unsupported(p.format)
        }
        if results.contains(where: { !$0.4.isEmpty }) { throw fail(ExitCode.error, "unhealthy cluster") }
    }
    let status = Command("status", "Prints out the status of endpoints specified in `--endpoints` flag", long: """
When --write-out is set to simple, this command prints out comma-separated status lists for each endpoint.
The items in the lists are endpoint, ID, version, db size, is leader, is learner, raft term, raft index, raft applied index, errors.

""") { inv in
        let globals = g(inv)
        let client = try globals.makeClient()
        var list: [(String, StatusResponse)] = []
        var failed = false
        for ep in try await clusterEndpoints(inv, globals) {
            do { list.append((ep, try await client.status(endpoint: ep))) } catch {
                failed = true
                let e = EtcdClientError(error)
                globals.logRetryWarning(e, endpoint: ep)
                Out.err("Failed to get the status of endpoint \(ep) (\(e))")
            }
        }
        let rows = list.map { ep, s in
            [ep, memberHex(s.header.memberID), s.version, humanizeBytes(UInt64(max(0, s.dbSize))), s.leader == s.header.memberID ? "true" : "false",
             s.isLearner ? "true" : "false", "\(s.raftTerm)", "\(s.raftIndex)", "\(s.raftAppliedIndex)", s.errors.joined(separator: ", ")]
        }
        let p = globals.printer
        switch p.format {
        case .simple: for row in rows { Out.print(row.joined(separator: ", ")) }
        case .json: p.printJSON(.array(list.map { .object([("Endpoint", .string($0.0)), ("Status", JSONOf.status($0.1))]) }))
        case .table:
            Out.print(renderTable(header: ["endpoint", "ID", "version", "db size", "is leader", "is learner", "raft term", "raft index", "raft applied index", "errors"], rows: rows), terminator: "")
        case .fields:
            for (ep, s) in list {
                p.fieldsHeader(s.header)
                Out.print("\"Version\" : \(goQuote(s.version))")
                Out.print("\"DBSize\" : \(s.dbSize)")
                Out.print("\"Leader\" : \(s.leader)")
                Out.print("\"IsLearner\" : \(s.isLearner)")
                Out.print("\"RaftIndex\" : \(s.raftIndex)")
                Out.print("\"RaftTerm\" : \(s.raftTerm)")
                Out.print("\"RaftAppliedIndex\" : \(s.raftAppliedIndex)")
                Out.print("\"Errors\" : [\(s.errors.joined(separator: " "))]")
                Out.print("\"Endpoint\" : \(goQuote(ep))")
                Out.print("")
            }
        case .protobuf: throw unsupported(p.format)
        }
        if failed { throw Exit(code: ExitCode.error) }
    }
    let hashkv = Command("hashkv", "Prints the KV history hash for each endpoint in --endpoints") { inv in
        let globals = g(inv)
        let client = try globals.makeClient()
        var list: [(String, Etcdserverpb_HashKVResponse)] = []
        var lastError: EtcdClientError?
        for ep in try await clusterEndpoints(inv, globals) {
            do { list.append((ep, try await client.hashKV(endpoint: ep, revision: inv.flag("rev").int))) } catch {
                let e = EtcdClientError(error)
                lastError = e
                globals.logRetryWarning(e, endpoint: ep)
                Out.err("Failed to get the hash of endpoint \(ep) (\(e))")
            }
        }
        let p = globals.printer
        switch p.format {
        case .simple: for (ep, h) in list { Out.print("\(ep), \(h.hash)") }
        case .json:
            p.printJSON(.array(list.map { ep, h in
                var o = JSONObject()
                o.value("header", JSONOf.header(h.header)); o.uint("hash", UInt64(h.hash)); o.int("compact_revision", h.compactRevision)
                return .object([("Endpoint", .string(ep)), ("HashKV", o.json)])
            }))
        case .table: Out.print(renderTable(header: ["endpoint", "hash"], rows: list.map { [$0.0, "\($0.1.hash)"] }), terminator: "")
        case .fields:
            for (ep, h) in list {
                p.fieldsHeader(h.header)
                Out.print("\"Endpoint\" : \(goQuote(ep))")
                Out.print("\"Hash\" : \(h.hash)")
                Out.print("")
            }
        case .protobuf: throw unsupported(p.format)
        }
        if let lastError { throw fail(ExitCode.error, "\(lastError)") }
    }
    hashkv.persistent("rev", .int, "0", "maximum revision to hash (default: all revisions)")
    return endpoint.add(health, status, hashkv)
}

// MARK: - maintenance

func maintenanceCommands(_ g: @escaping (Invocation) -> Globals) -> [Command] {
    let alarm = Command("alarm <subcommand>", "Alarm related commands")
    func printAlarms(_ r: Etcdserverpb_AlarmResponse, _ p: Printer) throws {
        switch p.format {
        case .simple: for a in r.alarms { Out.print("memberID:\(a.memberID) alarm:\(alarmName(a.alarm)) ") }
        case .json:
            var o = JSONObject()
            o.value("header", r.hasHeader ? JSONOf.header(r.header) : nil)
            o.array("alarms", r.alarms.map { a in
                var m = JSONObject(); m.uint("memberID", a.memberID); m.int("alarm", Int64(a.alarm.rawValue)); return m.json
            })
            p.printJSON(o.json)
        case .fields:
            p.fieldsHeader(r.header)
            for a in r.alarms {
                Out.print("\"MemberID\" : \(a.memberID)")
                Out.print("\"AlarmType\" : \(alarmName(a.alarm))")
                Out.print("")
            }
        case .protobuf: try p.protobuf(r)
        case .table: throw unsupported(p.format)
        }
    }
    let disarm = Command("disarm", "Disarms all alarms") { inv in
        let globals = g(inv)
        if !inv.args.isEmpty { throw fail(ExitCode.badArgs, "alarm disarm command accepts no arguments") }
        let client = try globals.makeClient()
        do { try printAlarms(try await client.alarmDisarm(), globals.printer) } catch { throw globals.rpcFailure(error) }
    }
    let list = Command("list", "Lists all alarms") { inv in
        let globals = g(inv)
        if !inv.args.isEmpty { throw fail(ExitCode.badArgs, "alarm list command accepts no arguments") }
        let client = try globals.makeClient()
        let r: Etcdserverpb_AlarmResponse
        do { r = try await client.alarmList() } catch { throw globals.rpcFailure(error) }
        try printAlarms(r, globals.printer)
    }
    alarm.add(disarm, list)

    let defrag = Command("defrag", "Defragments the storage of the etcd members with given endpoints") { inv in
        let globals = g(inv)
        if !inv.flag("data-dir").string.isEmpty {
            Out.err("Failed to defragment etcd data[\(inv.flag("data-dir").string)] (offline defragmentation moved to etcdutl: etcdutl defrag --data-dir)")
            throw Exit(code: ExitCode.error)
        }
        let client = try globals.makeClient()
        var failures = 0
        for ep in try await clusterEndpoints(inv, globals) {
            do {
                try await client.defragment(endpoint: ep)
                Out.print("Finished defragmenting etcd member[\(ep)]")
            } catch {
                let e = EtcdClientError(error)
                globals.logRetryWarning(e, endpoint: ep)
                Out.err("Failed to defragment etcd member[\(ep)] (\(e))")
                failures += 1
            }
        }
        if failures > 0 { throw Exit(code: ExitCode.error) }
    }
    defrag.persistent("cluster", .bool, "false", "use all endpoints from the cluster member list")
    defrag.flag("data-dir", .string, "", "Optional. If present, defragments a data directory not in use by etcd.")

    let snapshot = Command("snapshot <subcommand>", "Manages etcd node snapshots")
    let save = Command("save <filename>", "Stores an etcd node backend snapshot to a given file") { inv in
        let globals = g(inv)
        guard inv.args.count == 1 else { throw fail(ExitCode.badArgs, "snapshot save expects one argument") }
        let eps = globals.endpoints
        if eps.count != 1 { throw fail(ExitCode.interrupted, "snapshot must be requested to one selected node, not multiple [\(eps.joined(separator: " "))]") }
        let client = try globals.makeClient()
        let path = inv.args[0]
        let partPath = path + ".part"
        let clock = ContinuousClock()
        let start = clock.now
        func log(_ caller: String, _ msg: String, _ extra: String = "", iso: Bool = false) {
            let ts: String
            if iso {
                let f = DateFormatter(); f.locale = Locale(identifier: "en_US_POSIX"); f.timeZone = TimeZone(identifier: "UTC")
                f.dateFormat = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"; ts = "\"\(f.string(from: Date()))\""
            } else { ts = String(format: "%.7f", Date().timeIntervalSince1970) }
            Out.err("{\"level\":\"info\",\"ts\":\(ts),\"caller\":\"\(caller)\",\"msg\":\"\(msg)\"\(extra)}")
        }
        let file: StreamingFileWriter
        do {
            file = try StreamingFileWriter(path: partPath)
        } catch let error as POSIXError {
            throw fail(ExitCode.interrupted, "could not open \(partPath) (open \(partPath): \(goErrnoText(error.code)))")
        } catch {
            throw fail(ExitCode.interrupted, "could not open \(partPath) (\(error))")
        }
        log("snapshot/v3_snapshot.go:119", "created temporary db file", ",\"path\":\(goJSONString(partPath))")
        log("clientv3/maintenance.go:200", "opened snapshot stream; downloading", iso: true)
        log("snapshot/v3_snapshot.go:127", "fetching snapshot", ",\"endpoint\":\(goJSONString(eps[0]))")
        var size: UInt64 = 0
        do {
            for try await chunk in client.snapshot(endpoint: eps[0]) {
                try file.write(chunk)
                size += UInt64(chunk.count)
            }
            try file.finish()
        } catch let error as POSIXError {
            file.abandon()
            throw fail(ExitCode.interrupted, "write \(partPath): \(goErrnoText(error.code))")
        } catch {
            file.abandon()
            throw fail(ExitCode.interrupted, "\(EtcdClientError(error))")
        }
        log("clientv3/maintenance.go:208", "completed snapshot read; closing", iso: true)
        // As etcd: a snapshot ends with its SHA-256, the rest filling whole 512-byte blocks.
        if size % 512 != 32 { throw fail(ExitCode.interrupted, "sha256 checksum not found [bytes: \(size)]") }
        let took = clock.now - start
        let seconds = Double(took.components.seconds) + Double(took.components.attoseconds) / 1e18
        log("snapshot/v3_snapshot.go:142", "fetched snapshot", ",\"endpoint\":\(goJSONString(eps[0])),\"size\":\"\(humanizeBytes(size))\",\"took\":\(String(format: "%.9f", seconds))")
        if rename(partPath, path) != 0 { throw fail(ExitCode.interrupted, "could not rename \(partPath) to \(path)") }
        StreamingFileWriter.syncDirectory(of: path)
        log("snapshot/v3_snapshot.go:152", "saved", ",\"path\":\(goJSONString(path))")
        Out.print("Snapshot saved at \(path)")
    }
    snapshot.add(save)
    // etcdctl 3.4's `snapshot status` (3.6 moved it to etcdutl; ours keeps
    // both): the file is read with our bbolt reader, every page checked.
    let status = Command("status <filename>", "Gets backend snapshot status of a given file") { inv in
        let p = g(inv).printer
        guard inv.args.count == 1 else { throw fail(ExitCode.badArgs, "snapshot status requires exactly one argument") }
        let s: EtcdSnapshotStatus
        do {
            guard FileManager.default.fileExists(atPath: inv.args[0]) else {
                throw fail(ExitCode.error, "stat \(inv.args[0]): no such file or directory")
            }
            s = try BboltReader(path: inv.args[0]).etcdStatus()
        } catch let exit as Exit {
            throw exit
        } catch {
            throw fail(ExitCode.error, "\(error)")
        }
        let row = [String(s.hash, radix: 16), String(s.revision), String(s.totalKey), humanizeBytes(UInt64(s.totalSize))]
        switch p.format {
        case .simple: Out.print(row.joined(separator: ", "))
        case .json: Out.print(#"{"hash":\#(s.hash),"revision":\#(s.revision),"totalKey":\#(s.totalKey),"totalSize":\#(s.totalSize)}"#)
        case .table: Out.print(renderTable(header: ["hash", "revision", "total keys", "total size"], rows: [row]), terminator: "")
        case .fields:
            Out.print("\"Hash\" : \(s.hash)")
            Out.print("\"Revision\" : \(s.revision)")
            Out.print("\"Keys\" : \(s.totalKey)")
            Out.print("\"Size\" : \(s.totalSize)")
        case .protobuf: throw unsupported(p.format)
        }
    }
    snapshot.add(status)

    let moveLeader = Command("move-leader <transferee-member-id>", "Transfers leadership to another etcd cluster member.") { inv in
        let globals = g(inv)
        guard inv.args.count == 1 else { throw fail(ExitCode.badArgs, "move-leader command needs 1 argument") }
        guard let target = UInt64(inv.args[0], radix: 16) else { throw fail(ExitCode.badArgs, parseIntError(inv.args[0], "ParseUint")) }
        let client = try globals.makeClient()
        var leader: (String, UInt64)?
        for ep in globals.endpoints {
            let s: StatusResponse
            do { s = try await client.status(endpoint: ep) } catch { throw globals.rpcFailure(error) }
            if s.header.memberID == s.leader { leader = (ep, s.leader); break }
        }
        guard let leader else { throw fail(ExitCode.badArgs, "no leader endpoint given at [\(globals.endpoints.joined(separator: " "))]") }
        do { try await client.moveLeader(targetID: target, endpoint: leader.0) } catch { throw globals.rpcFailure(error) }
        let p = globals.printer
        switch p.format {
        case .simple: Out.print("Leadership transferred from \(memberHex(leader.1)) to \(memberHex(target))")
        case .json: p.printJSON(JSONOf.headerOnly(ResponseHeader(), has: false))
        default: throw unsupported(p.format)
        }
    }
    let downgrade = Command("downgrade <TARGET_VERSION>", "Downgrade related commands")
    func downgradeAction(_ use: String, _ short: String, _ action: Etcdserverpb_DowngradeRequest.DowngradeAction, _ verb: String) -> Command {
        Command(use, short) { inv in
            let globals = g(inv)
            var version = ""
            if action != .cancel {
                if inv.args.isEmpty { throw fail(ExitCode.badArgs, "TARGET_VERSION not provided") }
                if inv.args.count > 1 { throw fail(ExitCode.badArgs, "too many arguments") }
                version = inv.args[0]
                if version.isEmpty { throw fail(ExitCode.badArgs, "target version not provided") }
            }
            let client = try globals.makeClient()
            let r: Etcdserverpb_DowngradeResponse
            do { r = try await client.downgrade(action, version: version) } catch { throw globals.rpcFailure(error) }
            Out.print("Downgrade \(verb) success, cluster version \(r.version)")
        }
    }
    downgrade.add(
        downgradeAction("validate <TARGET_VERSION>", "Validate downgrade capability before starting downgrade", .validate, "validate"),
        downgradeAction("enable <TARGET_VERSION>", "Start a downgrade action to cluster", .enable, "enable"),
        downgradeAction("cancel", "Cancel the ongoing downgrade action to cluster", .cancel, "cancel"))

    return [alarm, defrag, snapshot, moveLeader, downgrade]
}

func alarmName(_ a: Etcdserverpb_AlarmType) -> String {
    switch a {
    case .none: return "NONE"
    case .nospace: return "NOSPACE"
    case .corrupt: return "CORRUPT"
    default: return "\(a.rawValue)"
    }
}
