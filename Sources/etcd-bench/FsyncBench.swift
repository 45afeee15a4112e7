import ArgumentParser
import Foundation

/// `fsync`: the disk's own sync latency, as etcd's documentation measures
/// it with fio (sequential writes of 2,300 bytes, fdatasync after each),
/// so load results can be read against what the disk allows.
struct FsyncBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fsync", abstract: "fdatasync latency after small sequential writes, in a scratch file.")

    @Option(help: "Directory for the scratch file (the disk under test).")
    var dir = FileManager.default.temporaryDirectory.path

    @Option(help: "Writes (each followed by fdatasync).")
    var count = 2000

    @Option(help: "Bytes per write.")
    var blockSize = 2300

    func validate() throws {
        guard (1...1_000_000).contains(count), (1...(1 << 20)).contains(blockSize) else {
            throw ValidationError("count must be 1...1000000 and block-size 1...1048576")
        }
    }

    func run() throws {
        let path = dir + "/etcd-bench-fsync-\(getpid())"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw ValidationError("cannot create \(path): \(String(cString: strerror(errno)))") }
        defer {
            close(fd)
            unlink(path)
        }
        let block = [UInt8](repeating: 0x61, count: blockSize)
        var latencies: [Duration] = []
        latencies.reserveCapacity(count)
        let clock = ContinuousClock()
        let start = clock.now
        for _ in 0..<count {
            let written = block.withUnsafeBytes { write(fd, $0.baseAddress, blockSize) }
            guard written == blockSize else { throw ValidationError("write failed: \(String(cString: strerror(errno)))") }
            let begin = clock.now
            guard fdatasync(fd) == 0 else { throw ValidationError("fdatasync failed: \(String(cString: strerror(errno)))") }
            latencies.append(clock.now - begin)
        }
        LoadRunner.report(label: "fdatasync after \(blockSize)-byte writes", latencies: latencies, errors: 0, elapsed: clock.now - start)
    }
}
