import Foundation
import Locks
import Logging

/// swift-log handler writing etcd's log format: one JSON object per line on
/// standard error, `{"level":"info","ts":"2026-01-02T03:04:05.678Z","msg":"…",…}`
/// with the metadata as further fields — what operators' scripts and log
/// shippers already parse. Levels below `--log-level` are dropped.
public struct EtcdLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    private let sink: @Sendable (String) -> Void

    /// etcd's level names (`--log-level`), as swift-log levels.
    public static func level(named name: String) -> Logger.Level? {
        switch name {
        case "debug": return .debug
        case "info": return .info
        case "warn": return .warning
        case "error": return .error
        case "dpanic", "panic", "fatal": return .critical
        default: return nil
        }
    }

    public init(level: Logger.Level, sink: @escaping @Sendable (String) -> Void = EtcdLogHandler.standardError) {
        self.logLevel = level
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var line = #"{"level":""# + Self.name(of: event.level) + #"","ts":""# + Self.timestamp() + #"","msg":"#
        line += Self.quoted(event.message.description)
        let fields = metadata.merging(event.metadata ?? [:]) { $1 }
        for key in fields.keys.sorted() {
            line += "," + Self.quoted(key) + ":" + Self.quoted(fields[key]!.description)
        }
        line += "}\n"
        sink(line)
    }

    static func name(of level: Logger.Level) -> String {
        switch level {
        case .trace, .debug: return "debug"
        case .info, .notice: return "info"
        case .warning: return "warn"
        case .error: return "error"
        case .critical: return "fatal"
        }
    }

    /// RFC 3339 in UTC with milliseconds, as etcd's logger writes it.
    static func timestamp(_ date: Date = Date()) -> String {
        var seconds = time_t(date.timeIntervalSince1970)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let milliseconds = Int(date.timeIntervalSince1970 * 1000) % 1000
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
            Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
            Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), milliseconds)
    }

    /// A JSON string literal.
    public static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    private static let output = Mutex(())
    public static let standardError: @Sendable (String) -> Void = { line in
        output.withLock { _ in FileHandle.standardError.write(Data(line.utf8)) }
    }
}
