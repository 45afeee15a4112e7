import Foundation

/// Exit codes of etcd's etcdctl.
enum ExitCode {
    static let success: Int32 = 0
    static let error: Int32 = 1
    static let badConnection: Int32 = 2
    static let invalidInput: Int32 = 3
    static let badFeature: Int32 = 4
    static let interrupted: Int32 = 5
    static let io: Int32 = 6
    static let badArgs: Int32 = 128
}

/// Thrown to end the program with a code (output already written).
struct Exit: Error { let code: Int32 }

/// Buffered stdout/stderr writes (unbuffered for stderr).
enum Out {
    static let lock = NSLock()
    static func print(_ s: String, terminator: String = "\n") {
        lock.lock(); defer { lock.unlock() }
        FileHandle.standardOutput.write(Data((s + terminator).utf8))
    }
    static func write(_ data: Data) {
        lock.lock(); defer { lock.unlock() }
        FileHandle.standardOutput.write(data)
    }
    static func err(_ s: String, terminator: String = "\n") {
        lock.lock(); defer { lock.unlock() }
        FileHandle.standardError.write(Data((s + terminator).utf8))
    }
}

/// Prints "Error: <message>" and exits with `code` (etcdctl's ExitWithError).
func fail(_ code: Int32, _ message: String) -> Exit {
    Out.err("Error: \(message)")
    return Exit(code: code)
}

enum FlagKind { case bool, string, int, duration, stringSlice }

/// A pflag-style flag.
final class Flag: @unchecked Sendable {
    let name: String
    let shorthand: String
    let kind: FlagKind
    let defValue: String
    let usage: String
    var value: String
    var changed = false
    /// Left out of the usage text (pflag's MarkHidden): our additions to the Go etcdctl's commands.
    var hidden = false

    init(_ name: String, _ kind: FlagKind, _ defValue: String, _ usage: String, short: String = "") {
        self.name = name
        self.kind = kind
        self.defValue = defValue
        self.usage = usage
        shorthand = short
        value = defValue
    }

    var bool: Bool { value == "true" }
    var string: String { value }
    var int: Int64 { Int64(value) ?? 0 }
    var duration: Duration { (try? parseGoDuration(value)) ?? .zero }
    var strings: [String] {
        let inner = value.hasPrefix("[") && value.hasSuffix("]") ? String(value.dropFirst().dropLast()) : value
        return inner.isEmpty ? [] : inner.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
    }

    /// Sets from text, validating like pflag; returns the error text on failure.
    func set(_ text: String) -> String? {
        switch kind {
        case .bool:
            guard let b = parseGoBool(text) else {
                return "invalid argument \"\(text)\" for \"\(flagDisplay)\" flag: strconv.ParseBool: parsing \(goQuote(text)): invalid syntax"
            }
            value = b ? "true" : "false"
        case .int:
            guard Int64(text) != nil else {
                let kind = text.isEmpty || Int64(text.filter { $0 != "-" && $0 != "+" }) == nil || text.filter({ $0 == "-" || $0 == "+" }).count > 1
                    ? "invalid syntax" : "value out of range"
                return "invalid argument \"\(text)\" for \"\(flagDisplay)\" flag: strconv.ParseInt: parsing \(goQuote(text)): \(kind)"
            }
            value = text
        case .duration:
            do { _ = try parseGoDuration(text) } catch {
                return "invalid argument \"\(text)\" for \"\(flagDisplay)\" flag: time: invalid duration \(goQuote(text))"
            }
            value = text
        case .stringSlice:
            let items = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            if changed { value = "[" + (strings + items).joined(separator: ",") + "]" } else { value = "[" + items.joined(separator: ",") + "]" }
        case .string:
            value = text
        }
        changed = true
        return nil
    }

    var flagDisplay: String { shorthand.isEmpty ? "--\(name)" : "-\(shorthand), --\(name)" }
}

func parseGoBool(_ s: String) -> Bool? {
    switch s {
    case "1", "t", "T", "true", "TRUE", "True": return true
    case "0", "f", "F", "false", "FALSE", "False": return false
    default: return nil
    }
}

struct DurationError: Error {}

/// Parses Go's `time.ParseDuration` syntax ("1.5s", "2m3s", "300ms").
func parseGoDuration(_ text: String) throws -> Duration {
    var s = Substring(text)
    var negative = false
    if s.first == "-" || s.first == "+" { negative = s.first == "-"; s = s.dropFirst() }
    if s == "0" { return .zero }
    guard !s.isEmpty else { throw DurationError() }
    var total = 0.0
    while !s.isEmpty {
        let number = s.prefix { $0.isNumber || $0 == "." }
        guard !number.isEmpty, let v = Double(number) else { throw DurationError() }
        s = s.dropFirst(number.count)
        let unit = s.prefix { !($0.isNumber || $0 == ".") }
        s = s.dropFirst(unit.count)
        let scale: Double
        switch unit {
        case "ns": scale = 1e-9
        case "us", "µs", "μs": scale = 1e-6
        case "ms": scale = 1e-3
        case "s": scale = 1
        case "m": scale = 60
        case "h": scale = 3600
        default: throw DurationError()
        }
        total += v * scale
    }
    let d = Duration.nanoseconds(Int64((total * 1e9).rounded()))
    return negative ? .zero - d : d
}

/// What a command's run function receives.
struct Invocation: Sendable {
    let command: Command
    let args: [String]
    /// Raw argv after the program name (for `watch ... -- cmd`).
    let rawArgs: [String]
    func flag(_ name: String) -> Flag {
        command.lookup(name)!
    }
}

/// A cobra-style command.
final class Command: @unchecked Sendable {
    let use: String
    let short: String
    let long: String
    var localFlags: [Flag] = []
    var persistentFlags: [Flag] = []
    var subcommands: [Command] = []
    weak var parent: Command?
    let run: ((Invocation) async throws -> Void)?

    init(_ use: String, _ short: String, long: String = "", run: ((Invocation) async throws -> Void)? = nil) {
        self.use = use
        self.short = short
        self.long = long
        self.run = run
    }

    var name: String { String(use.split(separator: " ").first ?? "") }

    @discardableResult
    func add(_ children: Command...) -> Command {
        for c in children { c.parent = self; subcommands.append(c) }
        return self
    }

    func flag(_ name: String, _ kind: FlagKind, _ def: String, _ usage: String, short: String = "", hidden: Bool = false) {
        let f = Flag(name, kind, def, usage, short: short)
        f.hidden = hidden
        localFlags.append(f)
    }

    func persistent(_ name: String, _ kind: FlagKind, _ def: String, _ usage: String, short: String = "") {
        persistentFlags.append(Flag(name, kind, def, usage, short: short))
    }

    var ancestors: [Command] {
        var list: [Command] = []
        var c = parent
        while let p = c { list.append(p); c = p.parent }
        return list
    }

    var root: Command { ancestors.last ?? self }

    lazy var helpFlag = Flag("help", .bool, "false", "help for \(name)", short: "h")

    /// Own local + own persistent flags, and the help flag.
    var ownFlags: [Flag] { localFlags + persistentFlags + [helpFlag] }
    var inheritedFlags: [Flag] { ancestors.flatMap(\.persistentFlags) }
    var allFlags: [Flag] { ownFlags + inheritedFlags }

    func lookup(_ name: String) -> Flag? { allFlags.first { $0.name == name } }
    func lookupShort(_ s: String) -> Flag? { allFlags.first { $0.shorthand == s } }

    var path: String { (ancestors.reversed().map(\.name) + [name]).joined(separator: " ") }

    var useLine: String {
        let parentPath = parent.map { $0.path + " " } ?? ""
        var line = parentPath + use
        if !allFlags.isEmpty && !line.contains("[flags]") { line += " [flags]" }
        return line
    }

    /// Finds a direct subcommand by name or unique prefix.
    func findNext(_ name: String) -> Command? {
        if let exact = subcommands.first(where: { $0.name == name }) { return exact }
        let matches = subcommands.filter { $0.name.hasPrefix(name) }
        return matches.count == 1 ? matches[0] : nil
    }

    // MARK: Usage

    func usage() -> String {
        var s = "NAME:\n"
        if parent == nil { s += "\t\(name) - \(short)\n" } else {
            s += "\t\(ancestors.reversed().dropFirst().map(\.name).joined(separator: " ").appendingSpaceIfNotEmpty)\(name) - \(short)\n"
        }
        s += "\nUSAGE:\n\t\(useLine)\n"
        if parent == nil { s += "\nVERSION:\n\t\(etcdctlVersion)\n" }
        if !subcommands.isEmpty {
            s += "\nAPI VERSION:\n\t\(apiVersion)\n"
            s += "\n\nCOMMANDS:\n"
            for c in allDescendants() where c.run != nil {
                var parts = [c.name]
                var p = c.parent
                while let q = p, q !== self { parts.insert(q.name, at: 0); p = q.parent }
                s += "\t\(parts.joined(separator: " "))\t\(c.short)\n"
            }
        }
        if !long.isEmpty {
            s += "\nDESCRIPTION:\n"
            for line in long.trimmingCharacters(in: CharacterSet(charactersIn: "\n\t ")).split(separator: "\n", omittingEmptySubsequences: false) {
                s += "\t\(line)\n"
            }
        }
        s += "\nOPTIONS:\n" + Self.flagUsages(ownFlags)
        let inherited = inheritedFlags
        if !inherited.isEmpty { s += "\nGLOBAL OPTIONS:\n" + Self.flagUsages(inherited) }
        s += "\n"
        return TabWriter.format(s, minwidth: 0, tabwidth: 8, padding: 1)
    }

    func allDescendants() -> [Command] {
        subcommands.sorted { $0.name < $1.name }.flatMap { [$0] + $0.allDescendants() }
    }

    static func flagUsages(_ flags: [Flag]) -> String {
        var out = ""
        for f in flags.sorted(by: { $0.name < $1.name }) where !f.hidden {
            var line = f.shorthand.isEmpty ? "      --\(f.name)" : "  -\(f.shorthand), --\(f.name)"
            let noOpt = f.kind == .bool
            if noOpt { line += "[" }
            line += f.kind == .string ? "=\(goQuote(f.defValue))" : "=\(f.defValue)"
            if noOpt { line += "]" }
            out += line + "\t\(f.usage)\n"
        }
        return out
    }
}

extension String {
    var appendingSpaceIfNotEmpty: String { isEmpty ? "" : self + " " }
}

/// Go's `text/tabwriter` for the flags used by etcdctl's help (AlignLeft, no flags).
enum TabWriter {
    static func format(_ text: String, minwidth: Int, tabwidth: Int, padding: Int) -> String {
        var output = ""
        var block: [[String]] = []
        func flush() {
            output += formatBlock(block, minwidth: minwidth, tabwidth: tabwidth, padding: padding)
            block = []
        }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        for (i, line) in lines.enumerated() {
            let cells = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            let isLast = i == lines.count - 1
            if isLast {
                if !line.isEmpty { block.append(cells) }
                flush()
                // The final fragment has no newline.
                if !line.isEmpty { output.removeLast() }
                break
            }
            block.append(cells)
            if cells.count == 1 { flush() }
        }
        return output
    }

    private static func formatBlock(_ lines: [[String]], minwidth: Int, tabwidth: Int, padding: Int) -> String {
        var out = ""
        var widths: [Int] = []
        func writeLines(_ from: Int, _ to: Int) {
            for i in from..<to {
                let cells = lines[i]
                for (j, cell) in cells.enumerated() {
                    out += cell
                    if j < cells.count - 1, j < widths.count {
                        let width = cell.count
                        let cellw = (widths[j] + tabwidth - 1) / tabwidth * tabwidth
                        let n = cellw - width
                        out += String(repeating: "\t", count: (n + tabwidth - 1) / tabwidth)
                    }
                }
                out += "\n"
            }
        }
        func format(_ line0: Int, _ line1: Int) {
            var line0 = line0
            let column = widths.count
            var this = line0
            while this < line1 {
                if column >= lines[this].count - 1 { this += 1; continue }
                writeLines(line0, this)
                line0 = this
                var width = minwidth
                while this < line1 {
                    let cells = lines[this]
                    if column >= cells.count - 1 { break }
                    let w = cells[column].count + padding
                    if w > width { width = w }
                    this += 1
                }
                widths.append(width)
                format(line0, this)
                widths.removeLast()
                line0 = this
            }
            writeLines(line0, line1)
        }
        format(0, lines.count)
        return out
    }
}

/// Result of resolving argv against the command tree.
enum Parsed {
    case run(Command, [String])
    case help(Command)
}

enum Cobra {
    /// cobra's stripFlags: the non-flag words, skipping values of known value flags.
    static func stripFlags(_ args: [String], _ c: Command) -> [String] {
        var commands: [String] = []
        var rest = args[...]
        while let s = rest.first {
            rest = rest.dropFirst()
            if s == "--" { break }
            if s.hasPrefix("--") && !s.contains("=") && !(c.lookup(String(s.dropFirst(2)))?.kind == .bool) {
                if rest.isEmpty { break }
                rest = rest.dropFirst()
            } else if s.hasPrefix("-") && !s.hasPrefix("--") && !s.contains("=") && s.count == 2 && !(c.lookupShort(String(s.dropFirst()))?.kind == .bool) {
                if rest.isEmpty { break }
                rest = rest.dropFirst()
            } else if !s.isEmpty && !s.hasPrefix("-") {
                commands.append(s)
            }
        }
        return commands
    }

    static func find(_ root: Command, _ args: [String]) -> (Command, [String]) {
        var c = root
        var args = args
        while true {
            let words = stripFlags(args, c)
            guard let next = words.first, let sub = c.findNext(next) else { return (c, args) }
            if let i = args.firstIndex(of: next) { args.remove(at: i) }
            c = sub
        }
    }

    /// pflag parsing of `args` for `c`; returns positional arguments.
    static func parseFlags(_ c: Command, _ args: [String]) throws -> [String] {
        var positional: [String] = []
        var i = 0
        func value(for flag: Flag, display: String) throws -> String {
            i += 1
            guard i < args.count else { throw FlagError("flag needs an argument: \(display)") }
            return args[i]
        }
        while i < args.count {
            let s = args[i]
            if s == "--" {
                positional += args[(i + 1)...]
                break
            }
            if s.hasPrefix("--") {
                let body = s.dropFirst(2)
                let name = String(body.split(separator: "=", maxSplits: 1).first ?? "")
                guard let flag = c.lookup(name) else {
                    if name == "help" || body.isEmpty { throw FlagError("bad flag syntax: \(s)") }
                    throw FlagError("unknown flag: --\(name)")
                }
                if let eq = body.firstIndex(of: "=") {
                    if let e = flag.set(String(body[body.index(after: eq)...])) { throw FlagError(e) }
                } else if flag.kind == .bool {
                    _ = flag.set("true")
                } else {
                    let v = try value(for: flag, display: "--\(name)")
                    if let e = flag.set(v) { throw FlagError(e) }
                }
            } else if s.hasPrefix("-") && s.count > 1 {
                var shorts = Substring(s.dropFirst())
                while let ch = shorts.first {
                    shorts = shorts.dropFirst()
                    guard let flag = c.lookupShort(String(ch)) else {
                        throw FlagError("unknown shorthand flag: '\(ch)' in \(s)")
                    }
                    if shorts.first == "=" {
                        if let e = flag.set(String(shorts.dropFirst())) { throw FlagError(e) }
                        shorts = ""
                    } else if flag.kind == .bool {
                        _ = flag.set("true")
                    } else if !shorts.isEmpty {
                        if let e = flag.set(String(shorts)) { throw FlagError(e) }
                        shorts = ""
                    } else {
                        let v = try value(for: flag, display: "'\(ch)' in \(s)")
                        if let e = flag.set(v) { throw FlagError(e) }
                    }
                }
            } else {
                positional.append(s)
            }
            i += 1
        }
        return positional
    }
}

struct FlagError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// Go's `%q` for a string (strconv.Quote): printable runes kept, others escaped.
func goQuote(_ s: String) -> String {
    goQuoteBytes(Data(s.utf8))
}

/// `%q` of raw bytes interpreted as a Go string (invalid UTF-8 becomes \x escapes).
func goQuoteBytes(_ data: Data) -> String {
    var out = "\""
    let bytes = [UInt8](data)
    var i = 0
    while i < bytes.count {
        let b = bytes[i]
        if b < 0x80 {
            switch b {
            case 0x07: out += "\\a"
            case 0x08: out += "\\b"
            case 0x0c: out += "\\f"
            case 0x0a: out += "\\n"
            case 0x0d: out += "\\r"
            case 0x09: out += "\\t"
            case 0x0b: out += "\\v"
            case 0x22: out += "\\\""
            case 0x5c: out += "\\\\"
            default:
                if b < 0x20 || b == 0x7f { out += String(format: "\\x%02x", b) } else { out.unicodeScalars.append(Unicode.Scalar(b)) }
            }
            i += 1
            continue
        }
        // Decode one UTF-8 sequence.
        var length = 0
        if b & 0xE0 == 0xC0 { length = 2 } else if b & 0xF0 == 0xE0 { length = 3 } else if b & 0xF8 == 0xF0 { length = 4 }
        if length > 0, i + length <= bytes.count,
           let scalar = String(bytes: bytes[i..<(i + length)], encoding: .utf8)?.unicodeScalars.first,
           String(bytes: bytes[i..<(i + length)], encoding: .utf8)?.unicodeScalars.count == 1 {
            if scalar.properties.generalCategory.isPrintableForGo {
                out.unicodeScalars.append(scalar)
            } else if scalar.value < 0x10000 {
                out += String(format: "\\u%04x", scalar.value)
            } else {
                out += String(format: "\\U%08x", scalar.value)
            }
            i += length
        } else {
            out += String(format: "\\x%02x", b)
            i += 1
        }
    }
    return out + "\""
}

extension Unicode.GeneralCategory {
    /// Go's unicode.IsPrint: letters, marks, numbers, punctuation, symbols and U+0020.
    var isPrintableForGo: Bool {
        switch self {
        case .control, .format, .surrogate, .privateUse, .unassigned, .lineSeparator, .paragraphSeparator, .spaceSeparator: return false
        default: return true
        }
    }
}
