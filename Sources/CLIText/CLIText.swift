import Foundation

// Text output shared by etcdctl and etcdutl, as etcd's Go tools print it.

// MARK: - Tables (olekukonko/tablewriter with right alignment)

public func renderTable(header: [String], rows: [[String]]) -> String {
    let titles = header.map { $0.uppercased() }
    var widths = titles.map(\.count)
    for row in rows { for (i, c) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
    let border = "+" + widths.map { String(repeating: "-", count: $0 + 2) + "+" }.joined()
    var out = border + "\n"
    out += "|" + titles.enumerated().map { i, t in
        let gap = widths[i] - t.count
        let left = gap / 2
        return " " + String(repeating: " ", count: left) + t + String(repeating: " ", count: gap - left) + " |"
    }.joined() + "\n"
    out += border + "\n"
    for row in rows {
        out += "|" + row.enumerated().map { i, c in
            " " + String(repeating: " ", count: widths[i] - c.count) + c + " |"
        }.joined() + "\n"
    }
    out += border + "\n"
    return out
}

/// go-humanize's `Bytes` (SI units).
public func humanizeBytes(_ size: UInt64) -> String {
    if size < 10 { return "\(size) B" }
    let sizes = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    let e = floor(log(Double(size)) / log(1000.0))
    let suffix = sizes[Int(e)]
    let val = floor(Double(size) / pow(1000, e) * 10 + 0.5) / 10
    return String(format: val < 10 ? "%.1f %@" : "%.0f %@", val, suffix)
}
