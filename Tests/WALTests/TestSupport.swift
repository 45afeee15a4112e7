import EtcdProto
import Foundation
import Locks
import Testing
@testable import WAL

/// A fresh directory under the system temp dir, removed by `cleanup()`.
struct TemporaryDirectory {
    let path: String

    init() {
        var template = Array((joinPath(NSTemporaryDirectory(), "wal-test-XXXXXX")).utf8CString)
        let created = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(created != nil, "mkdtemp failed")
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    func cleanup() {
        try? PosixFileSystem().removeItem(atPath: path)
    }

    /// `<temp>/member/wal`, the layout the server uses.
    var walDirectory: String { path + "/member/wal" }
}

/// Runs `body` with a temporary directory that is removed afterwards.
func withTemporaryDirectory<R>(_ body: (TemporaryDirectory) throws -> R) rethrows -> R {
    let directory = TemporaryDirectory()
    defer { directory.cleanup() }
    return try body(directory)
}

func makeEntry(index: UInt64, term: UInt64, dataBytes: Int = 16) -> Raftpb_Entry {
    var entry = Raftpb_Entry()
    entry.index = index
    entry.term = term
    entry.type = .entryNormal
    // Deterministic, never ending in a zero byte.
    entry.data = Data((0..<dataBytes).map { UInt8(truncatingIfNeeded: Int(index) &* 31 &+ $0 &* 7) | 1 })
    return entry
}

func makeHardState(term: UInt64, vote: UInt64 = 1, commit: UInt64) -> Raftpb_HardState {
    var state = Raftpb_HardState()
    state.term = term
    state.vote = vote
    state.commit = commit
    return state
}

/// A file system that skips real fsyncs, for tests about content.
let noSyncFS = CountingFileSystem(performSyncs: false)

/// Compares entries by the fields the WAL stores.
func sameEntries(_ lhs: [Raftpb_Entry], _ rhs: [Raftpb_Entry]) -> Bool {
    lhs.count == rhs.count && zip(lhs, rhs).allSatisfy {
        $0.index == $1.index && $0.term == $1.term && $0.type == $1.type && $0.data == $1.data
    }
}

func sameState(_ lhs: Raftpb_HardState, _ rhs: Raftpb_HardState) -> Bool {
    lhs.term == rhs.term && lhs.vote == rhs.vote && lhs.commit == rhs.commit
}

/// Segment file names in a WAL directory, in order.
func segmentFiles(in directory: String) throws -> [String] {
    try PosixFileSystem().contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".wal") }.sorted()
}

func readBytes(_ path: String) throws -> [UInt8] {
    try PosixFileSystem().readFile(atPath: path)
}

func writeBytes(_ bytes: [UInt8], to path: String) throws {
    let file = try PosixFileSystem().openFile(atPath: path, mode: .createTruncate)
    defer { file.close() }
    try bytes.withBytes { buffer throws(WALError) in try file.write(buffer, at: 0) }
}

/// One frame as found in a segment by the test's own, independent parser
/// (SwiftProtobuf for the record), used to derive expectations.
struct TestFrame {
    var start: Int
    var payloadEnd: Int
    var frameEnd: Int
    var record: Walpb_Record
}

func parseFrames(_ bytes: [UInt8]) throws -> [TestFrame] {
    var frames: [TestFrame] = []
    var offset = 0
    while offset + 8 <= bytes.count {
        var word: UInt64 = 0
        for i in 0..<8 { word |= UInt64(bytes[offset + i]) << (8 * UInt64(i)) }
        if word == 0 { break }
        let payload = Int(word & 0x00FF_FFFF_FFFF_FFFF)
        let padding = word >> 63 == 1 ? Int((word >> 56) & 7) : 0
        let payloadEnd = offset + 8 + payload
        let record = try Walpb_Record(serializedBytes: Array(bytes[(offset + 8)..<payloadEnd]))
        frames.append(TestFrame(start: offset, payloadEnd: payloadEnd, frameEnd: payloadEnd + padding, record: record))
        offset = payloadEnd + padding
    }
    return frames
}

/// What reading `records` from the start of the log must yield.
func expectedContents(_ records: [Walpb_Record]) throws -> (state: Raftpb_HardState, entries: [Raftpb_Entry]) {
    var state = Raftpb_HardState()
    var entries: [Raftpb_Entry] = []
    for record in records {
        switch record.type {
        case 2:
            let entry = try Raftpb_Entry(serializedBytes: record.data)
            entries.removeSubrange(Int(entry.index - 1)...)
            entries.append(entry)
        case 3:
            state = try Raftpb_HardState(serializedBytes: record.data)
        default:
            break
        }
    }
    return (state, entries)
}

/// Wraps the real file system and counts syncs (and can fail writes), so
/// tests can check the durability protocol.
final class CountingFileSystem: WALFileSystem {
    struct Counts: Equatable {
        var fileSyncs = 0
        var directorySyncs = 0
        var writes = 0
    }

    let base = PosixFileSystem()
    /// False to skip real fsyncs (still counted): for tests about content,
    /// not durability, so the suite does not wait on the disk.
    let performSyncs: Bool
    let counts = Mutex(Counts())
    /// When set, the n-th write from now on (1-based) fails with EIO.
    let failWriteAfter = Mutex<Int?>(nil)

    init(performSyncs: Bool = true) {
        self.performSyncs = performSyncs
    }

    var snapshot: Counts { counts.withLock { $0 } }

    func reset() { counts.withLock { $0 = Counts() } }

    func fileExists(atPath path: String) -> Bool { base.fileExists(atPath: path) }
    func createDirectory(atPath path: String) throws(WALError) { try base.createDirectory(atPath: path) }
    func contentsOfDirectory(atPath path: String) throws(WALError) -> [String] {
        try base.contentsOfDirectory(atPath: path)
    }
    func removeItem(atPath path: String) throws(WALError) { try base.removeItem(atPath: path) }
    func rename(atPath source: String, toPath destination: String) throws(WALError) {
        try base.rename(atPath: source, toPath: destination)
    }
    func syncDirectory(atPath path: String) throws(WALError) {
        counts.withLock { $0.directorySyncs += 1 }
        if performSyncs { try base.syncDirectory(atPath: path) }
    }
    func readFile(atPath path: String) throws(WALError) -> [UInt8] { try base.readFile(atPath: path) }
    func lockDirectory(atPath path: String) throws(WALError) -> any WALDirectoryLock {
        try base.lockDirectory(atPath: path)
    }
    func openFile(atPath path: String, mode: WALFileOpenMode) throws(WALError) -> any WALFileHandle {
        CountingFileHandle(base: try base.openFile(atPath: path, mode: mode), owner: self)
    }

    /// True if this write must fail.
    func consumeWriteFault() -> Bool {
        failWriteAfter.withLock { remaining in
            guard let n = remaining else { return false }
            if n <= 1 {
                remaining = nil
                return true
            }
            remaining = n - 1
            return false
        }
    }
}

final class CountingFileHandle: WALFileHandle {
    let base: any WALFileHandle
    let owner: CountingFileSystem

    init(base: any WALFileHandle, owner: CountingFileSystem) {
        self.base = base
        self.owner = owner
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(WALError) {
        if owner.consumeWriteFault() { throw .ioError(operation: "write", path: "injected", errno: EIO) }
        owner.counts.withLock { $0.writes += 1 }
        try base.write(bytes, at: offset)
    }
    func sync() throws(WALError) {
        owner.counts.withLock { $0.fileSyncs += 1 }
        if owner.performSyncs { try base.sync() }
    }
    func truncate(toSize size: Int64) throws(WALError) { try base.truncate(toSize: size) }
    func preallocate(toSize size: Int64) throws(WALError) { try base.preallocate(toSize: size) }
    func size() throws(WALError) -> Int64 { try base.size() }
    func close() { base.close() }
}

/// A small seeded generator so test data is reproducible.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
