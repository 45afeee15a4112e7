import Locks
import Prometheus

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The process collector Go's Prometheus client registers by default
/// (process_*), and etcd's os_fd_* gauges, read from /proc at each
/// exposition (Linux; elsewhere they stay 0).
final class ProcessMetrics: Sendable {
    private let cpuSeconds: Counter
    private let openFDs: Gauge
    private let maxFDs: Gauge
    private let virtualMemory: Gauge
    private let virtualMemoryMax: Gauge
    private let residentMemory: Gauge
    private let startTime: Gauge
    private let fdUsed: Gauge
    private let fdLimit: Gauge
    /// CPU seconds already added to the counter (it only goes up by deltas).
    private let cpuCounted = Mutex<Double>(0)

    init(registry r: PrometheusCollectorRegistry) {
        cpuSeconds = r.counter(name: "process_cpu_seconds_total", help: "Total user and system CPU time spent in seconds.")
        openFDs = r.gauge(name: "process_open_fds", help: "Number of open file descriptors.")
        maxFDs = r.gauge(name: "process_max_fds", help: "Maximum number of open file descriptors.")
        virtualMemory = r.gauge(name: "process_virtual_memory_bytes", help: "Virtual memory size in bytes.")
        virtualMemoryMax = r.gauge(name: "process_virtual_memory_max_bytes", help: "Maximum amount of virtual memory available in bytes.")
        residentMemory = r.gauge(name: "process_resident_memory_bytes", help: "Resident memory size in bytes.")
        startTime = r.gauge(name: "process_start_time_seconds", help: "Start time of the process since unix epoch in seconds.")
        fdUsed = r.gauge(name: "os_fd_used", help: "The number of used file descriptors.")
        fdLimit = r.gauge(name: "os_fd_limit", help: "The file descriptor limit.")
    }

    func collect() {
        #if os(Linux)
        if let stat = Self.readFile("/proc/self/stat").flatMap(ProcStat.init) {
            let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
            let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))
            let cpu = Double(stat.userTicks + stat.systemTicks) / ticks
            cpuCounted.withLock { counted in
                if cpu > counted {
                    cpuSeconds.increment(by: cpu - counted)
                    counted = cpu
                }
            }
            virtualMemory.set(Double(stat.virtualBytes))
            residentMemory.set(Double(stat.residentPages) * pageSize)
            if let bootTime = Self.bootTime() {
                startTime.set(Double(bootTime) + Double(stat.startTicks) / ticks)
            }
        }
        if let fds = Self.countEntries("/proc/self/fd") {
            openFDs.set(Double(fds))
            fdUsed.set(Double(fds))
        }
        var files = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &files) == 0 {
            let limit = files.rlim_cur == rlim_t.max ? Double.infinity : Double(files.rlim_cur)
            maxFDs.set(limit)
            fdLimit.set(limit)
        }
        var address = rlimit()
        if getrlimit(Int32(RLIMIT_AS.rawValue), &address) == 0 {
            // Go's collector reports "unlimited" as the largest uint64.
            virtualMemoryMax.set(address.rlim_cur == rlim_t.max ? 18_446_744_073_709_551_615 : Double(address.rlim_cur))
        }
        #endif
    }

    /// The fields of /proc/self/stat used here (proc(5) numbering).
    struct ProcStat {
        var userTicks: UInt64  // 14
        var systemTicks: UInt64  // 15
        var startTicks: UInt64  // 22
        var virtualBytes: UInt64  // 23
        var residentPages: UInt64  // 24

        init?(_ text: String) {
            // The command name (field 2) is in parentheses and may hold
            // spaces: fields are counted from after its closing one.
            guard let close = text.lastIndex(of: ")") else { return nil }
            let fields = text[text.index(after: close)...].split(separator: " ")
            // fields[0] is field 3 (state).
            func field(_ n: Int) -> UInt64? { n - 3 < fields.count ? UInt64(fields[n - 3]) : nil }
            guard let utime = field(14), let stime = field(15), let start = field(22), let vsize = field(23), let rss = field(24) else {
                return nil
            }
            (userTicks, systemTicks, startTicks, virtualBytes, residentPages) = (utime, stime, start, vsize, rss)
        }
    }

    /// Seconds since the epoch at boot (`btime` in /proc/stat).
    static func bootTime() -> UInt64? {
        guard let text = readFile("/proc/stat") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("btime ") {
            return UInt64(line.dropFirst(6).trimmingPrefix(" "))
        }
        return nil
    }

    /// A small /proc file read whole (their size shows as 0, so read to EOF).
    static func readFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 1 << 20 {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { break }
            bytes.append(contentsOf: chunk[..<n])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Entries in a directory, without `.` and `..` (and without the one
    /// descriptor used to read it, for /proc/self/fd).
    static func countEntries(_ path: String) -> Int? {
        guard let dir = opendir(path) else { return nil }
        defer { closedir(dir) }
        var count = 0
        while let entry = readdir(dir) {
            let isDot = withUnsafeBytes(of: entry.pointee.d_name) { name in
                name[0] == UInt8(ascii: ".") && (name[1] == 0 || (name[1] == UInt8(ascii: ".") && name[2] == 0))
            }
            if !isDot { count += 1 }
        }
        return max(0, count - 1)
    }
}
