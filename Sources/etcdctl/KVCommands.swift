import EtcdClient
import EtcdProto
import Foundation

/// `strconv.ParseInt(s, base, 64)` error text.
func parseIntError(_ s: String, _ fn: String = "ParseInt") -> String {
    "strconv.\(fn): parsing \(goQuote(s)): invalid syntax"
}

func parseHexLease(_ s: String) -> Int64? {
    var t = Substring(s)
    var negative = false
    if t.hasPrefix("-") { negative = true; t = t.dropFirst() } else if t.hasPrefix("+") { t = t.dropFirst() }
    guard !t.isEmpty, let v = UInt64(t, radix: 16), v <= UInt64(Int64.max) else { return nil }
    return negative ? -Int64(v) : Int64(v)
}

// MARK: - get / put / del op construction (shared with txn)

func makeGetCommand(run: ((Invocation) async throws -> Void)?) -> Command {
    let c = Command("get [options] <key> [range_end]", "Gets the key or a range of keys", run: run)
    c.flag("consistency", .string, "l", "Linearizable(l) or Serializable(s)")
    c.flag("order", .string, "", "Order of results; ASCEND or DESCEND (ASCEND by default)")
    c.flag("sort-by", .string, "", "Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION")
    c.flag("limit", .int, "0", "Maximum number of results")
    c.flag("prefix", .bool, "false", "Get keys with matching prefix")
    c.flag("from-key", .bool, "false", "Get keys that are greater than or equal to the given key using byte compare")
    c.flag("rev", .int, "0", "Specify the kv revision")
    c.flag("keys-only", .bool, "false", "Get only the keys")
    c.flag("print-value-only", .bool, "false", "Only write values when using the \"simple\" output format")
    c.flag("print-k8s", .bool, "false", "Decode values stored by Kubernetes (protobuf with the \"k8s\\x00\" prefix) when using the \"simple\" output format", hidden: true)
    return c
}

func getRequest(_ inv: Invocation) throws -> Etcdserverpb_RangeRequest {
    let args = inv.args
    if args.isEmpty { throw fail(ExitCode.badArgs, "get command needs one argument as key and an optional argument as range_end") }
    let prefix = inv.flag("prefix").bool, fromKey = inv.flag("from-key").bool
    if prefix && fromKey { throw fail(ExitCode.badArgs, "`--prefix` and `--from-key` cannot be set at the same time, choose one") }
    var r = Etcdserverpb_RangeRequest()
    switch inv.flag("consistency").string {
    case "s": r.serializable = true
    case "l": break
    case let other: throw fail(ExitCode.badFeature, "unknown consistency flag \(goQuote(other))")
    }
    var key = Data(args[0].utf8)
    if args.count > 1 {
        if prefix || fromKey { throw fail(ExitCode.badArgs, "too many arguments, only accept one argument when `--prefix` or `--from-key` is set") }
        r.rangeEnd = Data(args[1].utf8)
    }
    r.limit = inv.flag("limit").int
    if inv.flag("rev").int > 0 { r.revision = inv.flag("rev").int }
    let order = inv.flag("order").string
    switch order.uppercased() {
    case "ASCEND": r.sortOrder = .ascend
    case "DESCEND": r.sortOrder = .descend
    case "": r.sortOrder = .none
    default: throw fail(ExitCode.badFeature, "bad sort order \(order)")
    }
    let target = inv.flag("sort-by").string
    switch target.uppercased() {
    case "CREATE": r.sortTarget = .create
    case "KEY", "": r.sortTarget = .key
    case "MODIFY": r.sortTarget = .mod
    case "VALUE": r.sortTarget = .value
    case "VERSION": r.sortTarget = .version
    default: throw fail(ExitCode.badFeature, "bad sort target \(target)")
    }
    // clientv3.WithSort: sorting by key ascending is the server's default order.
    if r.sortTarget == .key && r.sortOrder == .ascend { r.sortOrder = .none }
    if prefix {
        if key.isEmpty { key = Data([0]); r.rangeEnd = Data([0]) } else { r.rangeEnd = KeyRange.prefixEnd(key) }
    }
    if fromKey {
        if key.isEmpty { key = Data([0]) }
        r.rangeEnd = Data([0])
    }
    r.key = key
    r.keysOnly = inv.flag("keys-only").bool
    return r
}

func makePutCommand(run: ((Invocation) async throws -> Void)?) -> Command {
    let c = Command("put [options] <key> <value> (<value> can also be given from stdin)", "Puts the given key into the store", long: """

Puts the given key into the store.

When <value> begins with '-', <value> is interpreted as a flag.
Insert '--' for workaround:

$ put <key> -- <value>
$ put -- <key> <value>

If <value> isn't given as a command line argument and '--ignore-value' is not specified,
this command tries to read the value from standard input.

If <lease> isn't given as a command line argument and '--ignore-lease' is not specified,
this command tries to read the value from standard input.

For example,
$ cat file | put <key>
will store the content of the file to <key>.

""", run: run)
    c.flag("lease", .string, "0", "lease ID (in hexadecimal) to attach to the key")
    c.flag("prev-kv", .bool, "false", "return the previous key-value pair before modification")
    c.flag("ignore-value", .bool, "false", "updates the key using its current value")
    c.flag("ignore-lease", .bool, "false", "updates the key using its current lease")
    return c
}

func putRequest(_ inv: Invocation) throws -> Etcdserverpb_PutRequest {
    let args = inv.args
    if args.isEmpty { throw fail(ExitCode.badArgs, "put command needs 1 argument and input from stdin or 2 arguments") }
    let ignoreValue = inv.flag("ignore-value").bool
    if ignoreValue && args.count > 1 { throw fail(ExitCode.badArgs, "put command needs only 1 argument when 'ignore-value' is set") }
    var r = Etcdserverpb_PutRequest()
    r.key = Data(args[0].utf8)
    if !ignoreValue {
        if args.count > 1 { r.value = Data(args[1].utf8) } else {
            let input = readAllStdin()
            if input.isEmpty { throw fail(ExitCode.badArgs, "put command needs 1 argument and input from stdin or 2 arguments") }
            r.value = input
        }
    }
    let leaseText = inv.flag("lease").string
    guard let lease = parseHexLease(leaseText) else {
        throw fail(ExitCode.badArgs, "bad lease ID (\(parseIntError(leaseText))), expecting ID in Hex")
    }
    r.lease = lease
    r.prevKv = inv.flag("prev-kv").bool
    r.ignoreValue = ignoreValue
    r.ignoreLease = inv.flag("ignore-lease").bool
    return r
}

func makeDelCommand(run: ((Invocation) async throws -> Void)?) -> Command {
    let c = Command("del [options] <key> [range_end]", "Removes the specified key or range of keys [key, range_end)", run: run)
    c.flag("prefix", .bool, "false", "delete keys with matching prefix")
    c.flag("prev-kv", .bool, "false", "return deleted key-value pairs")
    c.flag("from-key", .bool, "false", "delete keys that are greater than or equal to the given key using byte compare")
    return c
}

func delRequest(_ inv: Invocation) throws -> Etcdserverpb_DeleteRangeRequest {
    let args = inv.args
    if args.isEmpty || args.count > 2 { throw fail(ExitCode.badArgs, "del command needs one argument as key and an optional argument as range_end") }
    let prefix = inv.flag("prefix").bool, fromKey = inv.flag("from-key").bool
    if prefix && fromKey { throw fail(ExitCode.badArgs, "`--prefix` and `--from-key` cannot be set at the same time, choose one") }
    var r = Etcdserverpb_DeleteRangeRequest()
    var key = Data(args[0].utf8)
    if args.count > 1 {
        if prefix || fromKey { throw fail(ExitCode.badArgs, "too many arguments, only accept one argument when `--prefix` or `--from-key` is set") }
        r.rangeEnd = Data(args[1].utf8)
    }
    if prefix {
        if key.isEmpty { key = Data([0]); r.rangeEnd = Data([0]) } else { r.rangeEnd = KeyRange.prefixEnd(key) }
    }
    r.prevKv = inv.flag("prev-kv").bool
    if fromKey {
        if key.isEmpty { key = Data([0]) }
        r.rangeEnd = Data([0])
    }
    r.key = key
    return r
}

// MARK: - Commands

func kvCommands(_ g: @escaping (Invocation) -> Globals) -> [Command] {
    let get = makeGetCommand { inv in
        let globals = g(inv)
        let request = try getRequest(inv)
        let client = try globals.makeClient()
        let response: RangeResponse
        do { response = try await client.range(request) } catch { throw globals.rpcFailure(error) }
        var printer = globals.printer
        if inv.flag("print-value-only").bool {
            guard printer.format == .simple else { throw fail(ExitCode.badArgs, "print-value-only is only for `--write-out=simple`") }
            printer.valueOnly = true
        }
        if inv.flag("print-k8s").bool {
            guard printer.format == .simple else { throw fail(ExitCode.badArgs, "print-k8s is only for `--write-out=simple`") }
            printer.k8s = true
        }
        try printer.get(response)
    }
    let put = makePutCommand { inv in
        let globals = g(inv)
        let request = try putRequest(inv)
        let client = try globals.makeClient()
        let response: PutResponse
        do { response = try await client.put(request) } catch { throw globals.rpcFailure(error) }
        try globals.printer.put(response)
    }
    let del = makeDelCommand { inv in
        let globals = g(inv)
        let request = try delRequest(inv)
        let client = try globals.makeClient()
        let response: DeleteResponse
        do { response = try await client.deleteRange(request) } catch { throw globals.rpcFailure(error) }
        try globals.printer.del(response)
    }
    let txn = Command("txn [options]", "Txn processes all the requests in one transaction") { inv in
        try await runTxn(inv, g(inv))
    }
    txn.flag("interactive", .bool, "false", "Input transaction in interactive mode", short: "i")

    let compaction = Command("compaction [options] <revision>", "Compacts the event history in etcd") { inv in
        let globals = g(inv)
        guard inv.args.count == 1 else { throw fail(ExitCode.badArgs, "compaction command needs 1 argument") }
        guard let rev = Int64(inv.args[0]) else { throw fail(ExitCode.error, parseIntError(inv.args[0])) }
        let client = try globals.makeClient()
        do { try await client.compact(revision: rev, physical: inv.flag("physical").bool) } catch { throw globals.rpcFailure(error) }
        Out.print("compacted revision \(rev)")
    }
    compaction.flag("physical", .bool, "false", "'true' to wait for compaction to physically remove all old revisions")
    return [get, put, del, txn, compaction]
}

// MARK: - txn

func runTxn(_ inv: Invocation, _ globals: Globals) async throws {
    if !inv.args.isEmpty { throw fail(ExitCode.badArgs, "txn command does not accept argument") }
    let interactive = inv.flag("interactive").bool
    let client = try globals.makeClient()
    let reader = LineReader()
    func prompt(_ s: String) { if interactive { Out.print(s) } }
    func lines() throws -> [String] {
        var out: [String] = []
        while true {
            let (line, eof) = reader.next()
            if eof { throw fail(ExitCode.invalidInput, "EOF") }
            let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty { return out }
            out.append(trimmed)
        }
    }
    var request = Etcdserverpb_TxnRequest()
    prompt("compares:")
    for line in try lines() {
        do { request.compare.append(try parseCompare(line)) } catch let e as FlagError { throw fail(ExitCode.invalidInput, e.message) }
    }
    prompt("success requests (get, put, del):")
    for line in try lines() { request.success.append(try parseRequestOp(line)) }
    prompt("failure requests (get, put, del):")
    for line in try lines() { request.failure.append(try parseRequestOp(line)) }
    let response: TxnResponse
    do { response = try await client.txn(request, timeout: .some(nil)) } catch { throw globals.rpcFailure(error) }
    try globals.printer.txn(response)
}

func parseRequestOp(_ line: String) throws -> Etcdserverpb_RequestOp {
    let args = argify(line)
    if args.count < 2 { throw fail(ExitCode.invalidInput, "invalid txn compare request: \(line)") }
    let root = Command("", "")
    let get = makeGetCommand(run: nil), put = makePutCommand(run: nil), del = makeDelCommand(run: nil)
    root.add(get, put, del)
    let (command, rest) = Cobra.find(root, args)
    guard command !== root, let positional = try? Cobra.parseFlags(command, rest) else {
        throw fail(ExitCode.invalidInput, "invalid txn request: \(line)")
    }
    let inv = Invocation(command: command, args: positional, rawArgs: args)
    var op = Etcdserverpb_RequestOp()
    if command === get { op.requestRange = try getRequest(inv) }
    else if command === put { op.requestPut = try putRequest(inv) }
    else { op.requestDeleteRange = try delRequest(inv) }
    return op
}

/// Parses `target("key") op "value"` like etcdctl's parseCompare.
func parseCompare(_ line: String) throws -> Etcdserverpb_Compare {
    guard let paren = line.firstIndex(of: "(") else { throw FlagError("malformed comparison: \(line)") }
    let target = String(line[..<paren])
    var rest = Substring(line[line.index(after: paren)...])
    func quoted() -> Data? {
        rest = rest.drop { $0 == " " || $0 == "\t" }
        guard let first = rest.first, first == "\"" || first == "`" else { return nil }
        var literal = String(first)
        var i = rest.index(after: rest.startIndex)
        while i < rest.endIndex {
            let ch = rest[i]
            literal.append(ch)
            if ch == "\\" && first == "\"" {
                i = rest.index(after: i)
                if i < rest.endIndex { literal.append(rest[i]) }
            } else if ch == first { break }
            if i < rest.endIndex { i = rest.index(after: i) }
        }
        guard i < rest.endIndex else { return nil }
        rest = rest[rest.index(after: i)...]
        return unquoteGoBytes(literal)
    }
    guard let key = quoted(), rest.first == ")" else { throw FlagError("malformed comparison: \(line); got \(target)(\"\") \"\"") }
    rest = rest.dropFirst().drop { $0 == " " || $0 == "\t" }
    let op = String(rest.prefix { $0 != " " && $0 != "\t" })
    rest = rest.dropFirst(op.count)
    guard !op.isEmpty, let value = quoted() else {
        throw FlagError("malformed comparison: \(line); got \(target)(\(goQuoteBytes(key))) \(op) \"\"")
    }
    var c = Etcdserverpb_Compare()
    c.key = key
    switch op {
    case "=", "==": c.result = .equal
    case "!=": c.result = .notEqual
    case "<": c.result = .less
    case ">": c.result = .greater
    default: throw FlagError("Unknown result op")
    }
    let text = String(decoding: value, as: UTF8.self)
    switch target {
    case "ver", "version":
        guard let v = Int64(text) else { throw FlagError("invalid txn compare request: \(line)") }
        c.target = .version; c.version = v
    case "c", "create":
        guard let v = Int64(text) else { throw FlagError("invalid txn compare request: \(line)") }
        c.target = .create; c.createRevision = v
    case "m", "mod":
        guard let v = Int64(text) else { throw FlagError("invalid txn compare request: \(line)") }
        c.target = .mod; c.modRevision = v
    case "val", "value":
        c.target = .value; c.value = value
    case "lease":
        guard let v = parseHexLease(text) else { throw FlagError("invalid txn compare request: \(line)") }
        c.target = .lease; c.lease = v
    default:
        throw FlagError("malformed comparison: \(line) (unknown target \(target))")
    }
    return c
}
