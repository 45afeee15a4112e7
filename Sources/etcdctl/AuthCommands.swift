import EtcdClient
import EtcdProto
import Foundation

func headerOutput(_ p: Printer, _ header: ResponseHeader, simple: String) throws {
    switch p.format {
    case .simple: Out.print(simple)
    case .json: p.printJSON(JSONOf.headerOnly(header))
    case .fields: p.fieldsHeader(header)
    case .protobuf:
        var r = Etcdserverpb_AuthUserAddResponse(); r.header = header; try p.protobuf(r)
    case .table: throw unsupported(p.format)
    }
}

func authCommands(_ g: @escaping (Invocation) -> Globals) -> [Command] {
    let auth = Command("auth <enable or disable>", "Enable or disable authentication")
    let enable = Command("enable", "Enables authentication") { inv in
        let globals = g(inv)
        if !inv.args.isEmpty { throw fail(ExitCode.badArgs, "auth enable command does not accept any arguments") }
        let client = try globals.makeClient()
        do {
            while true {
                do { try await client.authEnable(); break } catch let e where EtcdClientError(e) == .rootRoleNotExist {
                    globals.logRetryWarning(.rootRoleNotExist)
                    try await client.roleAdd("root")
                    try await client.userGrantRole("root", role: "root")
                }
            }
        } catch { throw globals.rpcFailure(error) }
        Out.print("Authentication Enabled")
    }
    let disable = Command("disable", "Disables authentication") { inv in
        let globals = g(inv)
        if !inv.args.isEmpty { throw fail(ExitCode.badArgs, "auth disable command does not accept any arguments") }
        let client = try globals.makeClient()
        do { try await client.authDisable() } catch { throw globals.rpcFailure(error) }
        Out.print("Authentication Disabled")
    }
    let status = Command("status", "Returns authentication status") { inv in
        let globals = g(inv)
        if !inv.args.isEmpty { throw fail(ExitCode.badArgs, "auth status command does not accept any arguments") }
        let client = try globals.makeClient()
        let r: Etcdserverpb_AuthStatusResponse
        do { r = try await client.authStatus() } catch { throw globals.rpcFailure(error) }
        let p = globals.printer
        switch p.format {
        case .simple:
            Out.print("Authentication Status: \(r.enabled)")
            Out.print("AuthRevision: \(r.authRevision)")
        case .json:
            var o = JSONObject()
            o.value("header", JSONOf.header(r.header)); o.bool("enabled", r.enabled); o.uint("authRevision", r.authRevision)
            p.printJSON(o.json)
        case .protobuf: try p.protobuf(r)
        case .fields, .table: throw unsupported(p.format)
        }
    }
    auth.add(enable, disable, status)

    // user
    let user = Command("user <subcommand>", "User related commands")
    let userAdd = Command("add <user name or user:password> [options]", "Adds a new user") { inv in
        let globals = g(inv)
        guard inv.args.count == 1 else { throw fail(ExitCode.badArgs, "user add command requires user name as its argument") }
        var name = inv.args[0], password = ""
        let noPassword = inv.flag("no-password").bool
        if !noPassword {
            if !inv.flag("new-user-password").string.isEmpty {
                password = inv.flag("new-user-password").string
            } else {
                let parts = name.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
                if parts.count < 2 {
                    password = inv.flag("interactive").bool ? try askPasswordTwice(name) : firstWordOfStdin()
                } else {
                    name = String(parts[0]); password = String(parts[1])
                    if name.isEmpty { throw fail(ExitCode.badArgs, "empty user name is not allowed") }
                }
            }
        }
        let client = try globals.makeClient()
        let r: Etcdserverpb_AuthUserAddResponse
        do { r = try await client.userAdd(name, password: password, noPassword: noPassword) } catch { throw globals.rpcFailure(error) }
        try headerOutput(globals.printer, r.header, simple: "User \(name) created")
    }
    userAdd.flag("interactive", .bool, "true", "Read password from stdin instead of interactive terminal")
    userAdd.flag("new-user-password", .string, "", "Supply password from the command line flag")
    userAdd.flag("no-password", .bool, "false", "Create a user without password (CN based auth only)")
    let userDelete = Command("delete <user name>", "Deletes a user") { inv in
        let globals = g(inv)
        guard inv.args.count == 1 else { throw fail(ExitCode.badArgs, "user delete command requires user name as its argument") }
        let client = try globals.makeClient()
        let r: Etcdserverpb_AuthUserDeleteResponse
        do { r = try await client.userDelete(inv.args[0]) } catch { throw globals.rpcFailure(error) }
        try headerOutput(globals.printer, r.header, simple: "User \(inv.args[0]) deleted")
    }
    let userGet = Command("get <user name> [options]", "Gets detailed information of a user") { inv in
        let globals = g(inv)
        guard inv.args.count == 1 else { throw fail(ExitCode.badArgs, "user get command requires user name as its argument") }
        let name = inv.args[0]
        let client = try globals.makeClient()
        let r: Etcdserverpb_AuthUserGetResponse
        do { r = try await client.userGet(name) } catch { throw globals.rpcFailure(error) }
        let p = globals.printer
        if inv.flag("detail").bool {
            Out.print("User: \(name)")
            for role in r.roles {
                Out.print("")
                let rr: Etcdserverpb_AuthRoleGetResponse
                do { rr = try await client.roleGet(role) } catch { throw globals.rpcFailure(error) }
                try printRole(p, role, rr)
            }
            return
        }
        switch p.format {
        case .simple:
            Out.print("User: \(name)")
            Out.print("Roles:" + r.roles.map { " " + $0 }.joined())
        case .json:
            var o = JSONObject(); o.value("header", JSONOf.header(r.header)); o.strings("roles", r.roles); p.printJSON(o.json)
        case .protobuf: try p.protobuf(r)
        case .fields, .table: throw unsupported(p.format)
        }
    }
    userGet.flag("detail", .bool, "false", "Show permissions of roles granted to the user")
    let userList = Command("list", "Lists all users") { inv in
        let globals = g(inv)
        if !inv.args.isEmpty { throw fail(ExitCode.badArgs, "user list command requires no arguments") }
        let client = try globals.makeClient()
        let r: Etcdserverpb_AuthUserListResponse
        do { r = try await client.userList() } catch { throw globals.rpcFailure(error) }
        let p = globals.printer
        switch p.format {
        case .simple: for u in r.users { Out.print(u) }
        case .json: var o = JSONObject(); o.value("header", JSONOf.header(r.header)); o.strings("users", r.users); p.printJSON(o.json)
        case .protobuf: try p.protobuf(r)
        case .fields, .table: throw unsupported(p.format)
        }
    }
    let passwd = Command("passwd <user name> [options]", "Changes password of user") { inv in
        let globals = g(inv)
        guard inv.args.count == 1 else { throw fail(ExitCode.badArgs, "user passwd command requires user name as its argument") }
        let password = inv.flag("interactive").bool ? try askPasswordTwice(inv.args[0]) : firstWordOfStdin()
        let client = try globals.makeClient()
        let r: Etcdserverpb_AuthUserChangePasswordResponse
        do { r = try await client.userChangePassword(inv.args[0], password: password) } catch { throw globals.rpcFailure(error) }
        try headerOutput(globals.printer, r.header, simple: "Password updated")
    }
    passwd.flag("interactive", .bool, "true", "If true, read password from stdin instead of interactive terminal")
    let grantRole = Command("grant-role <user name> <role name>", "Grants a role to a user") { inv in
        let globals = g(inv)
        guard inv.args.count == 2 else { throw fail(ExitCode.badArgs, "user grant command requires user name and role name as its argument") }
        let client = try globals.makeClient()
        let r: Etcdserverpb_AuthUserGrantRoleResponse
        do { r = try await client.userGrantRole(inv.args[0], role: inv.args[1]) } catch { throw globals.rpcFailure(error) }
        try headerOutput(globals.printer, r.header, simple: "Role \(inv.args[1]) is granted to user \(inv.args[0])")
    }
    let revokeRole = Command("revoke-role <user name> <role name>", "Revokes a role from a user") { inv in
        let globals = g(inv)
        guard inv.args.count == 2 else { throw fail(ExitCode.badArgs, "user revoke-role requires user name and role name as its argument") }
        let client = try globals.makeClient()
        let r: Etcdserverpb_AuthUserRevokeRoleResponse
        do { r = try await client.userRevokeRole(inv.args[0], role: inv.args[1]) } catch { throw globals.rpcFailure(error) }
        try headerOutput(globals.printer, r.header, simple: "Role \(inv.args[1]) is revoked from user \(inv.args[0])")
    }
    user.add(userAdd, userDelete, userGet, userList, passwd, grantRole, revokeRole)

    // role
    let role = Command("role <subcommand>", "Role related commands")
    let roleAdd = Command("add <role name>", "Adds a new role") { inv in
        let globals = g(inv)
        guard inv.args.count == 1 else { throw fail(ExitCode.badArgs, "role add command requires role name as its argument") }
        let client = try globals.makeClient()
        let r: Etcdserverpb_AuthRoleAddResponse
        do { r = try await client.roleAdd(inv.args[0]) } catch { throw globals.rpcFailure(error) }
        try headerOutput(globals.printer, r.header, simple: "Role \(inv.args[0]) created")
    }
    let roleDelete = Command("delete <role name>", "Deletes a role") { inv in
        let globals = g(inv)
        guard inv.args.count == 1 else { throw fail(ExitCode.badArgs, "role delete command requires role name as its argument") }
        let client = try globals.makeClient()
        let r: Etcdserverpb_AuthRoleDeleteResponse
        do { r = try await client.roleDelete(inv.args[0]) } catch { throw globals.rpcFailure(error) }
        try headerOutput(globals.printer, r.header, simple: "Role \(inv.args[0]) deleted")
    }
    let roleGet = Command("get <role name>", "Gets detailed information of a role") { inv in
        let globals = g(inv)
        guard inv.args.count == 1 else { throw fail(ExitCode.badArgs, "role get command requires role name as its argument") }
        let client = try globals.makeClient()
        let r: Etcdserverpb_AuthRoleGetResponse
        do { r = try await client.roleGet(inv.args[0]) } catch { throw globals.rpcFailure(error) }
        try printRole(globals.printer, inv.args[0], r)
    }
    let roleList = Command("list", "Lists all roles") { inv in
        let globals = g(inv)
        if !inv.args.isEmpty { throw fail(ExitCode.badArgs, "role list command requires no arguments") }
        let client = try globals.makeClient()
        let r: Etcdserverpb_AuthRoleListResponse
        do { r = try await client.roleList() } catch { throw globals.rpcFailure(error) }
        let p = globals.printer
        switch p.format {
        case .simple: for x in r.roles { Out.print(x) }
        case .json: var o = JSONObject(); o.value("header", JSONOf.header(r.header)); o.strings("roles", r.roles); p.printJSON(o.json)
        case .fields:
            p.fieldsHeader(r.header)
            Out.print("\"Roles\" :" + r.roles.map { " " + goQuote($0) }.joined())
        case .protobuf: try p.protobuf(r)
        case .table: throw unsupported(p.format)
        }
    }
    let grantPerm = Command("grant-permission [options] <role name> <permission type> <key> [endkey]", "Grants a key to a role") { inv in
        let globals = g(inv)
        let args = inv.args
        if args.count < 3 { throw fail(ExitCode.badArgs, "role grant command requires role name, permission type, and key [endkey] as its argument") }
        let type: Authpb_Permission.TypeEnum
        switch args[1].uppercased() {
        case "READ": type = .read
        case "WRITE": type = .write
        case "READWRITE": type = .readwrite
        default: throw fail(ExitCode.badArgs, "invalid permission type: \(args[1])")
        }
        let (key, end) = try permRange(Array(args[2...]), prefix: inv.flag("prefix").bool, fromKey: inv.flag("from-key").bool)
        let client = try globals.makeClient()
        let r: Etcdserverpb_AuthRoleGrantPermissionResponse
        do { r = try await client.roleGrantPermission(args[0], key: key, rangeEnd: end, type: type) } catch { throw globals.rpcFailure(error) }
        try headerOutput(globals.printer, r.header, simple: "Role \(args[0]) updated")
    }
    grantPerm.flag("prefix", .bool, "false", "grant a prefix permission")
    grantPerm.flag("from-key", .bool, "false", "grant a permission of keys that are greater than or equal to the given key using byte compare")
    let revokePerm = Command("revoke-permission <role name> <key> [endkey]", "Revokes a key from a role") { inv in
        let globals = g(inv)
        let args = inv.args
        if args.count < 2 { throw fail(ExitCode.badArgs, "role revoke-permission command requires role name and key [endkey] as its argument") }
        let (key, end) = try permRange(Array(args[1...]), prefix: inv.flag("prefix").bool, fromKey: inv.flag("from-key").bool)
        let client = try globals.makeClient()
        let r: Etcdserverpb_AuthRoleRevokePermissionResponse
        do { r = try await client.roleRevokePermission(args[0], key: key, rangeEnd: end) } catch { throw globals.rpcFailure(error) }
        let simple: String
        if end.isEmpty { simple = "Permission of key \(args[1]) is revoked from role \(args[0])" }
        else if end != "\u{0}" { simple = "Permission of range [\(args[1]), \(end)) is revoked from role \(args[0])" }
        else { simple = "Permission of range [\(args[1]), <open ended> is revoked from role \(args[0])" }
        try headerOutput(globals.printer, r.header, simple: simple)
    }
    revokePerm.flag("prefix", .bool, "false", "revoke a prefix permission")
    revokePerm.flag("from-key", .bool, "false", "revoke a permission of keys that are greater than or equal to the given key using byte compare")
    role.add(roleAdd, roleDelete, roleGet, roleList, grantPerm, revokePerm)
    return [auth, user, role]
}

func permRange(_ args: [String], prefix: Bool, fromKey: Bool) throws -> (String, String) {
    var key = args[0]
    var end = ""
    if key.isEmpty {
        if prefix && fromKey { throw fail(ExitCode.badArgs, "--from-key and --prefix flags are mutually exclusive") }
        key = "\u{0}"
        if prefix || fromKey { end = "\u{0}" }
        return (key, end)
    }
    if args.count == 1 {
        if prefix {
            if fromKey { throw fail(ExitCode.badArgs, "--from-key and --prefix flags are mutually exclusive") }
            end = String(decoding: KeyRange.prefixEnd(Data(key.utf8)), as: UTF8.self)
        } else if fromKey { end = "\u{0}" }
        return (key, end)
    }
    if prefix { throw fail(ExitCode.badArgs, "unexpected endkey argument with --prefix flag") }
    if fromKey { throw fail(ExitCode.badArgs, "unexpected endkey argument with --from-key flag") }
    return (key, args[1])
}

func printRole(_ p: Printer, _ name: String, _ r: Etcdserverpb_AuthRoleGetResponse) throws {
    switch p.format {
    case .simple:
        Out.print("Role \(name)")
        func show(_ perm: Permission) {
            let key = String(decoding: perm.key, as: UTF8.self)
            let end = String(decoding: perm.rangeEnd, as: UTF8.self)
            if perm.rangeEnd.isEmpty { Out.print("\t\(key)"); return }
            var line = end != "\u{0}" ? "\t[\(key), \(end))" : "\t[\(key), <open ended>"
            if KeyRange.prefixEnd(perm.key) == perm.rangeEnd { line += " (prefix \(key))" }
            Out.print(line)
        }
        Out.print("KV Read:")
        for perm in r.perm where perm.permType == .read || perm.permType == .readwrite { show(perm) }
        Out.print("KV Write:")
        for perm in r.perm where perm.permType == .write || perm.permType == .readwrite { show(perm) }
    case .json:
        var o = JSONObject()
        o.value("header", JSONOf.header(r.header))
        o.array("perm", r.perm.map { perm in
            var m = JSONObject(); m.int("permType", Int64(perm.permType.rawValue)); m.bytes("key", perm.key); m.bytes("range_end", perm.rangeEnd); return m.json
        })
        p.printJSON(o.json)
    case .fields:
        p.fieldsHeader(r.header)
        for perm in r.perm {
            Out.print("\"PermType\" :  \(["READ", "WRITE", "READWRITE"][min(2, max(0, perm.permType.rawValue))])")
            Out.print("\"Key\" : \(goQuoteBytes(perm.key))")
            Out.print("\"RangeEnd\" : \(goQuoteBytes(perm.rangeEnd))")
        }
    case .protobuf: try p.protobuf(r)
    case .table: throw unsupported(p.format)
    }
}

func askPasswordTwice(_ name: String) throws -> String {
    let first = readPassword(prompt: "Password of \(name): ")
    if first.isEmpty { throw fail(ExitCode.badArgs, "empty password") }
    let second = readPassword(prompt: "Type password of \(name) again for confirmation: ")
    if first != second { throw fail(ExitCode.badArgs, "given passwords are different") }
    return first
}

func firstWordOfStdin() -> String {
    let text = String(decoding: readAllStdin(), as: UTF8.self)
    return text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "\r" }).first.map(String.init) ?? ""
}

// MARK: - lock / elect

/// Resolves (for every waiter) once SIGINT or SIGTERM arrives.
final class SignalWaiter: @unchecked Sendable {
    private var sources: [DispatchSourceSignal] = []
    private let lock = NSLock()
    private var fired = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    init() {
        for sig in [SIGINT, SIGTERM] {
            Foundation.signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [weak self] in self?.fire() }
            source.resume()
            sources.append(source)
        }
    }

    private func fire() {
        lock.lock()
        fired = true
        let pending = waiters
        waiters = []
        lock.unlock()
        pending.forEach { $0.resume() }
    }

    func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            lock.lock()
            if fired { lock.unlock(); c.resume(); return }
            waiters.append(c)
            lock.unlock()
        }
    }
}

func lockElectCommands(_ g: @escaping (Invocation) -> Globals) -> [Command] {
    let lock = Command("lock <lockname> [exec-command arg1 arg2 ...]", "Acquires a named lock") { inv in
        let globals = g(inv)
        if inv.args.isEmpty { throw fail(ExitCode.badArgs, "lock takes a lock name argument and an optional command to execute") }
        let client = try globals.makeClient()
        let signals = SignalWaiter()
        do {
            let session = try await Session(client: client, ttl: inv.flag("ttl").int)
            let mutex = EtcdMutex(session: session, name: inv.args[0])
            let locking = Task { try await mutex.lock() }
            let interrupted = Task { await signals.wait(); locking.cancel() }
            try await locking.value
            interrupted.cancel()
            if inv.args.count > 1 {
                let process = Process()
                let cmd = inv.args[1]
                process.executableURL = URL(fileURLWithPath: cmd.contains("/") ? cmd : findInPath(cmd))
                process.arguments = Array(inv.args.dropFirst(2))
                var env = ProcessInfo.processInfo.environment
                env["ETCD_LOCK_KEY"] = mutex.key
                env["ETCD_LOCK_REV"] = "\(mutex.header.revision)"
                process.environment = env
                try process.run()
                process.waitUntilExit()
                try await mutex.unlock()
                if process.terminationStatus != 0 { throw fail(ExitCode.error, "exit status \(process.terminationStatus)") }
                return
            }
            let held = try await client.get(mutex.key)
            if held.kvs.isEmpty { throw fail(ExitCode.error, "lock lost on init") }
            try globals.printer.get(held)
            let outcome = await firstOf({ await signals.wait() }, { await session.done() }) == 0
            if outcome { try await mutex.unlock(); return }
            throw fail(ExitCode.error, "session expired")
        } catch let exit as Exit { throw exit } catch {
            throw fail(ExitCode.error, "\(EtcdClientError(error))")
        }
    }
    lock.flag("ttl", .int, "10", "timeout for session")

    let elect = Command("elect <election-name> [proposal]", "Observes and participates in leader election") { inv in
        let globals = g(inv)
        if inv.args.count != 1 && inv.args.count != 2 {
            throw fail(ExitCode.badArgs, "elect takes one election name argument and an optional proposal argument")
        }
        let listen = inv.flag("listen").bool
        if inv.args.count == 1 && !listen { throw fail(ExitCode.badArgs, "no proposal argument but -l not set") }
        if inv.args.count == 2 && listen { throw fail(ExitCode.badArgs, "proposal given but -l is set") }
        let client = try globals.makeClient()
        let signals = SignalWaiter()
        do {
            let session = try await Session(client: client, ttl: 60)
            let election = Election(session: session, name: inv.args[0])
            if listen {
                let observing = Task {
                    for try await leader in election.observe() { try globals.printer.get(leader) }
                }
                let stopped = await firstOf({ await signals.wait() }, { _ = await observing.result }) == 0
                observing.cancel()
                if !stopped { throw fail(ExitCode.error, "elect: observer lost") }
                return
            }
            let campaigning = Task { try await election.campaign(inv.args[1]) }
            let interrupted = Task { await signals.wait(); campaigning.cancel() }
            try await campaigning.value
            let leader = try await client.get(election.key)
            try globals.printer.get(leader)
            let stopped = await firstOf({ await signals.wait() }, { await session.done() }) == 0
            interrupted.cancel()
            if !stopped { throw fail(ExitCode.error, "elect: session expired") }
            try await election.resign()
        } catch let exit as Exit { throw exit } catch {
            throw fail(ExitCode.error, "\(EtcdClientError(error))")
        }
    }
    elect.flag("listen", .bool, "false", "observation mode", short: "l")
    return [lock, elect]
}

/// Runs both in unstructured tasks and returns the index of the first to finish (the other keeps running).
func firstOf(_ a: @escaping @Sendable () async -> Void, _ b: @escaping @Sendable () async -> Void) async -> Int {
    final class Once: @unchecked Sendable {
        let lock = NSLock()
        var done = false
        func claim() -> Bool { lock.lock(); defer { lock.unlock() }; if done { return false }; done = true; return true }
    }
    let once = Once()
    return await withCheckedContinuation { (c: CheckedContinuation<Int, Never>) in
        Task { await a(); if once.claim() { c.resume(returning: 0) } }
        Task { await b(); if once.claim() { c.resume(returning: 1) } }
    }
}
