import EtcdClient
import EtcdProto
import Foundation

// MARK: - watch

struct WatchSettings {
    var prefix = false
    var rev: Int64 = 0
    var prevKV = false
}

func watchCommand(_ g: @escaping (Invocation) -> Globals) -> Command {
    let c = Command("watch [options] [key or prefix] [range_end] [--] [exec-command arg1 arg2 ...]", "Watches events stream on keys or prefixes") { inv in
        try await runWatch(inv, g(inv))
    }
    c.flag("interactive", .bool, "false", "Interactive mode", short: "i")
    c.flag("prefix", .bool, "false", "Watch on a prefix if prefix is set")
    c.flag("rev", .int, "0", "Revision to start watching")
    c.flag("prev-kv", .bool, "false", "get the previous key-value pair before the event happens")
    c.flag("print-k8s", .bool, "false", "Decode values stored by Kubernetes (protobuf with the \"k8s\\x00\" prefix) when using the \"simple\" output format", hidden: true)
    return c
}

func runWatch(_ inv: Invocation, _ globals: Globals) async throws {
    let env = ProcessInfo.processInfo.environment
    let envKey = env["ETCDCTL_WATCH_KEY"] ?? "", envRange = env["ETCDCTL_WATCH_RANGE_END"] ?? ""
    if envKey.isEmpty && !envRange.isEmpty {
        throw fail(ExitCode.badArgs, "ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END=\(goQuote(envRange))")
    }
    let extraEnv = ["ETCDCTL_WATCH_KEY", "ETCDCTL_WATCH_RANGE_END"]
    let k8s = inv.flag("print-k8s").bool
    if k8s && globals.printer.format != .simple { throw fail(ExitCode.badArgs, "print-k8s is only for `--write-out=simple`") }
    if inv.flag("interactive").bool {
        let client = try globals.makeClient(extraEnv: extraEnv)
        try await watchInteractive(client, globals, envKey: envKey, envRange: envRange)
        return
    }
    // Split at "--" in the raw arguments (after "watch").
    var raw = inv.rawArgs
    if let w = raw.firstIndex(of: "watch") { raw = Array(raw[(w + 1)...]) }
    let sep = raw.firstIndex(of: "--")
    if let sep, sep == raw.count - 1 { throw fail(ExitCode.badArgs, "bad number of arguments (found separator --, but no commands)") }
    var watchArgs = inv.args
    var execArgs: [String] = []
    if let sep {
        execArgs = Array(raw[(sep + 1)...])
        if !envKey.isEmpty {
            // Arguments before "--" that are not flags conflict with the env key.
            let before = Array(raw[..<sep])
            let stripped = Cobra.stripFlags(before, inv.command)
            if !stripped.isEmpty { throw fail(ExitCode.badArgs, "bad number of arguments (found conflicting environment key)") }
        }
        // Drop the exec command words from the positional arguments.
        if let first = execArgs.first, let end = watchArgs.lastIndex(of: first) { watchArgs = Array(watchArgs[..<end]) }
    } else {
        if raw.isEmpty && envKey.isEmpty { throw fail(ExitCode.badArgs, "bad number of arguments") }
        if !watchArgs.isEmpty && !envKey.isEmpty { throw fail(ExitCode.badArgs, "bad number of arguments (found conflicting environment key)") }
    }
    if !envKey.isEmpty { watchArgs = [envKey] + (envRange.isEmpty ? [] : [envRange]) + watchArgs }
    let settings = WatchSettings(prefix: inv.flag("prefix").bool, rev: inv.flag("rev").int, prevKV: inv.flag("prev-kv").bool)
    let client = try globals.makeClient(extraEnv: extraEnv)
    let watch = try await startWatch(client, watchArgs, settings, globals)
    await printWatch(watch, execArgs: execArgs, globals: globals, k8s: k8s)
    throw fail(ExitCode.interrupted, "watch is canceled by the server")
}

func startWatch(_ client: EtcdClient, _ args: [String], _ s: WatchSettings, _ globals: Globals, interactive: Bool = false) async throws -> EtcdWatch {
    guard let key = args.first else { throw fail(ExitCode.badArgs, "bad number of arguments") }
    var options = WatchOptions(startRevision: s.rev, prevKV: s.prevKV)
    if args.count == 2 {
        if s.prefix { throw fail(ExitCode.badArgs, "`range_end` and `--prefix` are mutually exclusive") }
        options.range = .end(Data(args[1].utf8))
    }
    if s.prefix { options.range = .prefix }
    do {
        return try await client.watch(key, options: options)
    } catch let e as EtcdClientError {
        if case .watchCompacted = e {
            Out.err("watch was canceled (\(e))")
            throw fail(ExitCode.interrupted, "watch is canceled by the server")
        }
        if case .watchCanceled = e {
            Out.err("watch was canceled (\(e))")
            throw fail(ExitCode.interrupted, "watch is canceled by the server")
        }
        throw fail(ExitCode.interrupted, "watch is canceled by the server")
    }
}

func printWatch(_ watch: EtcdWatch, execArgs: [String], globals: Globals, k8s: Bool = false) async {
    var printer = globals.printer
    printer.k8s = k8s
    do {
        for try await response in watch {
            if response.isProgressNotify { Out.print("progress notify: \(response.header.revision)") }
            try? printer.watch(response)
            guard !execArgs.isEmpty else { continue }
            for event in response.events {
                let process = Process()
                let path = execArgs[0].contains("/") ? execArgs[0] : findInPath(execArgs[0])
                process.executableURL = URL(fileURLWithPath: path)
                process.arguments = Array(execArgs.dropFirst())
                var env = ProcessInfo.processInfo.environment
                env["ETCD_WATCH_REVISION"] = "\(response.header.revision)"
                env["ETCD_WATCH_EVENT_TYPE"] = goQuote(event.type == .put ? "PUT" : "DELETE")
                env["ETCD_WATCH_KEY"] = goQuoteBytes(event.kv.key)
                env["ETCD_WATCH_VALUE"] = goQuoteBytes(event.kv.value)
                process.environment = env
                do {
                    try process.run()
                    process.waitUntilExit()
                    if process.terminationStatus != 0 {
                        Out.err("command \(goStringSlice(execArgs)) error (exit status \(process.terminationStatus))")
                        exit(1)
                    }
                } catch {
                    Out.err("command \(goStringSlice(execArgs)) error (exec: \(goQuote(execArgs[0])): executable file not found in $PATH)")
                    exit(1)
                }
            }
        }
    } catch {
        Out.err("watch was canceled (\(EtcdClientError(error)))")
    }
}

/// Go's `%q` of a []string: ["a" "b"].
func goStringSlice(_ items: [String]) -> String { "[" + items.map(goQuote).joined(separator: " ") + "]" }

func findInPath(_ name: String) -> String {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let candidate = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return name
}

func watchInteractive(_ client: EtcdClient, _ globals: Globals, envKey: String, envRange: String) async throws {
    let reader = LineReader()
    var watches: [EtcdWatch] = []
    var tasks: [Task<Void, Never>] = []
    defer { tasks.forEach { $0.cancel() } }
    while true {
        let (raw, eof) = await Task.detached { reader.next() }.value
        if eof { throw fail(ExitCode.invalidInput, "Error reading watch request line: EOF") }
        let line = raw.hasSuffix("\n") ? String(raw.dropLast()) : raw
        let args = argify(line)
        guard let first = args.first else {
            Out.err("Invalid command: \(line) (watch and progress supported)")
            continue
        }
        switch first {
        case "watch":
            if args.count < 2 && envKey.isEmpty {
                Out.err("Invalid command \(line) (command type or key is not provided)")
                continue
            }
            var rest = Array(args.dropFirst())
            var execArgs: [String] = []
            if let sep = rest.firstIndex(of: "--") {
                if sep == rest.count - 1 { throw fail(ExitCode.badArgs, "bad number of arguments (found separator --, but no commands)") }
                execArgs = Array(rest[(sep + 1)...])
                rest = Array(rest[..<sep])
            }
            let flags = watchCommand({ _ in globals })
            let positional: [String]
            do { positional = try Cobra.parseFlags(flags, rest) } catch let e as FlagError { throw fail(ExitCode.badArgs, e.message) }
            if execArgs.isEmpty && envKey.isEmpty && positional.isEmpty { throw fail(ExitCode.badArgs, "bad number of arguments") }
            if execArgs.isEmpty && !positional.isEmpty && !envKey.isEmpty {
                throw fail(ExitCode.badArgs, "bad number of arguments (found conflicting environment key)")
            }
            var watchArgs = positional
            if !envKey.isEmpty { watchArgs = [envKey] + (envRange.isEmpty ? [] : [envRange]) + watchArgs }
            let settings = WatchSettings(prefix: flags.lookup("prefix")!.bool, rev: flags.lookup("rev")!.int, prevKV: flags.lookup("prev-kv")!.bool)
            let watch: EtcdWatch
            do { watch = try await startWatch(client, watchArgs, settings, globals, interactive: true) } catch {
                Out.err("Invalid command \(line) (\(error))")
                continue
            }
            watches.append(watch)
            tasks.append(Task { await printWatch(watch, execArgs: execArgs, globals: globals) })
        case "progress":
            watches.forEach { $0.requestProgress() }
        default:
            Out.err("Invalid command \(line) (only support watch)")
        }
    }
}

// MARK: - lease

func leaseHex(_ id: Int64) -> String {
    let s = String(UInt64(bitPattern: id), radix: 16)
    return String(repeating: "0", count: max(0, 16 - s.count)) + s
}

func leaseFromArg(_ s: String) throws -> Int64 {
    guard let id = parseHexLease(s) else {
        throw fail(ExitCode.badArgs, "bad lease ID arg (\(parseIntError(s))), expecting ID in Hex")
    }
    return id
}

func leaseCommand(_ g: @escaping (Invocation) -> Globals) -> Command {
    let lease = Command("lease <subcommand>", "Lease related commands")
    let grant = Command("grant <ttl>", "Creates leases") { inv in
        let globals = g(inv)
        guard inv.args.count == 1 else { throw fail(ExitCode.badArgs, "lease grant command needs TTL argument") }
        guard let ttl = Int64(inv.args[0]) else { throw fail(ExitCode.badArgs, "bad TTL (\(parseIntError(inv.args[0])))") }
        let client = try globals.makeClient()
        let r: LeaseGrantResponse
        do { r = try await client.leaseGrant(ttl: ttl) } catch {
            throw globals.rpcFailure(error, wrap: { "failed to grant lease (\($0))" })
        }
        let p = globals.printer
        switch p.format {
        case .simple: Out.print("lease \(leaseHex(r.id)) granted with TTL(\(r.ttl)s)")
        case .json:
            var o = JSONObject()
            JSONOf.embeddedHeader(r.header, into: &o)
            o.int("ID", r.id, omit: false); o.int("TTL", r.ttl, omit: false); o.string("Error", r.error, omit: false)
            p.printJSON(o.json)
        case .fields:
            p.fieldsHeader(r.header)
            Out.print("\"ID\" : \(r.id)")
            Out.print("\"TTL\" : \(r.ttl)")
        case .protobuf, .table: throw unsupported(p.format)
        }
    }
    let revoke = Command("revoke <leaseID>", "Revokes leases") { inv in
        let globals = g(inv)
        guard inv.args.count == 1 else { throw fail(ExitCode.badArgs, "lease revoke command needs 1 argument") }
        let id = try leaseFromArg(inv.args[0])
        let client = try globals.makeClient()
        let r: LeaseRevokeResponse
        do { r = try await client.leaseRevoke(id: id) } catch {
            throw globals.rpcFailure(error, wrap: { "failed to revoke lease (\($0))" })
        }
        let p = globals.printer
        switch p.format {
        case .simple: Out.print("lease \(leaseHex(id)) revoked")
        case .json: p.printJSON(JSONOf.headerOnly(r.header, has: r.hasHeader))
        case .fields: p.fieldsHeader(r.header)
        case .protobuf: try p.protobuf(r)
        case .table: throw unsupported(p.format)
        }
    }
    let ttl = Command("timetolive <leaseID> [options]", "Get lease information") { inv in
        let globals = g(inv)
        guard inv.args.count == 1 else { throw fail(ExitCode.badArgs, "lease timetolive command needs lease ID as argument") }
        let keys = inv.flag("keys").bool
        let id = try leaseFromArg(inv.args[0])
        let client = try globals.makeClient()
        let r: LeaseTimeToLiveResponse
        do { r = try await client.leaseTimeToLive(id: id, keys: keys) } catch { throw globals.rpcFailure(error, code: ExitCode.badConnection) }
        let p = globals.printer
        switch p.format {
        case .simple:
            if r.grantedTtl == 0 && r.ttl == -1 { Out.print("lease \(leaseHex(r.id)) already expired"); return }
            var text = "lease \(leaseHex(r.id)) granted with TTL(\(r.grantedTtl)s), remaining(\(r.ttl)s)"
            if keys { text += ", attached keys([\(r.keys.map { String(decoding: $0, as: UTF8.self) }.joined(separator: " "))])" }
            Out.print(text)
        case .json:
            var o = JSONObject()
            JSONOf.embeddedHeader(r.header, into: &o)
            o.int("id", r.id, omit: false); o.int("ttl", r.ttl, omit: false); o.int("granted-ttl", r.grantedTtl, omit: false)
            o.value("keys", r.keys.isEmpty ? .null : .array(r.keys.map { .bytes($0) }))
            p.printJSON(o.json)
        case .fields:
            p.fieldsHeader(r.header)
            Out.print("\"ID\" : \(r.id)")
            Out.print("\"TTL\" : \(r.ttl)")
            Out.print("\"GrantedTTL\" : \(r.grantedTtl)")
            for k in r.keys { Out.print("\"Key\" : \(goQuoteBytes(k))") }
        case .protobuf, .table: throw unsupported(p.format)
        }
    }
    ttl.flag("keys", .bool, "false", "Get keys attached to this lease")
    let list = Command("list", "List all active leases") { inv in
        let globals = g(inv)
        let client = try globals.makeClient()
        let r: LeaseLeasesResponse
        do { r = try await client.leases() } catch { throw globals.rpcFailure(error, code: ExitCode.badConnection) }
        let p = globals.printer
        switch p.format {
        case .simple:
            Out.print("found \(r.leases.count) leases")
            for l in r.leases { Out.print(leaseHex(l.id)) }
        case .json:
            var o = JSONObject()
            JSONOf.embeddedHeader(r.header, into: &o)
            o.value("leases", r.leases.isEmpty ? .null : .array(r.leases.map { .object([("id", .int($0.id))]) }))
            p.printJSON(o.json)
        case .fields:
            p.fieldsHeader(r.header)
            for l in r.leases { Out.print("\"ID\" : \(l.id)") }
        case .protobuf, .table: throw unsupported(p.format)
        }
    }
    let keepAlive = Command("keep-alive [options] <leaseID>", "Keeps leases alive (renew)") { inv in
        let globals = g(inv)
        guard inv.args.count == 1 else { throw fail(ExitCode.badArgs, "lease keep-alive command needs lease ID as argument") }
        let id = try leaseFromArg(inv.args[0])
        let client = try globals.makeClient()
        let p = globals.printer
        func show(_ r: LeaseKeepAliveResponse) throws {
            switch p.format {
            case .simple: Out.print("lease \(leaseHex(r.id)) keepalived with TTL(\(r.ttl))")
            case .json:
                var o = JSONObject()
                JSONOf.embeddedHeader(r.header, into: &o)
                o.int("ID", r.id, omit: false); o.int("TTL", r.ttl, omit: false)
                p.printJSON(o.json)
            case .fields:
                p.fieldsHeader(r.header)
                Out.print("\"ID\" : \(r.id)")
                Out.print("\"TTL\" : \(r.ttl)")
            case .protobuf, .table: throw unsupported(p.format)
            }
        }
        if inv.flag("once").bool {
            let r: LeaseKeepAliveResponse
            do { r = try await client.leaseKeepAliveOnce(id: id) } catch { throw globals.rpcFailure(error, code: ExitCode.badConnection, logged: false) }
            try show(r)
            return
        }
        for try await r in client.leaseKeepAlive(id: id) { try show(r) }
        if p.format == .simple { Out.print("lease \(leaseHex(id)) expired or revoked.") }
    }
    keepAlive.flag("once", .bool, "false", "Resets the keep-alive time to its original value and exits immediately")
    return lease.add(grant, revoke, ttl, list, keepAlive)
}
