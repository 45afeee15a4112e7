/// Every flag etcd 3.6 defines (`server/etcdmain/config.go`; the list with
/// defaults is in design/ETCD-FLAGS.md), and etcd's command-line syntax.
///
/// We know all of etcd's flags, not only ours, so that a flag we do not
/// implement is refused by name ("--client-cert-auth is not supported yet")
/// instead of being ignored or mistaken for a typo — and so that a bare
/// boolean such as `--auto-tls` parses as Go parses it.
public struct EtcdFlag: Sendable {
    public enum Kind: Sendable {
        /// Go's bool flag: bare means true; only `--flag=value` sets a value.
        case bool
        case integer, duration, string
    }

    public let name: String
    public let kind: Kind
    /// etcd's default, as the text of the flag.
    public let etcdDefault: String
    /// The setting we implement, or nil when etcd has the flag and we do not.
    public let key: ConfigKey?
    /// For flags we do not implement: values besides the default under which
    /// we already behave as etcd does (`--log-outputs=stderr`: we log there).
    let alsoHarmless: [String]

    init(_ name: String, _ kind: Kind, _ etcdDefault: String, key: ConfigKey? = nil, alsoHarmless: [String] = []) {
        self.name = name
        self.kind = kind
        self.etcdDefault = etcdDefault
        self.key = key
        self.alsoHarmless = alsoHarmless
    }

    /// `ETCD_` + the flag name in upper snake case, as etcd's `FlagToEnv`.
    public var environmentVariable: String {
        "ETCD_" + String(name.uppercased().map { $0 == "-" ? "_" : $0 })
    }

    /// Whether `value`, given for a flag we do not implement, leaves etcd
    /// configured exactly as without the flag: then refusing it would only
    /// break configurations that spell out defaults (etcd's sample
    /// `etcd.conf.yml` does), while accepting it is as safe as its absence.
    func isHarmless(_ value: String) -> Bool {
        let text = value.trimmingWhitespace()
        if alsoHarmless.contains(text) { return true }
        switch kind {
        case .bool: return GoBool.parse(text).map { $0 == GoBool.parse(etcdDefault) } ?? false
        case .integer: return Int(text).map { $0 == Int(etcdDefault) } ?? false
        case .duration: return GoDuration.exactMilliseconds(text).map { $0 == GoDuration.exactMilliseconds(etcdDefault) } ?? false
        case .string: return text == etcdDefault
        }
    }
}

extension EtcdFlag {
    /// The two flags that are not settings: they pick what `etcd` does.
    public static let version = EtcdFlag("version", .bool, "false")
    public static let configFile = EtcdFlag("config-file", .string, "")

    /// Our settings under their etcd names, and etcd 3.6's new names for two
    /// experimental flags (`--watch-progress-notify-interval`).
    public static let supported: [EtcdFlag] = ConfigKey.allCases.map { EtcdFlag($0.rawValue, $0.kind, "", key: $0) } + [
        EtcdFlag("watch-progress-notify-interval", .duration, "", key: .watchProgressNotifyInterval),
        EtcdFlag("snapshot-catchup-entries", .integer, "", key: .snapshotCatchUpEntries),
        EtcdFlag("corrupt-check-time", .duration, "", key: .corruptCheckTime),
        EtcdFlag("experimental-peer-skip-client-san-verification", .bool, "", key: .peerSkipClientSANVerification),
        EtcdFlag("compact-hash-check-time", .duration, "", key: .compactHashCheckTime),
    ]

    /// etcd 3.6's flags that we do not implement, with etcd's defaults.
    public static let unsupported: [EtcdFlag] = [
        // member
        EtcdFlag("initial-election-tick-advance", .bool, "true"),
        EtcdFlag("listen-client-http-urls", .string, ""),
        EtcdFlag("max-snapshots", .integer, "5"),
        EtcdFlag("max-wals", .integer, "5"),
        EtcdFlag("memory-mlock", .bool, "false"),
        EtcdFlag("backend-bbolt-freelist-type", .string, "map"),
        EtcdFlag("backend-batch-interval", .duration, "0"),
        EtcdFlag("backend-batch-limit", .integer, "0"),
        EtcdFlag("socket-reuse-port", .bool, "false"),
        EtcdFlag("socket-reuse-address", .bool, "false"),
        EtcdFlag("enable-grpc-gateway", .bool, "true"),
        EtcdFlag("raft-read-timeout", .duration, "5s"),
        EtcdFlag("raft-write-timeout", .duration, "5s"),
        // clustering
        EtcdFlag("discovery", .string, ""),
        EtcdFlag("discovery-token", .string, ""),
        EtcdFlag("discovery-endpoints", .string, ""),
        EtcdFlag("discovery-dial-timeout", .duration, "2s"),
        EtcdFlag("discovery-request-timeout", .duration, "5s"),
        EtcdFlag("discovery-keepalive-time", .duration, "2s"),
        EtcdFlag("discovery-keepalive-timeout", .duration, "6s"),
        EtcdFlag("discovery-insecure-transport", .bool, "true"),
        EtcdFlag("discovery-insecure-skip-tls-verify", .bool, "false"),
        EtcdFlag("discovery-cert", .string, ""),
        EtcdFlag("discovery-key", .string, ""),
        EtcdFlag("discovery-cacert", .string, ""),
        EtcdFlag("discovery-user", .string, ""),
        EtcdFlag("discovery-password", .string, ""),
        EtcdFlag("discovery-fallback", .string, "exit"),
        EtcdFlag("discovery-proxy", .string, ""),
        EtcdFlag("discovery-srv", .string, ""),
        EtcdFlag("discovery-srv-name", .string, ""),
        EtcdFlag("v2-deprecation", .string, "write-only"),
        // security / TLS
        EtcdFlag("cors", .string, "*"),
        EtcdFlag("host-whitelist", .string, "*"),
        // profiling / monitoring
        EtcdFlag("enable-pprof", .bool, "false"),
        // logging (EtcdLogHandler writes to standard error)
        EtcdFlag("logger", .string, "zap"),
        EtcdFlag("log-outputs", .string, "default", alsoHarmless: ["stderr"]),
        EtcdFlag("log-format", .string, "json"),
        EtcdFlag("enable-log-rotation", .bool, "false"),
        EtcdFlag("log-rotation-config-json", .string,
                 #"{"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, "compress": false}"#),
        EtcdFlag("warning-unary-request-duration", .duration, "300ms"),
        // tracing
        EtcdFlag("experimental-enable-distributed-tracing", .bool, "false"),
        EtcdFlag("enable-distributed-tracing", .bool, "false"),
        EtcdFlag("experimental-distributed-tracing-address", .string, "localhost:4317"),
        EtcdFlag("distributed-tracing-address", .string, "localhost:4317"),
        EtcdFlag("experimental-distributed-tracing-service-name", .string, "etcd"),
        EtcdFlag("distributed-tracing-service-name", .string, "etcd"),
        EtcdFlag("experimental-distributed-tracing-instance-id", .string, ""),
        EtcdFlag("distributed-tracing-instance-id", .string, ""),
        EtcdFlag("experimental-distributed-tracing-sampling-rate", .integer, "0"),
        EtcdFlag("distributed-tracing-sampling-rate", .integer, "0"),
        // experimental / feature gates
        EtcdFlag("experimental-enable-lease-checkpoint", .bool, "false"),
        EtcdFlag("experimental-compaction-batch-limit", .integer, "1000"),
        EtcdFlag("compaction-batch-limit", .integer, "1000"),
        EtcdFlag("experimental-warning-apply-duration", .duration, "100ms"),
        EtcdFlag("warning-apply-duration", .duration, "100ms"),
        EtcdFlag("experimental-txn-mode-write-with-shared-buffer", .bool, "true"),
        EtcdFlag("experimental-bootstrap-defrag-threshold-megabytes", .integer, "0"),
        EtcdFlag("bootstrap-defrag-threshold-megabytes", .integer, "0"),
        EtcdFlag("experimental-warning-unary-request-duration", .duration, "300ms"),
        EtcdFlag("experimental-compaction-sleep-interval", .duration, "0"),
        EtcdFlag("compaction-sleep-interval", .duration, "0"),
        EtcdFlag("experimental-downgrade-check-time", .duration, "5s"),
        EtcdFlag("experimental-enable-lease-checkpoint-persist", .bool, "false"),
        EtcdFlag("experimental-memory-mlock", .bool, "false"),
        EtcdFlag("experimental-stop-grpc-service-on-defrag", .bool, "false"),
        // unsafe
        EtcdFlag("unsafe-no-fsync", .bool, "false"),
    ]

    /// Every flag `etcd` accepts on its command line, by name.
    public static let byName: [String: EtcdFlag] = {
        let all = [version, configFile] + supported + unsupported
        let table = Dictionary(all.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        precondition(table.count == all.count, "a flag is listed twice")
        return table
    }()
}

extension ConfigKey {
    var kind: EtcdFlag.Kind {
        switch self {
        case .preVote, .forceNewCluster, .strictReconfigCheck, .initialCorruptCheck, .compactHashCheckEnabled, .clientCertAuth, .autoTLS,
             .peerClientCertAuth, .peerAutoTLS, .peerSkipClientSANVerification: return .bool
        case .watchProgressNotifyInterval, .grpcKeepaliveMinTime, .grpcKeepaliveInterval, .grpcKeepaliveTimeout,
             .downgradeCheckTime, .corruptCheckTime, .compactHashCheckTime: return .duration
        case .snapshotCount, .heartbeatInterval, .electionTimeout, .maxRequestBytes, .maxTxnOps, .quotaBackendBytes,
             .snapshotCatchUpEntries, .maxConcurrentStreams, .maxLearners, .selfSignedCertValidity, .bcryptCost, .authTokenTTL: return .integer
        default: return .string
        }
    }
}

/// Go's `strconv.ParseBool`, which etcd's boolean flags and variables use.
public enum GoBool {
    public static func parse(_ text: String) -> Bool? {
        switch text {
        case "1", "t", "T", "TRUE", "true", "True": return true
        case "0", "f", "F", "FALSE", "false", "False": return false
        default: return nil
        }
    }
}

/// etcd's command line as Go's `flag` package parses it: `-name x` and
/// `--name x` alike, `--name=x`, a bare boolean (`--pre-vote`) meaning true
/// and never taking the next argument, `--` ending the flags, parsing
/// stopping at the first argument that is not a flag — which etcd then
/// rejects. Pure: arguments in, values by flag name out.
public struct CommandLineFlags: Equatable, Sendable {
    /// Values by flag name, as given (a repeated flag: the last one wins).
    public var values: [String: String] = [:]
    /// `-h`, `-help` or `--help` was given: print usage, exit 0.
    public var help = false

    public init(values: [String: String] = [:], help: Bool = false) {
        self.values = values
        self.help = help
    }

    public init(parsing arguments: [String]) throws(FlagError) {
        var rest = arguments[...]
        while let argument = rest.first {
            // Go: "-" alone and anything not starting with "-" end the flags.
            guard argument.count >= 2, argument.hasPrefix("-") else { break }
            rest.removeFirst()
            if argument == "--" { break }
            var name = Substring(argument.dropFirst(argument.hasPrefix("--") ? 2 : 1))
            guard let first = name.first, first != "-", first != "=" else { throw .badSyntax(argument) }
            var value: String?
            if let equals = name.dropFirst().firstIndex(of: "=") {
                value = String(name[name.index(after: equals)...])
                name = name[..<equals]
            }
            guard let flag = EtcdFlag.byName[String(name)] else {
                if name == "h" || name == "help" { help = true; return }
                throw .notDefined(String(name))
            }
            if flag.kind == .bool {
                let text = value ?? "true"
                guard GoBool.parse(text) != nil else { throw .invalidBoolean(flag: flag.name, value: text) }
                values[flag.name] = text
            } else if let value {
                values[flag.name] = value
            } else if let next = rest.first {
                values[flag.name] = next
                rest.removeFirst()
            } else {
                throw .needsArgument(flag.name)
            }
        }
        // etcd takes no arguments besides flags.
        if let stray = rest.first { throw .strayArgument(stray) }
    }
}

/// etcd's command-line errors, in Go's words.
public enum FlagError: Error, Equatable, CustomStringConvertible {
    case badSyntax(String)
    case notDefined(String)
    case needsArgument(String)
    case invalidBoolean(flag: String, value: String)
    case strayArgument(String)

    public var description: String {
        switch self {
        case let .badSyntax(argument): return "bad flag syntax: \(argument)"
        case let .notDefined(name): return "flag provided but not defined: -\(name)"
        case let .needsArgument(name): return "flag needs an argument: -\(name)"
        case let .invalidBoolean(name, value): return "invalid boolean value \"\(value)\" for -\(name): parse error"
        case let .strayArgument(argument): return "error verifying flags, '\(argument)' is not a valid flag. See 'etcd --help'."
        }
    }

    /// etcd exits 2 on Go's flag errors (after printing its usage) and 1 on a stray argument.
    public var exitCode: Int32 {
        if case .strayArgument = self { return 1 }
        return 2
    }
}
