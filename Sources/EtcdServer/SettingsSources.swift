/// Where `etcd`'s settings come from, as etcd reads them: the command line
/// and `ETCD_*` variables (a flag wins over its variable), or — with
/// `--config-file` — only the YAML file.
///
/// Fail closed: a setting etcd has and we do not implement refuses the
/// start, named, unless its value is one under which etcd behaves exactly as
/// without it (`EtcdFlag.isHarmless`). Names that are not etcd's are only
/// warned about, as etcd warns about unknown `ETCD_*` variables.
public struct ResolvedSettings: Equatable, Sendable {
    public var settings: [ConfigKey: String] = [:]
    /// To log at warning level once logging is up.
    public var warnings: [String] = []

    public init(settings: [ConfigKey: String] = [:], warnings: [String] = []) {
        self.settings = settings
        self.warnings = warnings
    }
}

/// A value of etcd's YAML config file, as the YAML loader gives it.
public indirect enum ConfigFileValue: Equatable, Sendable {
    case null
    case scalar(String)
    case list([ConfigFileValue])
    case mapping([String: ConfigFileValue])
}

public enum SettingsSources {
    /// Variables that are etcd's (or ours) without being a flag's.
    static let knownVariables: Set<String> = ["ETCD_FAILPOINTS", "ETCD_UNSUPPORTED_ARCH"]

    /// The settings from parsed flags and the environment.
    public static func resolve(flags: CommandLineFlags, environment: [String: String]) throws(SettingsError) -> ResolvedSettings {
        var resolved = ResolvedSettings()
        var given: [(flag: EtcdFlag, value: String, source: String)] = []
        var known = knownVariables
        for flag in EtcdFlag.byName.values {
            known.insert(flag.environmentVariable)
            if let value = flags.values[flag.name] {
                given.append((flag, value, "--\(flag.name)"))
                if let shadowed = environment[flag.environmentVariable] {
                    resolved.warnings.append("recognized environment variable \(flag.environmentVariable)=\(shadowed), but unused: shadowed by corresponding flag")
                }
            } else if let value = environment[flag.environmentVariable] {
                given.append((flag, value, "\(flag.environmentVariable)=\(value): --\(flag.name)"))
            }
        }
        for (name, value) in environment.sorted(by: { $0.key < $1.key }) where name.hasPrefix("ETCD_") && !known.contains(name) {
            resolved.warnings.append("unrecognized environment variable \(name)=\(value)")
        }

        var refused: [String] = []
        for (flag, value, source) in given.sorted(by: { $0.flag.name < $1.flag.name }) {
            if let key = flag.key {
                try assign(key, value, from: flag.name, to: &resolved.settings)
            } else if flag.name != EtcdFlag.version.name, flag.name != EtcdFlag.configFile.name, !flag.isHarmless(value) {
                refused.append("\(source) is not supported yet")
            }
        }
        guard refused.isEmpty else { throw .unsupported(refused.joined(separator: "; ")) }
        return resolved
    }

    /// The settings from etcd's YAML config file (its top-level mapping).
    /// Keys are the flag names; TLS settings nest under
    /// `client-transport-security` and `peer-transport-security`; durations
    /// are integers of nanoseconds, as etcd's Go decoder reads them (Go
    /// duration strings such as `10m` are accepted too).
    public static func resolve(configFile: [String: ConfigFileValue]) throws(SettingsError) -> ResolvedSettings {
        var resolved = ResolvedSettings()
        var refused: [String] = []
        for (name, value) in configFile.sorted(by: { $0.key < $1.key }) {
            if let block = tlsBlocks[name] {
                refused += try assignTLS(block: name, keys: block, value, to: &resolved.settings)
                continue
            }
            guard let flag = EtcdFlag.byName[name], flag.name != EtcdFlag.version.name, flag.name != EtcdFlag.configFile.name else {
                resolved.warnings.append("unrecognized config file key \(name) (ignored, as etcd does)")
                continue
            }
            guard let text = try scalarText(value, key: name, kind: flag.kind) else { continue }
            if let key = flag.key {
                try assign(key, text, from: name, to: &resolved.settings)
            } else if !flag.isHarmless(text) {
                refused.append("config file key \(name) is not supported yet")
            }
        }
        guard refused.isEmpty else { throw .unsupported(refused.joined(separator: "; ")) }
        return resolved
    }

    /// etcd's two `securityConfig` blocks: their keys and the flags they set
    /// (`crl-file` is ours: etcd sets CRLs by flag only).
    static let tlsBlocks: [String: [String: ConfigKey]] = [
        "client-transport-security": [
            "cert-file": .certFile, "key-file": .keyFile, "client-cert-file": .clientCertFile, "client-key-file": .clientKeyFile,
            "client-cert-auth": .clientCertAuth, "trusted-ca-file": .trustedCAFile, "auto-tls": .autoTLS,
            "allowed-hostname": .clientCertAllowedHostname, "crl-file": .clientCRLFile,
        ],
        "peer-transport-security": [
            "cert-file": .peerCertFile, "key-file": .peerKeyFile, "client-cert-file": .peerClientCertFile,
            "client-key-file": .peerClientKeyFile, "client-cert-auth": .peerClientCertAuth, "trusted-ca-file": .peerTrustedCAFile,
            "auto-tls": .peerAutoTLS, "allowed-cn": .peerCertAllowedCN, "allowed-hostname": .peerCertAllowedHostname,
            "skip-client-san-verification": .peerSkipClientSANVerification, "crl-file": .peerCRLFile,
        ],
    ]

    /// A TLS block's entries as the flags they stand for. A key etcd has
    /// there and we do not (the client side's `allowed-cn` and
    /// `skip-client-san-verification`) is refused unless at its default; an
    /// unknown key is refused too (it may be a newer etcd's TLS setting).
    static func assignTLS(block: String, keys: [String: ConfigKey], _ value: ConfigFileValue,
                          to settings: inout [ConfigKey: String]) throws(SettingsError) -> [String] {
        switch value {
        case .null: return []
        case .scalar, .list: return ["config file key \(block) must be a mapping of TLS settings"]
        case let .mapping(entries):
            var refused: [String] = []
            for key in entries.keys.sorted() {
                let entry = entries[key]!
                if let setting = keys[key] {
                    guard let text = try scalarText(entry, key: "\(block).\(key)", kind: setting.kind) else { continue }
                    try assign(setting, text, from: "\(block).\(key)", to: &settings)
                    continue
                }
                let isDefault: Bool
                switch entry {
                case .null: isDefault = true
                case let .scalar(text): isDefault = text.isEmpty || GoBool.parse(text) == false
                case let .list(items): isDefault = items.isEmpty
                case .mapping: isDefault = false
                }
                if !(isDefault && ["allowed-cn", "skip-client-san-verification"].contains(key)) {
                    refused.append("config file key \(block).\(key) is not supported yet")
                }
            }
            return refused
        }
    }

    /// A config-file value as the text of its flag; nil for null (absent).
    static func scalarText(_ value: ConfigFileValue, key: String, kind: EtcdFlag.Kind) throws(SettingsError) -> String? {
        switch value {
        case .null: return nil
        case let .scalar(text):
            // etcd's YAML durations are Go's time.Duration: nanoseconds.
            if kind == .duration, !text.isEmpty, text.allSatisfy(\.isASCIIDigit) { return text == "0" ? "0" : text + "ns" }
            return text
        case let .list(items):
            var texts: [String] = []
            for item in items {
                guard case let .scalar(text) = item else { throw .invalid(key: key, value: "\(item)", reason: "expected a list of strings") }
                texts.append(text)
            }
            return texts.joined(separator: ",")
        case .mapping: throw .invalid(key: key, value: "a mapping", reason: "expected a value")
        }
    }

    /// etcd 3.6 renamed two experimental flags; both names set is ambiguous.
    static func assign(_ key: ConfigKey, _ value: String, from name: String, to settings: inout [ConfigKey: String]) throws(SettingsError) {
        if let earlier = settings[key], earlier != value {
            throw .unsupported("--\(key.rawValue) and its new name are both set, to \"\(earlier)\" and \"\(value)\"; set only one")
        }
        settings[key] = value
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
