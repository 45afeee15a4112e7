#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a bbolt database from buckets of sorted key/value pairs, in one of
/// three modes that lay the file out identically:
///
/// - **file** (`init(path:)`): leaf pages go to the file as they fill, the
///   branch levels of a bucket when the bucket ends, the root bucket last;
///   pages 0-2 (both meta pages and the freelist) are reserved up front and
///   written in place at `finish`.
/// - **measuring** (`measuring()`): nothing is written; `finish` reports the
///   page count and root page the same input gives.
/// - **streaming** (`init(streaming:)`): given a measuring writer's summary
///   for the same input, pages 0-2 go first and every page follows in file
///   order, handed on in blocks (`BboltBlock`), so a reader can take the
///   file from its first byte while it is written (Maintenance.Snapshot).
///
/// Memory: the leaf being filled, one output block (1 MiB), and per bucket
/// the first key and page id of each leaf (the level above the leaves, about
/// 1/100 of the data for small keys). Buckets must come in ascending name
/// order and keys within a bucket in ascending order, as bbolt stores them;
/// every bucket is written as a regular (not inline) bucket, which bbolt
/// reads the same way. The free list is empty: every page below the high
/// water mark is used.
public final class BboltWriter {
    public let pageSize: Int
    private let mode: Mode
    private var nextPage: UInt64 = 3
    /// The block being filled (nil when measuring): whole pages in file order.
    private var block: BboltBlock?
    /// File mode: where `block`'s first byte goes.
    private var blockFileOffset = 0
    private let blockBytes: Int
    /// A node that does not fit in what is left of `block` is built here.
    private var scratch: UnsafeMutableRawBufferPointer?
    private var buckets: [(name: [UInt8], root: UInt64)] = []
    /// The open bucket's tree (valid while `bucketOpen`). Changed in
    /// place: moving it out and back per pair cost a retain and a release
    /// of each of its arrays.
    private var tree = TreeState()
    private var bucketOpen = false
    private var finished = false
    private var keyCount = 0
    public static let defaultBlockBytes = 1 << 20

    private enum Mode {
        case file(path: String, fd: Int32)
        case measuring
        case streaming(layout: Summary, emit: (BboltBlock) throws -> Void)
    }

    private var measuring: Bool {
        if case .measuring = mode { return true }
        return false
    }

    /// The result of `finish()`.
    public struct Summary: Sendable, Equatable {
        /// Pages in the file (bbolt's high water mark).
        public var pageCount: UInt64
        /// File size in bytes: `pageCount * pageSize`.
        public var byteCount: Int
        /// Key/value pairs written across all buckets.
        public var keyCount: Int
        /// The root bucket's page (the meta pages point at it).
        public var rootPage: UInt64
    }

    /// Creates `path` (which must not exist) with mode 0600.
    public init(path: String, pageSize: Int = BboltFormat.defaultPageSize) throws {
        try Self.checkPageSize(pageSize)
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw BboltError.io(operation: "create", path: path, errno: errno) }
        mode = .file(path: path, fd: fd)
        self.pageSize = pageSize
        blockBytes = Self.defaultBlockBytes
        block = BboltBlock(capacity: blockBytes)
        blockFileOffset = 3 * pageSize
    }

    /// A writer that only lays the file out: give it the input a streaming
    /// writer will get, and its `finish` returns that writer's layout.
    public static func measuring(pageSize: Int = BboltFormat.defaultPageSize) throws -> BboltWriter {
        try BboltWriter(pageSize: pageSize, mode: .measuring, blockBytes: 0)
    }

    /// A writer that hands the file to `emit` from page 0 on, in blocks of
    /// `blockBytes` (a multiple of the page size, at least three pages; the
    /// last block may be shorter). `layout` is what a measuring writer
    /// reported for the same input; `finish` fails if this input lays out
    /// differently (the bytes already handed on are then wrong).
    public convenience init(
        streaming layout: Summary, pageSize: Int = BboltFormat.defaultPageSize,
        blockBytes: Int = BboltWriter.defaultBlockBytes, emit: @escaping (BboltBlock) throws -> Void
    ) throws {
        guard blockBytes >= 3 * pageSize, blockBytes % pageSize == 0 else {
            throw BboltError.usage("block size \(blockBytes) is not a multiple of the page size of at least three pages")
        }
        try self.init(pageSize: pageSize, mode: .streaming(layout: layout, emit: emit), blockBytes: blockBytes)
        let block = BboltBlock(capacity: blockBytes)
        writeHead(into: UnsafeMutableRawBufferPointer(rebasing: block.storage[0..<(3 * pageSize)]),
                  rootPage: layout.rootPage, pageCount: layout.pageCount)
        block.count = 3 * pageSize
        self.block = block
    }

    private init(pageSize: Int, mode: Mode, blockBytes: Int) throws {
        try Self.checkPageSize(pageSize)
        self.pageSize = pageSize
        self.mode = mode
        self.blockBytes = blockBytes
    }

    private static func checkPageSize(_ pageSize: Int) throws {
        guard pageSize >= 1024, pageSize <= 65536, pageSize & (pageSize - 1) == 0 else {
            throw BboltError.usage("page size \(pageSize) is not a power of two in 1024...65536")
        }
    }

    deinit {
        if case .file(_, let fd) = mode { close(fd) }
        scratch?.deallocate()
    }

    /// Starts the next bucket; `name` must sort after the previous bucket's.
    public func beginBucket(_ name: [UInt8]) throws {
        guard !finished, !bucketOpen else { throw BboltError.usage("beginBucket while a bucket is open or after finish") }
        guard !name.isEmpty else { throw BboltError.usage("empty bucket name") }
        if let last = buckets.last?.name {
            let order = last.withUnsafeBytes { a in name.withUnsafeBytes { b in compareKeys(a, b) } }
            guard order < 0 else { throw BboltError.usage("bucket names not ascending") }
        }
        buckets.append((name, 0))
        tree = TreeState()
        bucketOpen = true
    }

    /// Adds a pair to the open bucket; `key` must sort after the previous key.
    public func put(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) throws {
        guard bucketOpen else { throw BboltError.usage("put without an open bucket") }
        guard key.count > 0 else { throw BboltError.usage("empty key") }
        if tree.hasLastKey {
            guard tree.lastKey.withUnsafeBytes({ compareKeys($0, key) }) < 0 else {
                throw BboltError.usage("keys not ascending")
            }
        }
        tree.lastKey.removeAll(keepingCapacity: true)
        tree.lastKey.append(contentsOf: key)
        tree.hasLastKey = true
        try add(&tree, flags: 0, key: key, value: value)
        keyCount += 1
    }

    public func put(key: [UInt8], value: [UInt8]) throws {
        try key.withUnsafeBytes { k in
            try value.withUnsafeBytes { v in try put(key: k, value: v) }
        }
    }

    /// Closes the open bucket: writes its last leaf and its branch levels.
    public func endBucket() throws {
        guard bucketOpen else { throw BboltError.usage("endBucket without an open bucket") }
        bucketOpen = false
        buckets[buckets.count - 1].root = try finishTree(&tree)
        tree = TreeState()
    }

    /// Writes the root bucket and, in file mode, the (empty) freelist and
    /// both meta pages, then fsyncs the file (unless `sync` is false).
    @discardableResult
    public func finish(sync: Bool = true) throws -> Summary {
        guard !finished, !bucketOpen else { throw BboltError.usage("finish while a bucket is open or twice") }
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
        finished = true
        let summary = Summary(pageCount: nextPage, byteCount: Int(nextPage) * pageSize, keyCount: keyCount, rootPage: rootPage)
        switch mode {
        case .measuring:
            break
        case .file(let path, let fd):
            try flushBlock()
            let head = BboltBlock(capacity: 3 * pageSize)
            head.count = 3 * pageSize
            writeHead(into: head.storage, rootPage: rootPage, pageCount: nextPage)
            try Self.writeAll(fd: fd, path: path, head.bytes, at: 0)
            if sync, fsync(fd) != 0 { throw BboltError.io(operation: "fsync", path: path, errno: errno) }
        case .streaming(let layout, _):
            guard summary == layout else {
                throw BboltError.usage("the input changed between the layout pass and the write (\(layout.pageCount) pages planned, \(summary.pageCount) written)")
            }
            try flushBlock()
        }
        return summary
    }

    /// Pages 0-2: both meta pages (the current one on page 0) and an empty
    /// freelist page.
    private func writeHead(into head: UnsafeMutableRawBufferPointer, rootPage: UInt64, pageCount: UInt64) {
        precondition(head.count == 3 * pageSize)
        head.initializeMemory(as: UInt8.self, repeating: 0)
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
            head.putLE(pageCount, at: m + 40)
            // The current meta lives on page txid % 2: page 0 holds txid 2.
            head.putLE(UInt64(id == 0 ? 2 : 1), at: m + 48)
            let sum = BboltFormat.fnv64a(UnsafeRawBufferPointer(rebasing: head[m..<(m + BboltFormat.metaChecksummedBytes)]))
            head.putLE(sum, at: m + BboltFormat.metaChecksummedBytes)
        }
        let freelist = 2 * pageSize
        head.putLE(UInt64(2), at: freelist)
        head.putLE(BboltFormat.freelistPageFlag, at: freelist + 8)
    }

    // MARK: trees

    /// One B+tree being built bottom-up: the leaf filling now, and the
    /// first key and page of every leaf written so far.
    private struct TreeState {
        var flags: [UInt32] = []
        var keySizes: [Int] = []
        var valueSizes: [Int] = []
        /// The leaf's keys and values, each key followed by its value
        /// (empty when measuring: only the sizes count).
        var data: [UInt8] = []
        var dataBytes = 0
        var leaves = Level()
        var lastKey: [UInt8] = []
        var hasLastKey = false

        var pageBytes: Int { BboltFormat.pageHeaderSize + BboltFormat.elementSize * flags.count + dataBytes }
    }

    /// The nodes of one tree level: each one's first key and page.
    private struct Level {
        /// The first keys, one after another (empty when measuring).
        var keys: [UInt8] = []
        /// Where each key ends in `keys` (kept when measuring too).
        var keyEnds: [Int] = []
        var pages: [UInt64] = []

        var count: Int { pages.count }
        func keyStart(_ i: Int) -> Int { i == 0 ? 0 : keyEnds[i - 1] }
        func keySize(_ i: Int) -> Int { keyEnds[i] - keyStart(i) }

        mutating func append(key: UnsafeRawBufferPointer, size: Int, page: UInt64, measuring: Bool) {
            if !measuring { keys.append(contentsOf: key) }
            keyEnds.append((keyEnds.last ?? 0) + size)
            pages.append(page)
        }
    }

    private func add(_ state: inout TreeState, flags: UInt32, key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) throws {
        let bytes = BboltFormat.elementSize + key.count + value.count
        guard key.count <= Int(UInt32.max), value.count <= Int(UInt32.max) else { throw BboltError.usage("key or value over 4 GiB") }
        if !state.flags.isEmpty, state.pageBytes + bytes > pageSize || state.flags.count == Int(UInt16.max) {
            try writeLeaf(&state)
        }
        state.flags.append(flags)
        state.keySizes.append(key.count)
        state.valueSizes.append(value.count)
        state.dataBytes += key.count + value.count
        if !measuring {
            state.data.append(contentsOf: key)
            state.data.append(contentsOf: value)
        }
    }

    private func writeLeaf(_ state: inout TreeState) throws {
        let count = state.flags.count
        let page = try emitNode(flags: BboltFormat.leafPageFlag, count: count, dataBytes: state.dataBytes) { node in
            let dataStart = BboltFormat.pageHeaderSize + BboltFormat.elementSize * count
            var offset = dataStart
            for i in 0..<count {
                let element = BboltFormat.pageHeaderSize + BboltFormat.elementSize * i
                node.putLE(state.flags[i], at: element)
                node.putLE(UInt32(offset - element), at: element + 4)
                node.putLE(UInt32(state.keySizes[i]), at: element + 8)
                node.putLE(UInt32(state.valueSizes[i]), at: element + 12)
                offset += state.keySizes[i] + state.valueSizes[i]
            }
            state.data.withUnsafeBytes { data in
                UnsafeMutableRawBufferPointer(rebasing: node[dataStart..<(dataStart + data.count)]).copyMemory(from: data)
            }
        }
        let firstKeySize = state.keySizes.first ?? 0
        state.data.withUnsafeBytes { data in
            state.leaves.append(key: UnsafeRawBufferPointer(rebasing: data.prefix(measuring ? 0 : firstKeySize)),
                                size: firstKeySize, page: page, measuring: measuring)
        }
        state.flags.removeAll(keepingCapacity: true)
        state.keySizes.removeAll(keepingCapacity: true)
        state.valueSizes.removeAll(keepingCapacity: true)
        state.data.removeAll(keepingCapacity: true)
        state.dataBytes = 0
    }

    /// Writes the last leaf (an empty one for an empty tree) and the branch
    /// levels above; returns the root page.
    private func finishTree(_ state: inout TreeState) throws -> UInt64 {
        if !state.flags.isEmpty || state.leaves.count == 0 {
            try writeLeaf(&state)
        }
        var level = state.leaves
        state.leaves = Level()
        while level.count > 1 {
            level = try writeBranchLevel(level)
        }
        return level.pages[0]
    }

    private func writeBranchLevel(_ children: Level) throws -> Level {
        var parents = Level()
        var start = 0
        while start < children.count {
            var end = start
            var bytes = BboltFormat.pageHeaderSize
            while end < children.count {
                let element = BboltFormat.elementSize + children.keySize(end)
                if end > start, bytes + element > pageSize || end - start == Int(UInt16.max) { break }
                bytes += element
                end += 1
            }
            let count = end - start
            let first = start
            let page = try emitNode(flags: BboltFormat.branchPageFlag, count: count,
                                    dataBytes: bytes - BboltFormat.pageHeaderSize - BboltFormat.elementSize * count) { node in
                let keysStart = children.keyStart(first)
                let keysEnd = children.keyEnds[first + count - 1]
                let dataStart = BboltFormat.pageHeaderSize + BboltFormat.elementSize * count
                var offset = dataStart
                for i in 0..<count {
                    let element = BboltFormat.pageHeaderSize + BboltFormat.elementSize * i
                    let size = children.keySize(first + i)
                    node.putLE(UInt32(offset - element), at: element)
                    node.putLE(UInt32(size), at: element + 4)
                    node.putLE(children.pages[first + i], at: element + 8)
                    offset += size
                }
                children.keys.withUnsafeBytes { keys in
                    UnsafeMutableRawBufferPointer(rebasing: node[dataStart..<(dataStart + keysEnd - keysStart)])
                        .copyMemory(from: UnsafeRawBufferPointer(rebasing: keys[keysStart..<keysEnd]))
                }
            }
            children.keys.withUnsafeBytes { keys in
                let key = measuring ? UnsafeRawBufferPointer(start: nil, count: 0)
                    : UnsafeRawBufferPointer(rebasing: keys[children.keyStart(start)..<children.keyEnds[start]])
                parents.append(key: key, size: children.keySize(start), page: page, measuring: measuring)
            }
            start = end
        }
        return parents
    }

    // MARK: output

    /// Appends one node (a page plus its overflow pages) and returns its
    /// page id. `fill` writes the elements and data after the header; the
    /// rest of the node is zeroed. When measuring, only the id is assigned.
    private func emitNode(flags: UInt16, count: Int, dataBytes: Int, fill: (UnsafeMutableRawBufferPointer) -> Void) throws -> UInt64 {
        let bytes = BboltFormat.pageHeaderSize + BboltFormat.elementSize * count + dataBytes
        let pages = (bytes + pageSize - 1) / pageSize
        guard pages - 1 <= Int(UInt32.max) else { throw BboltError.usage("node too large") }
        let id = nextPage
        nextPage += UInt64(pages)
        guard let block else { return id }
        let nodeBytes = pages * pageSize
        func build(_ node: UnsafeMutableRawBufferPointer) {
            node.putLE(id, at: 0)
            node.putLE(flags, at: 8)
            node.putLE(UInt16(count), at: 10)
            node.putLE(UInt32(pages - 1), at: 12)
            fill(node)
            UnsafeMutableRawBufferPointer(rebasing: node[bytes..<nodeBytes]).initializeMemory(as: UInt8.self, repeating: 0)
        }
        if block.capacity - block.count >= nodeBytes {
            build(UnsafeMutableRawBufferPointer(rebasing: block.storage[block.count..<(block.count + nodeBytes)]))
            block.count += nodeBytes
            if block.count == block.capacity { try flushBlock() }
            return id
        }
        // A node larger than what is left of the block: build it aside and
        // copy it across blocks.
        if (scratch?.count ?? 0) < nodeBytes {
            scratch?.deallocate()
            scratch = .allocate(byteCount: nodeBytes, alignment: 16)
        }
        let node = UnsafeMutableRawBufferPointer(rebasing: scratch![0..<nodeBytes])
        build(node)
        var done = 0
        while done < nodeBytes {
            let target = self.block!
            let n = min(target.capacity - target.count, nodeBytes - done)
            UnsafeMutableRawBufferPointer(rebasing: target.storage[target.count..<(target.count + n)])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: node[done..<(done + n)]))
            target.count += n
            done += n
            if target.count == target.capacity { try flushBlock() }
        }
        return id
    }

    /// Hands on the block's bytes: written to the file (the block is then
    /// reused) or emitted (a new block takes its place).
    private func flushBlock() throws {
        guard let block, block.count > 0 else { return }
        switch mode {
        case .measuring:
            break
        case .file(let path, let fd):
            try Self.writeAll(fd: fd, path: path, block.bytes, at: blockFileOffset)
            blockFileOffset += block.count
            block.count = 0
        case .streaming(_, let emit):
            self.block = BboltBlock(capacity: blockBytes)
            try emit(block)
        }
    }

    private static func writeAll(fd: Int32, path: String, _ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw BboltError.io(operation: "write", path: path, errno: errno)
            }
            done += n
        }
    }
}

/// Bytes of a bbolt file as a streaming `BboltWriter` hands them on: `count`
/// bytes (whole pages, except that a node spanning two blocks is split
/// between them), in file order. Owns its memory; not changed once handed on.
public final class BboltBlock: @unchecked Sendable {
    /// All `capacity` bytes; the first `count` are the block's.
    public let storage: UnsafeMutableRawBufferPointer
    public internal(set) var count = 0
    public var capacity: Int { storage.count }

    /// The block's bytes.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: storage[0..<count]) }

    init(capacity: Int) {
        storage = .allocate(byteCount: capacity, alignment: 16)
    }

    deinit { storage.deallocate() }
}
