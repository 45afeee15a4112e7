#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a new bbolt database file from buckets of sorted key/value pairs,
/// streaming: leaf pages go to the file as they fill, the branch levels of a
/// bucket when the bucket ends, the root bucket, freelist and meta pages last
/// (pages 0-2 are reserved up front and written in place at `finish`).
///
/// Memory: one page of pending elements, a 1 MiB output buffer, and per
/// bucket the first key and page id of each leaf (the level above the
/// leaves, about 1/100 of the data for small keys). Buckets must come in
/// ascending name order and keys within a bucket in ascending order, as
/// bbolt stores them; every bucket is written as a regular (not inline)
/// bucket, which bbolt reads the same way. The free list is empty: every
/// page below the high water mark is used.
public final class BboltWriter {
    public let path: String
    public let pageSize: Int
    private let fd: Int32
    private var nextPage: UInt64 = 3
    private var output: [UInt8] = []
    private var outputOffset: Int
    private var buckets: [(name: [UInt8], root: UInt64)] = []
    private var tree: TreeState?
    private var finished = false
    private static let flushBytes = 1 << 20

    /// The result of `finish()`.
    public struct Summary: Sendable, Equatable {
        /// Pages in the file (bbolt's high water mark).
        public var pageCount: UInt64
        /// File size in bytes: `pageCount * pageSize`.
        public var byteCount: Int
        /// Key/value pairs written across all buckets.
        public var keyCount: Int
    }
    private var keyCount = 0

    /// Creates `path` (which must not exist) with mode 0600.
    public init(path: String, pageSize: Int = BboltFormat.defaultPageSize) throws {
        guard pageSize >= 1024, pageSize <= 65536, pageSize & (pageSize - 1) == 0 else {
            throw BboltError.usage("page size \(pageSize) is not a power of two in 1024...65536")
        }
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw BboltError.io(operation: "create", path: path, errno: errno) }
        self.fd = fd
        self.path = path
        self.pageSize = pageSize
        self.outputOffset = 3 * pageSize
        output.reserveCapacity(Self.flushBytes + pageSize)
    }

    deinit { close(fd) }

    /// Starts the next bucket; `name` must sort after the previous bucket's.
    public func beginBucket(_ name: [UInt8]) throws {
        guard !finished, tree == nil else { throw BboltError.usage("beginBucket while a bucket is open or after finish") }
        guard !name.isEmpty else { throw BboltError.usage("empty bucket name") }
        if let last = buckets.last?.name {
            let order = last.withUnsafeBytes { a in name.withUnsafeBytes { b in compareKeys(a, b) } }
            guard order < 0 else { throw BboltError.usage("bucket names not ascending") }
        }
        buckets.append((name, 0))
        tree = TreeState()
    }

    /// Adds a pair to the open bucket; `key` must sort after the previous key.
    public func put(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) throws {
        guard var state = tree else { throw BboltError.usage("put without an open bucket") }
        tree = nil
        defer { tree = state }
        guard key.count > 0 else { throw BboltError.usage("empty key") }
        if state.hasLastKey {
            guard state.lastKey.withUnsafeBytes({ compareKeys($0, key) }) < 0 else {
                throw BboltError.usage("keys not ascending")
            }
        }
        state.lastKey.removeAll(keepingCapacity: true)
        state.lastKey.append(contentsOf: key)
        state.hasLastKey = true
        try add(&state, flags: 0, key: key, value: value)
        keyCount += 1
    }

    public func put(key: [UInt8], value: [UInt8]) throws {
        try key.withUnsafeBytes { k in
            try value.withUnsafeBytes { v in try put(key: k, value: v) }
        }
    }

    /// Closes the open bucket: writes its last leaf and its branch levels.
    public func endBucket() throws {
        guard var state = tree else { throw BboltError.usage("endBucket without an open bucket") }
        tree = nil
        buckets[buckets.count - 1].root = try finishTree(&state)
    }

    /// Writes the root bucket, the (empty) freelist and both meta pages,
    /// then fsyncs the file.
    @discardableResult
    public func finish(sync: Bool = true) throws -> Summary {
        guard !finished, tree == nil else { throw BboltError.usage("finish while a bucket is open or twice") }
        var root = TreeState()
        for bucket in buckets {
            var header = [UInt8](repeating: 0, count: BboltFormat.bucketHeaderSize)
            header.putLE(bucket.root, at: 0)
            try bucket.name.withUnsafeBytes { k in
                try header.withUnsafeBytes { v in
                    try add(&root, flags: BboltFormat.bucketLeafFlag, key: k, value: v)
                }
            }
        }
        let rootPage = try finishTree(&root)
        try flushOutput()
        finished = true

        var head = [UInt8](repeating: 0, count: 3 * pageSize)
        for id in 0..<2 {
            let base = id * pageSize
            head.putLE(UInt64(id), at: base)
            head.putLE(BboltFormat.metaPageFlag, at: base + 8)
            let m = base + BboltFormat.pageHeaderSize
            head.putLE(BboltFormat.magic, at: m)
            head.putLE(BboltFormat.version, at: m + 4)
            head.putLE(UInt32(pageSize), at: m + 8)
            head.putLE(UInt32(0), at: m + 12)
            head.putLE(rootPage, at: m + 16)
            head.putLE(UInt64(0), at: m + 24)
            head.putLE(UInt64(2), at: m + 32)
            head.putLE(nextPage, at: m + 40)
            // The current meta lives on page txid % 2: page 0 holds txid 2.
            head.putLE(UInt64(id == 0 ? 2 : 1), at: m + 48)
            let sum = BboltFormat.fnv64a(head[m..<(m + BboltFormat.metaChecksummedBytes)])
            head.putLE(sum, at: m + BboltFormat.metaChecksummedBytes)
        }
        let freelist = 2 * pageSize
        head.putLE(UInt64(2), at: freelist)
        head.putLE(BboltFormat.freelistPageFlag, at: freelist + 8)
        try writeAll(head, at: 0)
        if sync, fsync(fd) != 0 { throw BboltError.io(operation: "fsync", path: path, errno: errno) }
        return Summary(pageCount: nextPage, byteCount: Int(nextPage) * pageSize, keyCount: keyCount)
    }

    // MARK: trees

    /// One B+tree being built bottom-up: the leaf filling now, and the
    /// (first key, page) of every leaf written so far.
    private struct TreeState {
        var flags: [UInt32] = []
        var sizes: [(key: Int, value: Int)] = []
        var data: [UInt8] = []
        var children: [(key: [UInt8], page: UInt64)] = []
        var lastKey: [UInt8] = []
        var hasLastKey = false

        var pageBytes: Int { BboltFormat.pageHeaderSize + BboltFormat.elementSize * sizes.count + data.count }
    }

    private func add(_ state: inout TreeState, flags: UInt32, key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) throws {
        let bytes = BboltFormat.elementSize + key.count + value.count
        guard key.count <= Int(UInt32.max), value.count <= Int(UInt32.max) else { throw BboltError.usage("key or value over 4 GiB") }
        if !state.sizes.isEmpty, state.pageBytes + bytes > pageSize || state.sizes.count == Int(UInt16.max) {
            try writeLeaf(&state)
        }
        state.flags.append(flags)
        state.sizes.append((key.count, value.count))
        state.data.append(contentsOf: key)
        state.data.append(contentsOf: value)
    }

    private func writeLeaf(_ state: inout TreeState) throws {
        let count = state.sizes.count
        let firstKey = Array(state.data[0..<(state.sizes.first?.key ?? 0)])
        let page = try emitPage(flags: BboltFormat.leafPageFlag, count: count, dataBytes: state.data.count) { page in
            var offset = BboltFormat.pageHeaderSize + BboltFormat.elementSize * count
            for i in 0..<count {
                let element = BboltFormat.pageHeaderSize + BboltFormat.elementSize * i
                page.putLE(state.flags[i], at: element)
                page.putLE(UInt32(offset - element), at: element + 4)
                page.putLE(UInt32(state.sizes[i].key), at: element + 8)
                page.putLE(UInt32(state.sizes[i].value), at: element + 12)
                offset += state.sizes[i].key + state.sizes[i].value
            }
            let dataStart = BboltFormat.pageHeaderSize + BboltFormat.elementSize * count
            page.replaceSubrange(dataStart..<(dataStart + state.data.count), with: state.data)
        }
        state.children.append((firstKey, page))
        state.flags.removeAll(keepingCapacity: true)
        state.sizes.removeAll(keepingCapacity: true)
        state.data.removeAll(keepingCapacity: true)
    }

    /// Writes the last leaf (an empty one for an empty tree) and the branch
    /// levels above; returns the root page.
    private func finishTree(_ state: inout TreeState) throws -> UInt64 {
        if !state.sizes.isEmpty || state.children.isEmpty {
            try writeLeaf(&state)
        }
        var level = state.children
        state.children = []
        while level.count > 1 {
            level = try writeBranchLevel(level)
        }
        return level[0].page
    }

    private func writeBranchLevel(_ children: [(key: [UInt8], page: UInt64)]) throws -> [(key: [UInt8], page: UInt64)] {
        var parents: [(key: [UInt8], page: UInt64)] = []
        var start = 0
        while start < children.count {
            var end = start
            var bytes = BboltFormat.pageHeaderSize
            while end < children.count {
                let element = BboltFormat.elementSize + children[end].key.count
                if end > start, bytes + element > pageSize || end - start == Int(UInt16.max) { break }
                bytes += element
                end += 1
            }
            let group = children[start..<end]
            let count = group.count
            let page = try emitPage(flags: BboltFormat.branchPageFlag, count: count, dataBytes: bytes - BboltFormat.pageHeaderSize - BboltFormat.elementSize * count) { page in
                var offset = BboltFormat.pageHeaderSize + BboltFormat.elementSize * count
                for (i, child) in group.enumerated() {
                    let element = BboltFormat.pageHeaderSize + BboltFormat.elementSize * i
                    page.putLE(UInt32(offset - element), at: element)
                    page.putLE(UInt32(child.key.count), at: element + 4)
                    page.putLE(child.page, at: element + 8)
                    page.replaceSubrange(offset..<(offset + child.key.count), with: child.key)
                    offset += child.key.count
                }
            }
            parents.append((children[start].key, page))
            start = end
        }
        return parents
    }

    /// Appends one node (a page plus its overflow pages) to the output and
    /// returns its page id.
    private func emitPage(flags: UInt16, count: Int, dataBytes: Int, fill: (inout [UInt8]) -> Void) throws -> UInt64 {
        let bytes = BboltFormat.pageHeaderSize + BboltFormat.elementSize * count + dataBytes
        let pages = (bytes + pageSize - 1) / pageSize
        guard pages - 1 <= Int(UInt32.max) else { throw BboltError.usage("node too large") }
        let id = nextPage
        var page = [UInt8](repeating: 0, count: pages * pageSize)
        page.putLE(id, at: 0)
        page.putLE(flags, at: 8)
        page.putLE(UInt16(count), at: 10)
        page.putLE(UInt32(pages - 1), at: 12)
        fill(&page)
        output.append(contentsOf: page)
        nextPage += UInt64(pages)
        if output.count >= Self.flushBytes { try flushOutput() }
        return id
    }

    private func flushOutput() throws {
        guard !output.isEmpty else { return }
        try writeAll(output, at: outputOffset)
        outputOffset += output.count
        output.removeAll(keepingCapacity: true)
    }

    private func writeAll(_ bytes: [UInt8], at offset: Int) throws {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, bytes.count - done, off_t(offset + done)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw BboltError.io(operation: "write", path: path, errno: errno)
            }
            done += n
        }
    }
}
