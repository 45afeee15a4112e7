import Auth
import TransportSecurity
/// The settings `etcd` reads, by their flag names. Each can come from a flag
/// (`--data-dir`), from its environment variable (`ETCD_DATA_DIR`; the flag
/// wins) or, with `--config-file`, from the YAML file's key of the same name
/// (then flags and environment are ignored, as etcd does). `SettingsSources`
/// gathers them; `EtcdFlag` lists etcd's other flags, which we refuse.
public enum ConfigKey: String, CaseIterable, Sendable {
    case name
    case dataDir = "data-dir"
    case walDir = "wal-dir"
    case listenClientURLs = "listen-client-urls"
    case advertiseClientURLs = "advertise-client-urls"
    case listenMetricsURLs = "listen-metrics-urls"
    case listenPeerURLs = "listen-peer-urls"
    case initialAdvertisePeerURLs = "initial-advertise-peer-urls"
    case initialCluster = "initial-cluster"
    case initialClusterState = "initial-cluster-state"
    case initialClusterToken = "initial-cluster-token"
    case snapshotCount = "snapshot-count"
    case heartbeatInterval = "heartbeat-interval"
    case electionTimeout = "election-timeout"
    case maxRequestBytes = "max-request-bytes"
    case maxTxnOps = "max-txn-ops"
    case quotaBackendBytes = "quota-backend-bytes"
    case logLevel = "log-level"
    case metrics
    case watchProgressNotifyInterval = "experimental-watch-progress-notify-interval"
    case preVote = "pre-vote"
    case snapshotCatchUpEntries = "experimental-snapshot-catchup-entries"
    case maxConcurrentStreams = "max-concurrent-streams"
    case maxLearners = "max-learners"
    case grpcKeepaliveMinTime = "grpc-keepalive-min-time"
    case grpcKeepaliveInterval = "grpc-keepalive-interval"
    case grpcKeepaliveTimeout = "grpc-keepalive-timeout"
    case forceNewCluster = "force-new-cluster"
    case strictReconfigCheck = "strict-reconfig-check"
    case downgradeCheckTime = "downgrade-check-time"
    case initialCorruptCheck = "experimental-initial-corrupt-check"
    case corruptCheckTime = "experimental-corrupt-check-time"
    case compactHashCheckEnabled = "experimental-compact-hash-check-enabled"
    case compactHashCheckTime = "experimental-compact-hash-check-time"
    case featureGates = "feature-gates"
    case autoCompactionMode = "auto-compaction-mode"
    case autoCompactionRetention = "auto-compaction-retention"
    // client TLS
    case certFile = "cert-file"
    case keyFile = "key-file"
    case clientCertAuth = "client-cert-auth"
    case clientCertFile = "client-cert-file"
    case clientKeyFile = "client-key-file"
    case clientCRLFile = "client-crl-file"
    case clientCertAllowedHostname = "client-cert-allowed-hostname"
    case trustedCAFile = "trusted-ca-file"
    case autoTLS = "auto-tls"
    // peer TLS
    case peerCertFile = "peer-cert-file"
    case peerKeyFile = "peer-key-file"
    case peerClientCertAuth = "peer-client-cert-auth"
    case peerClientCertFile = "peer-client-cert-file"
    case peerClientKeyFile = "peer-client-key-file"
    case peerTrustedCAFile = "peer-trusted-ca-file"
    case peerCertAllowedCN = "peer-cert-allowed-cn"
    case peerCertAllowedHostname = "peer-cert-allowed-hostname"
    case peerAutoTLS = "peer-auto-tls"
    case peerCRLFile = "peer-crl-file"
    case peerSkipClientSANVerification = "peer-skip-client-san-verification"
    // both
    case selfSignedCertValidity = "self-signed-cert-validity"
    case cipherSuites = "cipher-suites"
    case tlsMinVersion = "tls-min-version"
    case tlsMaxVersion = "tls-max-version"
    case authToken = "auth-token"
    case bcryptCost = "bcrypt-cost"
    case authTokenTTL = "auth-token-ttl"

    /// `ETCD_` + the flag name in upper snake case.
    public var environmentVariable: String {
        "ETCD_" + String(rawValue.uppercased().map { $0 == "-" ? "_" : $0 })
    }
}

public enum SettingsError: Error, Equatable, CustomStringConvertible {
    case invalid(key: String, value: String, reason: String)
    case unsupported(String)

    public var description: String {
        switch self {
        case let .invalid(key, value, reason): return "invalid value \"\(value)\" for --\(key): \(reason)"
        case let .unsupported(what): return what
        }
    }
}

extension ServerConfig {
    /// Builds a configuration from settings by flag name, with etcd's
    /// defaults and checks. Errors name the flag.
    public init(settings: [ConfigKey: String]) throws(SettingsError) {
        func list(_ key: ConfigKey) -> [String]? {
            settings[key].map { $0.split(separator: ",").map { String($0).trimmingWhitespace() }.filter { !$0.isEmpty } }
        }
        func urls(_ key: ConfigKey) throws(SettingsError) -> [String]? {
            guard let values = list(key) else { return nil }
            guard !values.isEmpty else { throw .invalid(key: key.rawValue, value: settings[key] ?? "", reason: "no URL given") }
            for value in values { try Self.checkURL(value, key) }
            return values
        }
        func duration(_ key: ConfigKey, minimumMilliseconds: Int) throws(SettingsError) -> Int? {
            guard let text = settings[key] else { return nil }
            guard let milliseconds = GoDuration.milliseconds(text), milliseconds >= minimumMilliseconds else {
                let least = minimumMilliseconds == 0 ? "a duration" : "a duration of at least \(minimumMilliseconds)ms"
                throw .invalid(key: key.rawValue, value: text, reason: "expected \(least), such as 10m, 30s or 500ms")
            }
            return milliseconds
        }
        func integer<T: FixedWidthInteger>(_ key: ConfigKey, _ range: ClosedRange<T>) throws(SettingsError) -> T? {
            guard let text = settings[key] else { return nil }
            guard let value = T(text.trimmingWhitespace()), range.contains(value) else {
                throw .invalid(key: key.rawValue, value: text, reason: "expected an integer in \(range.lowerBound)...\(range.upperBound)")
            }
            return value
        }

        let name = settings[.name] ?? "default"
        self.init(
            name: name,
            dataDir: settings[.dataDir],
            listenClientURLs: try urls(.listenClientURLs) ?? ["http://localhost:2379"],
            advertiseClientURLs: try urls(.advertiseClientURLs) ?? ["http://localhost:2379"]
        )
        listenMetricsURLs = try urls(.listenMetricsURLs) ?? []
        dedicatedWALDir = settings[.walDir].flatMap { $0.isEmpty ? nil : $0 }
        if let value = try urls(.listenPeerURLs) { listenPeerURLs = value }
        if let value = try urls(.initialAdvertisePeerURLs) { initialAdvertisePeerURLs = value }
        if let value = settings[.initialClusterToken] { initialClusterToken = value }
        if let value: UInt64 = try integer(.snapshotCount, 1...UInt64.max) { snapshotCount = value }
        if let value: Int = try integer(.heartbeatInterval, 1...10_000) { heartbeatIntervalMilliseconds = value }
        if let value: Int = try integer(.electionTimeout, 1...50_000) { electionTimeoutMilliseconds = value }
        if let value: Int = try integer(.maxRequestBytes, 1...Int(Int32.max)) { maxRequestBytes = value }
        if let value: Int = try integer(.maxTxnOps, 1...Int(Int32.max)) { maxTxnOps = value }
        if let value: Int = try integer(.quotaBackendBytes, 0...(1 << 40)) { quotaBackendBytes = value == 0 ? 2 << 30 : value }

        if electionTimeoutMilliseconds < 5 * heartbeatIntervalMilliseconds {
            throw .invalid(key: ConfigKey.electionTimeout.rawValue, value: String(electionTimeoutMilliseconds),
                           reason: "should be at least 5 times --heartbeat-interval (\(heartbeatIntervalMilliseconds))")
        }
        if let level = settings[.logLevel] {
            guard ["debug", "info", "warn", "error", "dpanic", "panic", "fatal"].contains(level) else {
                throw .invalid(key: ConfigKey.logLevel.rawValue, value: level, reason: "expected debug, info, warn, error, panic or fatal")
            }
            logLevel = level
        }
        if let level = settings[.metrics] {
            guard ["basic", "extensive"].contains(level) else {
                throw .invalid(key: ConfigKey.metrics.rawValue, value: level, reason: "expected basic or extensive")
            }
            extensiveMetrics = level == "extensive"
        }
        if let value = try duration(.watchProgressNotifyInterval, minimumMilliseconds: 1) { watchProgressNotifyIntervalMilliseconds = value }
        if let value: UInt32 = try integer(.maxConcurrentStreams, 1...UInt32.max) { maxConcurrentStreams = value }
        if let value: Int = try integer(.maxLearners, 1...Int(Int32.max)) { maxLearners = value }
        // grpc-go enforces a ping policy of 0 (any rate); its keepalive pings need a positive period and timeout.
        if let value = try duration(.grpcKeepaliveMinTime, minimumMilliseconds: 0) { grpcKeepaliveMinTimeMilliseconds = value }
        if let value = try duration(.grpcKeepaliveInterval, minimumMilliseconds: 1) { grpcKeepaliveIntervalMilliseconds = value }
        if let value = try duration(.grpcKeepaliveTimeout, minimumMilliseconds: 1) { grpcKeepaliveTimeoutMilliseconds = value }
        if let value = try duration(.downgradeCheckTime, minimumMilliseconds: 1) { downgradeCheckTimeMilliseconds = value }
        if let value = try duration(.corruptCheckTime, minimumMilliseconds: 0) { corruptCheckTimeMilliseconds = value }
        // etcd refuses a compaction hash check interval that is not > 0.
        if let value = try duration(.compactHashCheckTime, minimumMilliseconds: 1) { compactHashCheckTimeMilliseconds = value }
        if let value: UInt64 = try integer(.snapshotCatchUpEntries, 1...UInt64(Int32.max)) { snapshotCatchUpEntries = value }
        for (key, setting) in [(ConfigKey.preVote, \ServerConfig.preVote), (.forceNewCluster, \.forceNewCluster),
                               (.strictReconfigCheck, \.strictReconfigCheck), (.initialCorruptCheck, \.initialCorruptCheck),
                               (.compactHashCheckEnabled, \.compactHashCheck)] {
            guard let text = settings[key] else { continue }
            guard let value = GoBool.parse(text) else {
                throw .invalid(key: key.rawValue, value: text, reason: "expected true or false")
            }
            self[keyPath: setting] = value
        }
        try applyFeatureGates(settings)
        try applyTLSSettings(settings)
        try applyAuthSettings(settings)
        // etcd checks the mode even while auto-compaction is off.
        let mode = settings[.autoCompactionMode] ?? "periodic"
        guard mode == "periodic" || mode == "revision" else {
            throw .invalid(key: ConfigKey.autoCompactionMode.rawValue, value: mode, reason: "expected periodic or revision")
        }
        if let text = settings[.autoCompactionRetention] {
            autoCompaction = try AutoCompactionPolicy.parse(mode: mode, retention: text)
        }
        if let state = settings[.initialClusterState] {
            guard state == "new" || state == "existing" else {
                throw .invalid(key: ConfigKey.initialClusterState.rawValue, value: state, reason: "expected new or existing")
            }
            initialClusterState = state
        }

        // --initial-cluster defaults to this member alone (name=advertised peer URLs).
        if let text = settings[.initialCluster] {
            var members: [String: [String]] = [:]
            var order: [String] = []
            for part in text.split(separator: ",") {
                let pieces = part.split(separator: "=", maxSplits: 1).map { String($0).trimmingWhitespace() }
                guard pieces.count == 2, !pieces[0].isEmpty else {
                    throw .invalid(key: ConfigKey.initialCluster.rawValue, value: text, reason: "expected name=url[,name=url...]")
                }
                try Self.checkURL(pieces[1], .initialCluster)
                if members[pieces[0]] == nil { order.append(pieces[0]) }
                members[pieces[0], default: []].append(pieces[1])
            }
            initialCluster = order.map { ($0, members[$0]!) }
        } else {
            initialCluster = [(name, initialAdvertisePeerURLs)]
        }
        let allPeerURLs = initialCluster.flatMap(\.peerURLs)
        if let duplicate = allPeerURLs.first(where: { url in allPeerURLs.filter { $0 == url }.count > 1 }) {
            throw .invalid(key: ConfigKey.initialCluster.rawValue, value: settings[.initialCluster] ?? "",
                           reason: "peer URL \(duplicate) is listed more than once")
        }
        guard let mine = initialCluster.first(where: { $0.name == name }) else {
            throw .invalid(key: ConfigKey.initialCluster.rawValue, value: settings[.initialCluster] ?? "",
                           reason: "it does not name this member (\(name))")
        }
        guard mine.peerURLs.sorted() == initialAdvertisePeerURLs.sorted() else {
            throw .invalid(key: ConfigKey.initialCluster.rawValue, value: settings[.initialCluster] ?? "",
                           reason: "\(name)'s URLs \(mine.peerURLs) differ from --initial-advertise-peer-urls \(initialAdvertisePeerURLs)")
        }
    }

    /// --auth-token (`simple`, or `jwt,sign-method=…,pub-key=…,priv-key=…,ttl=…`
    /// as etcd parses it: options after the first comma are key=value, none
    /// twice; the key files are read when the member starts. etcd only
    /// warns about an unknown option; a misspelt `ttl` would leave tokens
    /// living longer than configured, so here it refuses the start), --auth-token-ttl (seconds) and
    /// --bcrypt-cost (4...31).
    private mutating func applyAuthSettings(_ settings: [ConfigKey: String]) throws(SettingsError) {
        if let text = settings[.authToken] {
            let parts = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            var options: [String: String] = [:]
            for pair in parts.dropFirst() {
                let sides = pair.split(separator: "=", omittingEmptySubsequences: false)
                guard sides.count == 2, options[String(sides[0])] == nil else {
                    throw .invalid(key: ConfigKey.authToken.rawValue, value: text, reason: "auth: invalid auth options")
                }
                options[String(sides[0])] = String(sides[1])
            }
            switch parts[0] {
            case "simple":
                jwt = nil
            case "jwt":
                if let unknown = options.keys.sorted().first(where: { !JWTOptions.knownOptions.contains($0) }) {
                    throw .invalid(key: ConfigKey.authToken.rawValue, value: text, reason: "unknown JWT option \"\(unknown)\" (known: pub-key, priv-key, sign-method, ttl)")
                }
                guard let method = options["sign-method"], JWTOptions.methods.contains(method) else {
                    throw .invalid(key: ConfigKey.authToken.rawValue, value: text, reason: "auth: invalid auth options (sign-method must be one of \(JWTOptions.methods.sorted().joined(separator: ", ")))")
                }
                var ttl = JWTOptions.defaultTTL
                if let given = options["ttl"], !given.isEmpty {
                    guard let milliseconds = GoDuration.milliseconds(given), milliseconds > 0 else {
                        throw .invalid(key: ConfigKey.authToken.rawValue, value: text, reason: "auth: invalid auth options (ttl \"\(given)\" is not a duration)")
                    }
                    ttl = .milliseconds(milliseconds)
                }
                jwt = JWTOptions(signMethod: method, publicKeyPath: options["pub-key"], privateKeyPath: options["priv-key"], ttl: ttl)
            default:
                throw .invalid(key: ConfigKey.authToken.rawValue, value: text, reason: "expected simple or jwt,...")
            }
        }
        if let text = settings[.authTokenTTL] {
            guard let value = UInt32(text.trimmingWhitespace()), value > 0 else {
                throw .invalid(key: ConfigKey.authTokenTTL.rawValue, value: text, reason: "expected a positive number of seconds")
            }
            authTokenTTLSeconds = Int(value)
        }
        if let text = settings[.bcryptCost] {
            guard let value = Int(text.trimmingWhitespace()), (4...31).contains(value) else {
                throw .invalid(key: ConfigKey.bcryptCost.rawValue, value: text, reason: "expected an integer in 4...31")
            }
            bcryptCost = value
        }
    }

    /// --feature-gates (of which we implement InitialCorruptCheck and
    /// CompactHashCheck; any other gate set away from etcd's default refuses
    /// the start, naming it); an implemented gate and its experimental
    /// flag (already applied) may not both be given.
    private mutating func applyFeatureGates(_ settings: [ConfigKey: String]) throws(SettingsError) {
        guard let text = settings[.featureGates] else { return }
        let gates = try FeatureGates.parse(text)
        for (gate, flag, setting) in [("InitialCorruptCheck", ConfigKey.initialCorruptCheck, \ServerConfig.initialCorruptCheck),
                                      ("CompactHashCheck", .compactHashCheckEnabled, \.compactHashCheck)] {
            guard let value = gates[gate] else { continue }
            if let experimental = settings[flag] {
                throw .invalid(key: ConfigKey.featureGates.rawValue, value: text, reason:
                    "cannot specify both flags: --\(flag.rawValue)=\(experimental) and --feature-gates=\(gate)=\(value) at the same time, please just use --feature-gates=\(gate)=\(value)")
            }
            self[keyPath: setting] = value
        }
    }

    /// A URL setting's value parses; unix sockets are refused (we listen on
    /// TCP only), rather than served on a port.
    private static func checkURL(_ url: String, _ key: ConfigKey) throws(SettingsError) {
        let address: ListenAddress
        do { address = try ListenAddress(parsing: url) } catch {
            throw .invalid(key: key.rawValue, value: url, reason: error.description)
        }
        if address.scheme == .unix || address.scheme == .unixs {
            throw .unsupported("unix sockets are not supported yet: --\(key.rawValue) \(url)")
        }
    }

    /// The TLS flags of both sides, with etcd's checks: versions and cipher
    /// names parse, and every `https://` URL has a certificate source.
    /// Certificate files are read when the listeners start.
    private mutating func applyTLSSettings(_ settings: [ConfigKey: String]) throws(SettingsError) {
        func bool(_ key: ConfigKey) throws(SettingsError) -> Bool {
            guard let text = settings[key] else { return false }
            guard let value = GoBool.parse(text) else { throw .invalid(key: key.rawValue, value: text, reason: "expected true or false") }
            return value
        }
        // The same settings under the client flag and the peer flag.
        let files: [(WritableKeyPath<TLSSettings, String>, client: ConfigKey, peer: ConfigKey)] = [
            (\.certFile, .certFile, .peerCertFile), (\.keyFile, .keyFile, .peerKeyFile),
            (\.clientCertFile, .clientCertFile, .peerClientCertFile), (\.clientKeyFile, .clientKeyFile, .peerClientKeyFile),
            (\.trustedCAFile, .trustedCAFile, .peerTrustedCAFile), (\.crlFile, .clientCRLFile, .peerCRLFile),
            (\.allowedHostname, .clientCertAllowedHostname, .peerCertAllowedHostname),
        ]
        let switches: [(WritableKeyPath<TLSSettings, Bool>, client: ConfigKey, peer: ConfigKey)] = [
            (\.clientCertAuth, .clientCertAuth, .peerClientCertAuth), (\.autoTLS, .autoTLS, .peerAutoTLS),
        ]
        var client = TLSSettings()
        var peer = TLSSettings()
        for (setting, clientKey, peerKey) in files {
            client[keyPath: setting] = settings[clientKey] ?? ""
            peer[keyPath: setting] = settings[peerKey] ?? ""
        }
        for (setting, clientKey, peerKey) in switches {
            client[keyPath: setting] = try bool(clientKey)
            peer[keyPath: setting] = try bool(peerKey)
        }
        peer.allowedCN = settings[.peerCertAllowedCN] ?? ""
        peer.checksClientAddress = try !bool(.peerSkipClientSANVerification)
        var validity = 1
        if let text = settings[.selfSignedCertValidity] {
            guard let years = Int(text.trimmingWhitespace()), years >= 0, years <= 1000 else {
                throw .invalid(key: ConfigKey.selfSignedCertValidity.rawValue, value: text, reason: "expected a number of years")
            }
            validity = max(years, 1)
        }
        let ciphers = (settings[.cipherSuites] ?? "").split(separator: ",").map { String($0).trimmingWhitespace() }.filter { !$0.isEmpty }
        do {
            let minimum = try TLSProtocolVersion.parse(settings[.tlsMinVersion] ?? "") ?? .tls12
            let maximum = try TLSProtocolVersion.parse(settings[.tlsMaxVersion] ?? "")
            for index in 0..<2 {
                var side = index == 0 ? client : peer
                side.selfSignedValidityYears = validity
                side.cipherSuites = ciphers
                side.minVersion = minimum
                side.maxVersion = maximum
                try side.validate()
                if index == 0 { client = side } else { peer = side }
            }
        } catch {
            throw .unsupported(error.description)
        }
        clientTLS = client
        peerTLS = peer
        for url in listenClientURLs where url.lowercased().hasPrefix("https://") && client.isEmpty {
            throw .unsupported("TLS key/cert (--cert-file, --key-file) must be provided for client url \(url) with HTTPS scheme")
        }
        for url in listenMetricsURLs where url.lowercased().hasPrefix("https://") && client.isEmpty {
            throw .unsupported("TLS key/cert (--cert-file, --key-file) must be provided for metrics url \(url) with HTTPS scheme")
        }
        for url in listenPeerURLs where url.lowercased().hasPrefix("https://") && peer.isEmpty {
            throw .unsupported("TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url \(url) with HTTPS scheme")
        }
    }

    /// The members `--initial-cluster` names, with the ids etcd gives them.
    public var initialMembers: [MemberRecord] {
        initialCluster.map { member in
            MemberRecord(id: MemberIdentity.memberID(peerURLs: member.peerURLs, clusterToken: initialClusterToken),
                         peerURLs: member.peerURLs, name: member.name)
        }
    }
}

/// etcd 3.6's `--feature-gates=Name=bool,...` (Kubernetes' feature-gate
/// syntax and errors). We implement InitialCorruptCheck and
/// CompactHashCheck; the other gates are accepted only at etcd's defaults.
enum FeatureGates {
    static let implemented: Set<String> = ["InitialCorruptCheck", "CompactHashCheck"]
    /// etcd 3.6's server gates and their defaults (plus Kubernetes' AllAlpha/AllBeta).
    static let etcdDefaults: [String: Bool] = [
        "InitialCorruptCheck": false, "CompactHashCheck": false, "StopGRPCServiceOnDefrag": false,
        "TxnModeWriteWithSharedBuffer": true, "LeaseCheckpoint": false, "LeaseCheckpointPersist": false,
        "SetMemberLocalAddr": false, "AllAlpha": false, "AllBeta": false,
    ]

    static func parse(_ text: String) throws(SettingsError) -> [String: Bool] {
        let key = ConfigKey.featureGates.rawValue
        var gates: [String: Bool] = [:]
        var refused: [String] = []
        for part in text.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map { String($0).trimmingWhitespace() }
            guard !pair[0].isEmpty || pair.count == 2 else { continue }
            guard pair.count == 2 else { throw .invalid(key: key, value: text, reason: "missing bool value for \(pair[0])") }
            guard let value = GoBool.parse(pair[1]) else {
                throw .invalid(key: key, value: text,
                               reason: "invalid value of \(pair[0])=\(pair[1]), err: strconv.ParseBool: parsing \"\(pair[1])\": invalid syntax")
            }
            guard let etcdDefault = etcdDefaults[pair[0]] else { throw .invalid(key: key, value: text, reason: "unrecognized feature gate: \(pair[0])") }
            if !implemented.contains(pair[0]) && value != etcdDefault { refused.append("--feature-gates \(pair[0])=\(value) is not supported yet") }
            gates[pair[0]] = value
        }
        guard refused.isEmpty else { throw .unsupported(refused.joined(separator: "; ")) }
        return gates
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var slice = Substring(self)
        while let first = slice.first, first.isWhitespace { slice.removeFirst() }
        while let last = slice.last, last.isWhitespace { slice.removeLast() }
        return String(slice)
    }
}

/// Go's duration syntax, as etcd's duration flags take it: a sequence of
/// decimal numbers with units (`10m`, `1h30m`, `1.5s`, `500ms`, `250us`).
enum GoDuration {
    static let unitMilliseconds: [(String, Double)] = [
        ("ns", 1e-6), ("us", 1e-3), ("µs", 1e-3), ("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000),
    ]

    /// Whole milliseconds (rounded down), or nil when `text` is not a duration.
    static func milliseconds(_ text: String) -> Int? {
        exactMilliseconds(text).map { Int($0) }
    }

    /// Milliseconds with their fraction (`250us` is 0.25), or nil.
    static func exactMilliseconds(_ text: String) -> Double? {
        var rest = Substring(text.trimmingWhitespace())
        guard !rest.isEmpty else { return nil }
        if rest == "0" { return 0 }
        var total = 0.0
        while !rest.isEmpty {
            let number = rest.prefix { $0.isNumber || $0 == "." }
            guard !number.isEmpty, let value = Double(number) else { return nil }
            rest = rest.dropFirst(number.count)
            let unit = rest.prefix { !$0.isNumber && $0 != "." }
            guard let scale = unitMilliseconds.first(where: { $0.0 == unit })?.1 else { return nil }
            rest = rest.dropFirst(unit.count)
            total += value * scale
        }
        guard total < Double(Int.max / 2) else { return nil }
        return total
    }
}
