import Foundation
import Synchronization
@testable import WAL

/// An in-memory file system that tracks what is durable, for crash tests.
///
/// Every change first lands in the "current" state. `sync()` makes a file's
/// data durable; `syncDirectory` makes the namespace (names, renames,
/// removals) durable. A crash can be armed to strike at the n-th mutating
/// call, which then fails, as does everything after it. `recoverFromCrash`
/// then rebuilds the state a real disk might hold: the durable state plus a
/// random prefix of the pending namespace changes and, per file, a random
/// prefix of its pending writes — the last one possibly torn part-way.
final class SimulatedFileSystem: WALFileSystem {
    fileprivate enum DataChange {
        case write(offset: Int, bytes: [UInt8])
        case resize(Int)
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
        var durableData: [Int: [UInt8]] = [:]
        var currentData: [Int: [UInt8]] = [:]
        var pendingData: [Int: [DataChange]] = [:]
        var nextInode = 1
        var mutations = 0
        var crashAtMutation: Int?
        var crashed = false
    }

    private let model = Mutex(Model())

    static let crashError = WALError.ioError(operation: "simulated crash", path: "", errno: EIO)

    /// Mutating calls so far.
    var mutations: Int { model.withLock { $0.mutations } }

    /// Arms a crash at the `n`-th mutating call from the start (1-based).
    func crash(atMutation n: Int) {
        model.withLock { $0.crashAtMutation = n }
    }

    /// Rebuilds a post-crash state (see the type's comment) and disarms.
    func recoverFromCrash(using generator: inout SplitMix64) {
        model.withLock { m in
            var names = m.durableNames
            let keptNames = Int(generator.next() % UInt64(m.pendingNames.count + 1))
            for change in m.pendingNames.prefix(keptNames) { Self.apply(change, to: &names) }
            var data = m.durableData
            for (inode, changes) in m.pendingData {
                var bytes = data[inode] ?? []
                let kept = Int(generator.next() % UInt64(changes.count + 1))
                for (i, change) in changes.prefix(kept).enumerated() {
                    let torn = i == kept - 1 && generator.next() % 2 == 0
                    Self.apply(change, to: &bytes, tornAt: torn ? generator.next() : nil)
                }
                data[inode] = bytes
            }
            m.durableNames = names
            m.currentNames = names
            m.pendingNames = []
            m.durableData = data
            m.currentData = data
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
            Self.apply(change, to: &m.currentData[inode, default: []])
            m.pendingData[inode, default: []].append(change)
        }
    }

    fileprivate func sync(inode: Int) throws(WALError) {
        try mutate { m throws(WALError) in
            m.durableData[inode] = m.currentData[inode]
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

    func fileExists(atPath path: String) -> Bool {
        let path = Self.normalize(path)
        return model.withLock { $0.currentNames.files[path] != nil || $0.currentNames.directories.contains(path) }
    }

    func createDirectory(atPath path: String) throws(WALError) {
        try mutate { m throws(WALError) in
            var prefix = ""
            for component in Self.normalize(path).split(separator: "/") {
                prefix += "/" + component
                if !m.currentNames.directories.contains(prefix) { record(.makeDirectory(prefix), in: &m) }
            }
        }
    }

    func contentsOfDirectory(atPath path: String) throws(WALError) -> [String] {
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

    func removeItem(atPath path: String) throws(WALError) {
        let path = Self.normalize(path)
        try mutate { m throws(WALError) in
            guard m.currentNames.files[path] != nil || m.currentNames.directories.contains(path) else {
                throw .ioError(operation: "remove", path: path, errno: ENOENT)
            }
            record(.remove(path), in: &m)
        }
    }

    func rename(atPath source: String, toPath destination: String) throws(WALError) {
        let (source, destination) = (Self.normalize(source), Self.normalize(destination))
        try mutate { m throws(WALError) in
            guard m.currentNames.files[source] != nil || m.currentNames.directories.contains(source) else {
                throw .ioError(operation: "rename", path: source, errno: ENOENT)
            }
            record(.rename(source, destination), in: &m)
        }
    }

    func syncDirectory(atPath path: String) throws(WALError) {
        try mutate { m throws(WALError) in
            // Simplification: one directory fsync makes every pending
            // namespace change durable.
            m.durableNames = m.currentNames
            m.pendingNames = []
        }
    }

    func readFile(atPath path: String) throws(WALError) -> [UInt8] {
        let path = Self.normalize(path)
        return try model.withLock { m throws(WALError) -> [UInt8] in
            guard let inode = m.currentNames.files[path] else {
                throw .ioError(operation: "open", path: path, errno: ENOENT)
            }
            return m.currentData[inode] ?? []
        }
    }

    func openFile(atPath path: String, mode: WALFileOpenMode) throws(WALError) -> any WALFileHandle {
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
                m.durableData[inode] = []
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
