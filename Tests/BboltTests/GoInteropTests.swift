import Bbolt
import Checksum
import Crypto
import Foundation
import Testing

/// Debian's etcd 3.4 (etcd-server, etcd-client) against our bbolt files.
struct GoInteropTests {
    static let goEtcdctl = "/usr/bin/etcdctl"
    static let goEtcd = "/usr/bin/etcd"

    /// Go `etcdctl snapshot status` (bbolt's own reader, with its integrity
    /// check) accepts a file we wrote and reports the hash, revision, key
    /// count and size we compute.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: goEtcdctl)))
    func goEtcdctlAcceptsOurFile() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let key: [([UInt8], [UInt8])] = (1...30_000).map { (revisionKey(UInt64($0)), Array("value-\($0)".utf8)) }
            + [(revisionKey(30_001), [UInt8](repeating: 9, count: 20_000))]
        let buckets: [(String, [([UInt8], [UInt8])])] = [
            ("alarm", []), ("key", key), ("lease", []),
            ("meta", [(Array("consistent_index".utf8), [0, 0, 0, 0, 0, 0, 0, 7])]),
        ]
        let path = dir + "/snap.db"
        let summary = try write(buckets, to: path)
        try appendSHA256(path)
        let status = try goStatus(path)
        #expect(status.totalKey == summary.keyCount)
        #expect(status.totalSize == summary.byteCount)
        #expect(status.revision == 30_001)
        var crc = CRC32C()
        for (name, pairs) in buckets {
            crc.update(Array(name.utf8))
            for (k, v) in pairs { crc.update(k); crc.update(v) }
        }
        #expect(status.hash == crc.value)
    }

    /// A snapshot saved from the real etcd reads with our reader: the same
    /// buckets and key count Go's status reports, inline buckets included.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: goEtcd)))
    func readsARealEtcdSnapshot() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let port = try freeLoopbackPort(), peer = try freeLoopbackPort()
        let etcd = Process()
        etcd.executableURL = URL(fileURLWithPath: Self.goEtcd)
        etcd.arguments = ["--name", "r", "--data-dir", dir + "/data",
                          "--listen-client-urls", "http://127.0.0.1:\(port)", "--advertise-client-urls", "http://127.0.0.1:\(port)",
                          "--listen-peer-urls", "http://127.0.0.1:\(peer)", "--initial-advertise-peer-urls", "http://127.0.0.1:\(peer)",
                          "--initial-cluster", "r=http://127.0.0.1:\(peer)"]
        etcd.standardOutput = FileHandle.nullDevice
        etcd.standardError = FileHandle.nullDevice
        try etcd.run()
        defer { etcd.terminate(); etcd.waitUntilExit() }
        let endpoint = "--endpoints=127.0.0.1:\(port)"
        let deadline = Date().addingTimeInterval(20)
        while try run(Self.goEtcdctl, [endpoint, "put", "k0", "v0"]).status != 0 {
            guard Date() < deadline else { throw InteropError("real etcd did not start") }
            Thread.sleep(forTimeInterval: 0.1)
        }
        for i in 1...200 { _ = try run(Self.goEtcdctl, [endpoint, "put", "k\(i)", String(repeating: "v", count: i * 10)]) }
        _ = try run(Self.goEtcdctl, [endpoint, "del", "k7"])
        _ = try run(Self.goEtcdctl, [endpoint, "lease", "grant", "600"])
        let path = dir + "/snap.db"
        let saved = try run(Self.goEtcdctl, [endpoint, "snapshot", "save", path])
        #expect(saved.status == 0, "\(saved.err)")
        let status = try goStatus(path)

        let reader = try BboltReader(path: path)
        var total = 0
        var lastRevision: UInt64 = 0
        var crc = CRC32C()
        let buckets = try reader.buckets()
        for bucket in buckets {
            crc.update(bucket.name)
            try reader.forEach(in: bucket) { key, value in
                total += 1
                crc.update(key)
                crc.update(value)
                if bucket.nameString == "key" { lastRevision = key.prefix(8).reduce(0) { $0 << 8 | UInt64($1) } }
            }
        }
        #expect(Set(buckets.map(\.nameString)).isSuperset(of: ["key", "meta", "lease", "members", "cluster"]))
        #expect(buckets.contains { $0.rootPage == 0 })
        #expect(total == status.totalKey)
        #expect(Int(lastRevision) == status.revision)
        #expect(crc.value == status.hash)
        #expect(reader.databaseBytes == status.totalSize)
    }
}

struct InteropError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

struct GoStatus: Decodable {
    var hash: UInt32
    var revision: Int
    var totalKey: Int
    var totalSize: Int
}

func goStatus(_ path: String) throws -> GoStatus {
    let result = try run(GoInteropTests.goEtcdctl, ["snapshot", "status", path, "-w", "json"])
    guard result.status == 0 else { throw InteropError("snapshot status failed: \(result.err)") }
    return try JSONDecoder().decode(GoStatus.self, from: Data(result.out.utf8))
}

/// Appends etcd's trailer: the SHA-256 of everything before it.
func appendSHA256(_ path: String) throws {
    let data = try Data(contentsOf: URL(fileURLWithPath: path))
    let digest = SHA256.hash(data: data)
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    try handle.seekToEnd()
    try handle.write(contentsOf: Data(digest))
    try handle.close()
}

/// Runs a process to completion (killed after `timeout` seconds), with ETCDCTL_API=3.
func run(_ path: String, _ arguments: [String], timeout: Double = 30) throws -> (status: Int32, out: String, err: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("ETCDCTL_") }
    env["ETCDCTL_API"] = "3"
    process.environment = env
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("run-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    FileManager.default.createFile(atPath: dir.path + "/out", contents: nil)
    FileManager.default.createFile(atPath: dir.path + "/err", contents: nil)
    process.standardOutput = try FileHandle(forWritingTo: dir.appendingPathComponent("out"))
    process.standardError = try FileHandle(forWritingTo: dir.appendingPathComponent("err"))
    try process.run()
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning {
        if Date() > deadline { process.terminate() }
        Thread.sleep(forTimeInterval: 0.01)
    }
    let out = try String(contentsOf: dir.appendingPathComponent("out"), encoding: .utf8)
    let err = try String(contentsOf: dir.appendingPathComponent("err"), encoding: .utf8)
    return (process.terminationStatus, out, err)
}

func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
            guard bind(fd, pointer, length) == 0 else { return -1 }
            return getsockname(fd, pointer, &length)
        }
    }
    guard bound == 0 else { throw InteropError("no free port") }
    return Int(UInt16(bigEndian: address.sin_port))
}
