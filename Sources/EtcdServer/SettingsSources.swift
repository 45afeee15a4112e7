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
            if name == "client-transport-security" || name == "peer-transport-security" {
                refused += refusedTLS(block: name, value)
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

    /// etcd's `securityConfig` keys; false, empty and absent are its defaults.
    static let tlsBlockKeys: Set<String> = [
        "cert-file", "key-file", "client-cert-file", "client-key-file", "client-cert-auth",
        "trusted-ca-file", "auto-tls", "allowed-cn", "allowed-hostname", "skip-client-san-verification",
    ]

    static func refusedTLS(block: String, _ value: ConfigFileValue) -> [String] {
        let notSupported = "is not supported yet (TLS is not supported yet)"
        switch value {
        case .null: return []
        case .scalar, .list: return ["config file key \(block) \(notSupported)"]
        case let .mapping(entries):
            return entries.keys.sorted().compactMap { key in
                let isDefault: Bool
                switch entries[key]! {
                case .null: isDefault = true
                case let .scalar(text): isDefault = text.isEmpty || GoBool.parse(text) == false
                case let .list(items): isDefault = items.isEmpty
                case .mapping: isDefault = false
                }
                // An unknown key in a TLS block may be a newer etcd's TLS setting: refused all the same.
                return isDefault && tlsBlockKeys.contains(key) ? nil : "config file key \(block).\(key) \(notSupported)"
            }
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
