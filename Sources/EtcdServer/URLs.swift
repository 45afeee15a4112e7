/// A listen address parsed from an etcd URL such as `http://127.0.0.1:2379`.
public struct ListenAddress: Sendable, Equatable {
    public enum Scheme: String, Sendable { case http, https, unix, unixs }
    public var scheme: Scheme
    public var host: String
    public var port: Int

    public init(scheme: Scheme, host: String, port: Int) {
        self.scheme = scheme
        self.host = host
        self.port = port
    }

    /// Parses `scheme://host:port`; IPv6 hosts are bracketed (`http://[::1]:2379`).
    public init(parsing url: String) throws(ConfigError) {
        guard let sep = url.firstRange(of: "://"),
              let scheme = Scheme(rawValue: String(url[..<sep.lowerBound]).lowercased())
        else { throw ConfigError.invalidURL(url, "expected http:// or https://") }
        var rest = url[sep.upperBound...]
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        let host: Substring
        let portText: Substring
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw ConfigError.invalidURL(url, "unclosed IPv6 bracket") }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let afterClose = rest[rest.index(after: close)...]
            guard afterClose.hasPrefix(":") else { throw ConfigError.invalidURL(url, "missing port") }
            portText = afterClose.dropFirst()
        } else {
            guard let colon = rest.lastIndex(of: ":") else { throw ConfigError.invalidURL(url, "missing port") }
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
        }
        guard let port = Int(portText), (0...65535).contains(port) else {
            throw ConfigError.invalidURL(url, "invalid port")
        }
        guard !host.isEmpty else { throw ConfigError.invalidURL(url, "missing host") }
        self.scheme = scheme
        self.host = String(host)
        self.port = port
    }
}

public enum ConfigError: Error, Equatable, CustomStringConvertible {
    case invalidURL(String, String)

    public var description: String {
        switch self {
        case let .invalidURL(url, why): return "invalid URL \"\(url)\": \(why)"
        }
    }
}

enum URLs {
    /// A peer URL etcd accepts in MemberAdd/MemberUpdate: http(s)://host:port.
    static func isValidPeerURL(_ url: String) -> Bool {
        guard let address = try? ListenAddress(parsing: url) else { return false }
        return address.scheme == .http || address.scheme == .https
    }
}
