import EtcdClient
import EtcdProto
import Foundation
import GRPCCore
import Locks

let etcdctlVersion = "3.6.0"
let apiVersion = "3.6"

/// Root flags, ETCDCTL_* environment, client creation and error reporting.
/// The clients this run of etcdctl made (one command: a handful at most),
/// so a failure can tell whether it came from authenticating.
let madeClients = Mutex<[EtcdClient]>([])

struct Globals: Sendable {
    let command: Command
    let rawArgs: [String]

    func flag(_ name: String) -> Flag { command.lookup(name)! }

    var printer: Printer {
        Printer(format: OutputFormat(rawValue: flag("write-out").string) ?? .simple, hex: flag("hex").bool)
    }
    var endpoints: [String] { flag("endpoints").strings.map { $0.trimmingCharacters(in: .whitespaces) } }
    var commandTimeout: Duration { flag("command-timeout").duration }

    static func logTimestamp() -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.dateFormat = "yyyy-MM-dd HH:mm:ss.SSSSSS"
        return f.string(from: Date())
    }

    /// Applies ETCDCTL_* variables to unset inherited flags (etcd's pkg/flags rules).
    func applyEnvironment(extraKnown: [String] = []) throws {
        let env = ProcessInfo.processInfo.environment
        var used: Set<String> = ["ETCDCTL_API"]
        for key in extraKnown { used.insert(key) }
        for f in command.inheritedFlags {
            let key = "ETCDCTL_" + f.name.uppercased().replacingOccurrences(of: "-", with: "_")
            guard let value = env[key] else { continue }
            used.insert(key)
            if f.changed {
                Out.err("\(Self.logTimestamp()) C | pkg/flags: conflicting environment variable \(goQuote(key)) is shadowed by corresponding command-line flag (either unset environment variable or disable flag)")
                throw Exit(code: 1)
            }
            // etcdctl ignores values it cannot parse (the flag keeps its default).
            _ = f.set(value)
        }
        for (key, value) in env.sorted(by: { $0.key < $1.key }) where key.hasPrefix("ETCDCTL_") && !used.contains(key) {
            Out.err("\(Self.logTimestamp()) W | pkg/flags: unrecognized environment variable \(key)=\(value)")
        }
    }

    /// etcdctl's clientConfigFromCmd + mustClient.
    func makeClient(endpoints override: [String]? = nil, withAuth: Bool = true, extraEnv: [String] = []) throws -> EtcdClient {
        try applyEnvironment(extraKnown: extraEnv)
        try initDisplay()
        for name in ["cert", "key", "cacert"] where flag(name).changed && flag(name).string.isEmpty {
            throw fail(ExitCode.badArgs, "empty string is passed to --\(name) option")
        }
        var options = EtcdClientOptions(dialTimeout: flag("dial-timeout").duration, commandTimeout: commandTimeout)
        options.keepAliveTime = flag("keepalive-time").duration
        options.keepAliveTimeout = flag("keepalive-timeout").duration
        if withAuth, let (user, password) = Self.credentials(user: flag("user").string, password: flag("password").string, prompt: "Password: ") {
            options.username = user
            options.password = password
        }
        options.tls = Self.tlsOptions(cert: flag("cert").string, key: flag("key").string, cacert: flag("cacert").string,
                                      insecureTransport: flag("insecure-transport").bool, skipVerify: flag("insecure-skip-tls-verify").bool)
        do {
            let client = try EtcdClient(endpoints: override ?? endpoints, options: options)
            madeClients.withLock { $0.append(client) }
            return client
        } catch {
            throw clientCreationFailure(error)
        }
    }

    /// `--user` / `--password` as etcdctl reads them: `name:password`, or a prompt when no password is given.
    static func credentials(user: String, password: String, prompt: String) -> (String, String)? {
        if user.isEmpty { return nil }
        if !password.isEmpty { return (user, password) }
        let parts = user.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        if parts.count < 2 { return (user, readPassword(prompt: prompt)) }
        return (String(parts[0]), String(parts[1]))
    }

    /// TLS as etcdctl sets it up: on when any file is given or transport security is asked for;
    /// `--insecure-skip-tls-verify` only counts then (as in etcd's newClientCfg).
    static func tlsOptions(cert: String, key: String, cacert: String, insecureTransport: Bool, skipVerify: Bool) -> EtcdTLSOptions? {
        guard !cert.isEmpty || !key.isEmpty || !cacert.isEmpty || !insecureTransport else { return nil }
        return EtcdTLSOptions(caFile: cacert.isEmpty ? nil : cacert, certFile: cert.isEmpty ? nil : cert,
                              keyFile: key.isEmpty ? nil : key, insecureSkipVerify: skipVerify)
    }

    /// etcdctl exits with ExitBadArgs for unusable TLS files, ExitBadConnection otherwise.
    func clientCreationFailure(_ error: any Error) -> Exit {
        let e = EtcdClientError(error)
        if case .tlsConfiguration = e { return fail(ExitCode.badArgs, "\(e)") }
        return fail(ExitCode.badConnection, "\(e)")
    }

    func initDisplay() throws {
        if OutputFormat(rawValue: flag("write-out").string) == nil {
            throw fail(ExitCode.badFeature, "unsupported output format")
        }
    }

    /// Reports a failed RPC like etcd's client: the retry interceptor's warning, then "Error: ...".
    func rpcFailure(_ error: any Error, code: Int32 = ExitCode.error, wrap: (String) -> String = { $0 }, logged: Bool = true) -> Exit {
        if let exit = error as? Exit { return exit }
        let e = EtcdClientError(error)
        if case let .tlsHandshakeFailed(endpoint, _) = e {
            // etcd's client keeps redialing until its deadline; the last connection error names the cause.
            logRetryWarning(e, endpoint: endpoint, detail: "rpc error: code = DeadlineExceeded desc = latest balancer error: connection error: desc = \(goQuote("\(e)"))")
            return fail(code, wrap("\(EtcdClientError.deadlineExceeded)"))
        }
        if logged { logRetryWarning(e) }
        // Authentication happens while etcd's client is created: a bad connection.
        if madeClients.withLock({ $0.contains { $0.authenticationFailed } }) || (e == .authFailed && !flag("user").string.isEmpty) {
            return fail(ExitCode.badConnection, "\(e)")
        }
        return fail(code, wrap("\(e)"))
    }

    func logRetryWarning(_ e: EtcdClientError, endpoint: String? = nil, detail override: String? = nil) {
        var detail: String
        switch e {
        case .deadlineExceeded: detail = "rpc error: code = DeadlineExceeded desc = latest balancer error: all SubConns are in TransientFailure"
        case .canceled: detail = "rpc error: code = Canceled desc = context canceled"
        case .rpc: detail = "\(e)"
        default: detail = "rpc error: code = \(EtcdClientError.goName(e.code)) desc = \(e)"
        }
        if let override { detail = override }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"
        var host = endpoint ?? endpoints.first ?? ""
        for scheme in ["http://", "https://"] where host.hasPrefix(scheme) { host = String(host.dropFirst(scheme.count)) }
        let target = "endpoint://client-\(UUID().uuidString.lowercased())/\(host)"
        Out.err("{\"level\":\"warn\",\"ts\":\"\(f.string(from: Date()))\",\"caller\":\"clientv3/retry_interceptor.go:62\",\"msg\":\"retrying of unary invoker failed\",\"target\":\(goJSONString(target)),\"attempt\":0,\"error\":\(goJSONString(detail))}")
    }
}

func readPassword(prompt: String) -> String {
    Out.err(prompt, terminator: "")
    var old = termios()
    let isTTY = isatty(0) == 1
    if isTTY {
        tcgetattr(0, &old)
        var noEcho = old
        noEcho.c_lflag &= ~tcflag_t(ECHO)
        tcsetattr(0, TCSANOW, &noEcho)
    }
    let line = readLine() ?? ""
    if isTTY {
        tcsetattr(0, TCSANOW, &old)
        Out.err("")
    }
    return line
}

/// Reads stdin to the end.
func readAllStdin() -> Data {
    FileHandle.standardInput.readDataToEndOfFile()
}

/// Line reader over stdin (keeps the trailing newline like bufio.ReadString).
final class LineReader: @unchecked Sendable {
    private var buffer = Data()
    private var eof = false

    /// The next line including "\n", or the remaining bytes and `eof: true`.
    func next() -> (line: String, eof: Bool) {
        while true {
            if let nl = buffer.firstIndex(of: 0x0a) {
                let line = buffer[buffer.startIndex...nl]
                buffer = Data(buffer[buffer.index(after: nl)...])
                return (String(decoding: line, as: UTF8.self), false)
            }
            if eof {
                let rest = String(decoding: buffer, as: UTF8.self)
                buffer = Data()
                return (rest, true)
            }
            let chunk = FileHandle.standardInput.availableData
            if chunk.isEmpty { eof = true } else { buffer.append(chunk) }
        }
    }
}

/// etcdctl's argify: splits a line into words honoring quotes.
func argify(_ s: String) -> [String] {
    var args: [String] = []
    let chars = Array(s)
    var i = 0
    while i < chars.count {
        let c = chars[i]
        if c.isWhitespace { i += 1; continue }
        if c == "\"" {
            var j = i + 1
            var raw = "\""
            while j < chars.count {
                raw.append(chars[j])
                if chars[j] == "\\" && j + 1 < chars.count { raw.append(chars[j + 1]); j += 2; continue }
                if chars[j] == "\"" { break }
                j += 1
            }
            args.append(unquoteGo(raw) ?? raw)
            i = j + 1
        } else if c == "'" {
            var j = i + 1
            var word = ""
            while j < chars.count && chars[j] != "'" { word.append(chars[j]); j += 1 }
            args.append(word)
            i = j + 1
        } else {
            var j = i
            var word = ""
            while j < chars.count && !chars[j].isWhitespace { word.append(chars[j]); j += 1 }
            args.append(word)
            i = j
        }
    }
    return args
}

/// Decodes a Go double-quoted string literal.
func unquoteGo(_ literal: String) -> String? {
    guard let bytes = unquoteGoBytes(literal) else { return nil }
    return String(decoding: bytes, as: UTF8.self)
}

func unquoteGoBytes(_ literal: String) -> Data? {
    let chars = Array(literal.unicodeScalars)
    guard chars.count >= 2, chars.first == "\"", chars.last == "\"" else {
        if chars.count >= 2, chars.first == "`", chars.last == "`" { return Data(String(String.UnicodeScalarView(chars[1..<(chars.count - 1)])).utf8) }
        return nil
    }
    var out = Data()
    var i = 1
    let end = chars.count - 1
    while i < end {
        let c = chars[i]
        if c == "\\" {
            guard i + 1 < end else { return nil }
            let n = chars[i + 1]
            i += 2
            switch n {
            case "n": out.append(0x0a)
            case "t": out.append(0x09)
            case "r": out.append(0x0d)
            case "a": out.append(0x07)
            case "b": out.append(0x08)
            case "f": out.append(0x0c)
            case "v": out.append(0x0b)
            case "\\": out.append(0x5c)
            case "\"": out.append(0x22)
            case "'": out.append(0x27)
            case "x":
                guard i + 2 <= end, let v = UInt8(String(String.UnicodeScalarView(chars[i..<(i + 2)])), radix: 16) else { return nil }
                out.append(v); i += 2
            case "u", "U":
                let len = n == "u" ? 4 : 8
                guard i + len <= end, let v = UInt32(String(String.UnicodeScalarView(chars[i..<(i + len)])), radix: 16),
                      let scalar = Unicode.Scalar(v) else { return nil }
                out.append(contentsOf: Array(String(scalar).utf8)); i += len
            default:
                if let d = n.properties.numericType, d == .decimal, i + 1 < end + 1 {
                    let digits = String(String.UnicodeScalarView(chars[(i - 1)..<min(i + 2, end)]))
                    guard let v = UInt8(digits, radix: 8) else { return nil }
                    out.append(v); i += 2
                } else { return nil }
            }
        } else if c == "\"" {
            return nil
        } else {
            out.append(contentsOf: Array(String(c).utf8))
            i += 1
        }
    }
    return out
}
