import Foundation
import Locks
import WAL

/// An in-memory file system that tracks what is durable, for crash tests.
///
/// Every change first lands in the "current" state. `sync()` makes a file's
/// data durable; `syncDirectory` makes the namespace (names, renames,
/// removals) durable. A crash can be armed to strike at the n-th mutating
/// call, which then fails, as does everything after it. `recoverFromCrash`
/// then rebuilds the state a real disk might hold: the durable state plus a
/// random prefix of the pending namespace changes and, per file, a random
/// prefix of its pending writes — the last one possibly torn part-way.
///
/// Durability is tracked with undo records, so an fsync costs nothing and
/// a write copies only its own bytes: each pending write remembers what it
/// overwrote, and a crash undoes the writes it does not keep.
public final class SimulatedFileSystem: WALFileSystem {
    fileprivate enum DataChange {
        case write(offset: Int, bytes: [UInt8])
        case resize(Int)
    }

    /// A change not yet fsynced, with what it replaced.
    fileprivate struct PendingChange {
        var change: DataChange
        var oldSize: Int
        /// The bytes the change overwrote or cut off, from `undoOffset`.
        var undoOffset: Int
        var undoBytes: [UInt8]
    }

    private struct Namespace {
        var directories: Set<String> = ["/"]
        var files: [String: Int] = [:]  // path -> inode
    }

    private enum NameChange {
        case makeDirectory(String)
        case link(String, inode: Int)
        case remove(String)
        case rename(String, String)
    }

    private struct Model {
        var durableNames = Namespace()
        var currentNames = Namespace()
        var pendingNames: [NameChange] = []
        var currentData: [Int: [UInt8]] = [:]
        var pendingData: [Int: [PendingChange]] = [:]
        var nextInode = 1
        var mutations = 0
        var crashAtMutation: Int?
        var crashed = false
    }

    private let model = Mutex(Model())

    public static let crashError = WALError.ioError(operation: "simulated crash", path: "", errno: EIO)

    public init() {}

    /// Mutating calls so far.
    public var mutations: Int { model.withLock { $0.mutations } }

    /// Arms a crash at the `n`-th mutating call from the start (1-based).
    public func crash(atMutation n: Int) {
        model.withLock { $0.crashAtMutation = n }
    }

    /// Makes every mutating call fail from now on, as if the process died.
    public func crashNow() {
        model.withLock { $0.crashed = true }
    }

    /// Rebuilds a post-crash state (see the type's comment) and disarms.
    /// The pending changes are visited in a fixed order (by inode), so a
    /// seeded generator gives the same state every time.
    public func recoverFromCrash(using generator: inout some RandomNumberGenerator) {
        model.withLock { m in
            var names = m.durableNames
            let keptNames = Int(generator.next() % UInt64(m.pendingNames.count + 1))
            for change in m.pendingNames.prefix(keptNames) { Self.apply(change, to: &names) }
            for inode in m.pendingData.keys.sorted() {
                let changes = m.pendingData[inode] ?? []
                var bytes = m.currentData[inode] ?? []
                let kept = Int(generator.next() % UInt64(changes.count + 1))
                // Undo, newest first, what the disk never got.
                for pending in changes[kept...].reversed() { Self.undo(pending, on: &bytes) }
                if kept > 0, generator.next() % 2 == 0 {
                    // The last kept write is torn part-way.
                    let last = changes[kept - 1]
                    Self.undo(last, on: &bytes)
                    Self.apply(last.change, to: &bytes, tornAt: generator.next())
                }
                m.currentData[inode] = bytes
            }
            m.durableNames = names
            m.currentNames = names
            m.pendingNames = []
            m.pendingData = [:]
            m.crashAtMutation = nil
            m.crashed = false
        }
    }

    // MARK: the model

    private func mutate<R: Sendable>(_ body: (inout Model) throws(WALError) -> R) throws(WALError) -> R {
        let result: Result<R, WALError> = model.withLock { m in
            if m.crashed { return .failure(Self.crashError) }
            m.mutations += 1
            if let n = m.crashAtMutation, m.mutations >= n {
                m.crashed = true
                return .failure(Self.crashError)
            }
            do throws(WALError) {
                return .success(try body(&m))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    private static func apply(_ change: NameChange, to names: inout Namespace) {
        switch change {
        case let .makeDirectory(path):
            names.directories.insert(path)
        case let .link(path, inode):
            names.files[path] = inode
        case let .remove(path):
            names.files[path] = nil
            names.directories.remove(path)
            names.files = names.files.filter { !$0.key.hasPrefix(path + "/") }
            names.directories = names.directories.filter { !$0.hasPrefix(path + "/") }
        case let .rename(source, destination):
            if let inode = names.files[source] {
                names.files[source] = nil
                names.files[destination] = inode
            } else if names.directories.contains(source) {
                names.directories.remove(source)
                names.directories.insert(destination)
                for (path, inode) in names.files where path.hasPrefix(source + "/") {
                    names.files[path] = nil
                    names.files[destination + path.dropFirst(source.count)] = inode
                }
                for path in names.directories where path.hasPrefix(source + "/") {
                    names.directories.remove(path)
                    names.directories.insert(destination + path.dropFirst(source.count))
                }
            }
        }
    }

    private static func undo(_ pending: PendingChange, on bytes: inout [UInt8]) {
        let restoreEnd = pending.undoOffset + pending.undoBytes.count
        if bytes.count < restoreEnd { bytes += [UInt8](repeating: 0, count: restoreEnd - bytes.count) }
        bytes.replaceSubrange(pending.undoOffset..<restoreEnd, with: pending.undoBytes)
        if bytes.count > pending.oldSize { bytes.removeSubrange(pending.oldSize...) }
    }

    private static func pending(_ change: DataChange, over bytes: [UInt8]) -> PendingChange {
        switch change {
        case let .write(offset, written):
            let end = min(bytes.count, offset + written.count)
            let old = offset < end ? Array(bytes[offset..<end]) : []
            return PendingChange(change: change, oldSize: bytes.count, undoOffset: min(offset, bytes.count), undoBytes: old)
        case let .resize(size):
            let cut = size < bytes.count ? Array(bytes[size...]) : []
            return PendingChange(change: change, oldSize: bytes.count, undoOffset: min(size, bytes.count), undoBytes: cut)
        }
    }

    private static func apply(_ change: DataChange, to bytes: inout [UInt8], tornAt cut: UInt64? = nil) {
        switch change {
        case let .write(offset, written):
            let count = cut.map { Int($0 % UInt64(written.count + 1)) } ?? written.count
            if bytes.count < offset + count { bytes += [UInt8](repeating: 0, count: offset + count - bytes.count) }
            bytes.replaceSubrange(offset..<(offset + count), with: written[..<count])
        case let .resize(size):
            if size < bytes.count { bytes.removeSubrange(size...) } else { bytes += [UInt8](repeating: 0, count: size - bytes.count) }
        }
    }

    private func record(_ change: NameChange, in m: inout Model) {
        Self.apply(change, to: &m.currentNames)
        m.pendingNames.append(change)
    }

    fileprivate func change(inode: Int, _ change: DataChange) throws(WALError) {
        try mutate { m throws(WALError) in
            m.pendingData[inode, default: []].append(Self.pending(change, over: m.currentData[inode] ?? []))
            Self.apply(change, to: &m.currentData[inode, default: []])
        }
    }

    fileprivate func sync(inode: Int) throws(WALError) {
        try mutate { m throws(WALError) in
            m.pendingData[inode] = nil
        }
    }

    fileprivate func size(inode: Int) -> Int {
        model.withLock { $0.currentData[inode]?.count ?? 0 }
    }

    private static func normalize(_ path: String) -> String {
        var trimmed = path
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        return trimmed
    }

    // MARK: WALFileSystem

    public func fileExists(atPath path: String) -> Bool {
        let path = Self.normalize(path)
        return model.withLock { $0.currentNames.files[path] != nil || $0.currentNames.directories.contains(path) }
    }

    public func createDirectory(atPath path: String) throws(WALError) {
        try mutate { m throws(WALError) in
            var prefix = ""
            for component in Self.normalize(path).split(separator: "/") {
                prefix += "/" + component
                if !m.currentNames.directories.contains(prefix) { record(.makeDirectory(prefix), in: &m) }
            }
        }
    }

    public func contentsOfDirectory(atPath path: String) throws(WALError) -> [String] {
        let directory = Self.normalize(path)
        return try model.withLock { m throws(WALError) -> [String] in
            guard m.currentNames.directories.contains(directory) else {
                throw .ioError(operation: "opendir", path: directory, errno: ENOENT)
            }
            let children = Array(m.currentNames.files.keys) + Array(m.currentNames.directories)
            return children.compactMap { child in
                guard child.hasPrefix(directory + "/") else { return nil }
                let name = child.dropFirst(directory.count + 1)
                return name.contains("/") ? nil : String(name)
            }
        }
    }

    public func removeItem(atPath path: String) throws(WALError) {
        let path = Self.normalize(path)
        try mutate { m throws(WALError) in
            guard m.currentNames.files[path] != nil || m.currentNames.directories.contains(path) else {
                throw .ioError(operation: "remove", path: path, errno: ENOENT)
            }
            record(.remove(path), in: &m)
        }
    }

    public func rename(atPath source: String, toPath destination: String) throws(WALError) {
        let (source, destination) = (Self.normalize(source), Self.normalize(destination))
        try mutate { m throws(WALError) in
            guard m.currentNames.files[source] != nil || m.currentNames.directories.contains(source) else {
                throw .ioError(operation: "rename", path: source, errno: ENOENT)
            }
            record(.rename(source, destination), in: &m)
        }
    }

    public func syncDirectory(atPath path: String) throws(WALError) {
        try mutate { m throws(WALError) in
            // Simplification: one directory fsync makes every pending
            // namespace change durable.
            m.durableNames = m.currentNames
            m.pendingNames = []
        }
    }

    public func readFile(atPath path: String) throws(WALError) -> [UInt8] {
        let path = Self.normalize(path)
        return try model.withLock { m throws(WALError) -> [UInt8] in
            guard let inode = m.currentNames.files[path] else {
                throw .ioError(operation: "open", path: path, errno: ENOENT)
            }
            return m.currentData[inode] ?? []
        }
    }

    public func openFile(atPath path: String, mode: WALFileOpenMode) throws(WALError) -> any WALFileHandle {
        let path = Self.normalize(path)
        let inode: Int
        switch mode {
        case .readWrite:
            guard let existing = model.withLock({ $0.currentNames.files[path] }) else {
                throw .ioError(operation: "open", path: path, errno: ENOENT)
            }
            inode = existing
        case .createTruncate:
            inode = try mutate { m throws(WALError) -> Int in
                let inode = m.nextInode
                m.nextInode += 1
                m.currentData[inode] = []
                record(.link(path, inode: inode), in: &m)
                return inode
            }
        }
        return SimulatedFile(fs: self, inode: inode)
    }
}

private final class SimulatedFile: WALFileHandle {
    let fs: SimulatedFileSystem
    let inode: Int

    init(fs: SimulatedFileSystem, inode: Int) {
        self.fs = fs
        self.inode = inode
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(WALError) {
        try fs.change(inode: inode, .write(offset: Int(offset), bytes: Array(bytes)))
    }
    func sync() throws(WALError) { try fs.sync(inode: inode) }
    func truncate(toSize size: Int64) throws(WALError) { try fs.change(inode: inode, .resize(Int(size))) }
    func preallocate(toSize size: Int64) throws(WALError) {
        if Int(size) > fs.size(inode: inode) { try fs.change(inode: inode, .resize(Int(size))) }
    }
    func size() throws(WALError) -> Int64 { Int64(fs.size(inode: inode)) }
    func close() {}
}
