#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads a bbolt database file page by page (pread, no mmap), validating
/// what it reads: meta magic, version and checksum, page ids, types and
/// bounds, element bounds, key order, and that no page is visited twice in
/// one walk (so a page loop is an error, never a hang). Any problem is a
/// `BboltError.invalid` naming the file and the problem. Trailing bytes
/// after the last page (etcd's SHA-256 trailer) are ignored.
public final class BboltReader {
    public let path: String
    public let pageSize: Int
    public let fileSize: Int
    /// The meta page in use.
    public let meta: Meta
    private let fd: Int32
    /// Nesting limit for branch pages; a real tree of 4 KiB pages is far
    /// shallower.
    private static let maxDepth = 64

    public struct Meta: Sendable, Equatable {
        public var pageSize: Int
        public var rootPage: UInt64
        public var freelistPage: UInt64
        /// High water mark: pages in use are below it.
        public var pageCount: UInt64
        public var txid: UInt64
    }

    /// A top-level bucket and where its tree is.
    public struct BucketRef: Sendable, Equatable {
        public var name: [UInt8]
        /// Root page, or 0 for an inline bucket.
        public var rootPage: UInt64
        /// The inline leaf page of an inline bucket.
        public var inlinePage: [UInt8]
        public var nameString: String { String(decoding: name, as: UTF8.self) }
    }

    public init(path: String) throws(BboltError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(operation: "open", path: path, errno: errno) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let code = errno
            close(fd)
            throw .io(operation: "stat", path: path, errno: code)
        }
        self.fd = fd
        self.path = path
        self.fileSize = Int(info.st_size)
        do {
            meta = try Self.readMeta(fd: fd, path: path, fileSize: Int(info.st_size))
        } catch {
            close(fd)
            throw error
        }
        pageSize = meta.pageSize
    }

    deinit { close(fd) }

    /// Bytes of the database proper: high water mark times page size.
    public var databaseBytes: Int { Int(meta.pageCount) * pageSize }

    // MARK: meta

    private static func readMeta(fd: Int32, path: String, fileSize: Int) throws(BboltError) -> Meta {
        func invalid(_ reason: String) -> BboltError { .invalid(path: path, reason: reason) }
        let headerAndMeta = BboltFormat.pageHeaderSize + BboltFormat.metaBytes
        guard fileSize >= headerAndMeta else { throw invalid("file is \(fileSize) bytes, too small for a meta page") }
        var problems: [String] = []
        func parse(at offset: Int, id: Int) throws(BboltError) -> Meta? {
            guard offset + headerAndMeta <= fileSize else {
                problems.append("meta page \(id) is beyond the end of the file")
                return nil
            }
            let bytes = try preadAll(fd: fd, path: path, count: headerAndMeta, at: offset)
            return bytes.withUnsafeBytes { raw -> Meta? in
                let m = raw[BboltFormat.pageHeaderSize...]
                let base = BboltFormat.pageHeaderSize
                guard raw.le16(8) & BboltFormat.metaPageFlag != 0 else {
                    problems.append("page \(id) is not a meta page (flags 0x\(String(raw.le16(8), radix: 16)))")
                    return nil
                }
                guard raw.le32(base) == BboltFormat.magic else {
                    problems.append("meta page \(id) has a bad magic number")
                    return nil
                }
                guard raw.le32(base + 4) == BboltFormat.version else {
                    problems.append("meta page \(id) has version \(raw.le32(base + 4)), want \(BboltFormat.version)")
                    return nil
                }
                let stored = raw.le64(base + BboltFormat.metaChecksummedBytes)
                let sum = BboltFormat.fnv64a(UnsafeRawBufferPointer(rebasing: m.prefix(BboltFormat.metaChecksummedBytes)))
                guard stored == 0 || stored == sum else {
                    problems.append("meta page \(id) checksum mismatch")
                    return nil
                }
                let size = Int(raw.le32(base + 8))
                guard size >= 512, size <= 65536, size & (size - 1) == 0 else {
                    problems.append("meta page \(id) has page size \(size)")
                    return nil
                }
                return Meta(pageSize: size, rootPage: raw.le64(base + 16), freelistPage: raw.le64(base + 32),
                            pageCount: raw.le64(base + 40), txid: raw.le64(base + 48))
            }
        }
        let first = try parse(at: 0, id: 0)
        let second = try parse(at: first?.pageSize ?? BboltFormat.defaultPageSize, id: 1)
        let candidates = [first, second].compactMap { $0 }.filter { first == nil || $0.pageSize == first!.pageSize }
        guard var chosen = candidates.first else {
            throw invalid("no valid meta page (\(problems.joined(separator: "; ")))")
        }
        for candidate in candidates where candidate.txid > chosen.txid { chosen = candidate }
        let pages = UInt64(fileSize / chosen.pageSize)
        guard chosen.pageCount >= 3 else { throw invalid("high water mark \(chosen.pageCount) is below 3 pages") }
        guard chosen.pageCount <= pages else {
            throw invalid("truncated: the meta page says \(chosen.pageCount) pages (\(chosen.pageCount * UInt64(chosen.pageSize)) bytes) but the file has \(fileSize) bytes")
        }
        guard chosen.rootPage >= 2, chosen.rootPage < chosen.pageCount else {
            throw invalid("root bucket page \(chosen.rootPage) is outside pages 2..<\(chosen.pageCount)")
        }
        guard chosen.freelistPage == BboltFormat.noFreelist || (chosen.freelistPage >= 2 && chosen.freelistPage < chosen.pageCount) else {
            throw invalid("freelist page \(chosen.freelistPage) is outside pages 2..<\(chosen.pageCount)")
        }
        return chosen
    }

    // MARK: buckets

    /// The top-level buckets in name order.
    public func buckets() throws -> [BucketRef] {
        var result: [BucketRef] = []
        var visited = Set<UInt64>()
        var last: [UInt8]? = nil
        try walk(page: meta.rootPage, depth: 0, visited: &visited) { flags, key, value in
            guard flags & BboltFormat.bucketLeafFlag != 0 else {
                throw invalid("top-level key \"\(printable(key))\" is not a bucket")
            }
            try checkOrder(&last, key, in: "the root bucket")
            result.append(try bucketRef(name: Array(key), value: value))
        }
        return result
    }

    /// The bucket named `name`, if present.
    public func bucket(named name: String) throws -> BucketRef? {
        let bytes = Array(name.utf8)
        return try buckets().first { $0.name == bytes }
    }

    /// Calls `body` with every key and value of `bucket` in key order. The
    /// buffers are valid only during the call.
    public func forEach(in bucket: BucketRef, _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Void) throws {
        var last: [UInt8]? = nil
        let label = "bucket \"\(bucket.nameString)\""
        try withoutActuallyEscaping(body) { body in
        let visit: (UInt32, UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Void = { flags, key, value in
            guard flags & BboltFormat.bucketLeafFlag == 0 else {
                throw self.invalid("\(label) holds a nested bucket \"\(printable(key))\" (etcd uses none)")
            }
            try self.checkOrder(&last, key, in: label)
            try body(key, value)
        }
        if bucket.rootPage == 0 {
            try bucket.inlinePage.withUnsafeBytes { page in
                try checkedElements(page: page, pageID: nil, label: "inline \(label)", visit: visit)
            }
        } else {
            var visited = Set<UInt64>()
            try walk(page: bucket.rootPage, depth: 0, visited: &visited, visit: visit)
        }
        }
    }

    private func bucketRef(name: [UInt8], value: UnsafeRawBufferPointer) throws(BboltError) -> BucketRef {
        guard value.count >= BboltFormat.bucketHeaderSize else {
            throw invalid("bucket \"\(printable(name))\" has a \(value.count)-byte header")
        }
        let root = value.le64(0)
        if root == 0 {
            guard value.count >= BboltFormat.bucketHeaderSize + BboltFormat.pageHeaderSize else {
                throw invalid("inline bucket \"\(printable(name))\" is too short for its page")
            }
            return BucketRef(name: name, rootPage: 0, inlinePage: Array(value[BboltFormat.bucketHeaderSize...]))
        }
        guard root >= 2, root < meta.pageCount else {
            throw invalid("bucket \"\(printable(name))\" root page \(root) is outside pages 2..<\(meta.pageCount)")
        }
        return BucketRef(name: name, rootPage: root, inlinePage: [])
    }

    // MARK: pages

    private func walk(page id: UInt64, depth: Int, visited: inout Set<UInt64>,
                      visit: (UInt32, UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Void) throws {
        guard depth < Self.maxDepth else { throw invalid("tree deeper than \(Self.maxDepth) levels at page \(id)") }
        guard id >= 2, id < meta.pageCount, id != meta.freelistPage else {
            throw invalid("reference to page \(id), outside the data pages 2..<\(meta.pageCount)")
        }
        guard visited.insert(id).inserted else { throw invalid("page \(id) is referenced twice (a page loop)") }
        let page = try readNode(id)
        let flags = page.withUnsafeBytes { $0.le16(8) }
        if flags == BboltFormat.branchPageFlag {
            var children: [UInt64] = []
            try page.withUnsafeBytes { raw in
                let count = Int(raw.le16(10))
                guard count > 0 else { throw invalid("branch page \(id) is empty") }
                try checkElementArray(raw, count: count, id: id)
                for i in 0..<count {
                    let element = BboltFormat.pageHeaderSize + BboltFormat.elementSize * i
                    let pos = Int(raw.le32(element)), ksize = Int(raw.le32(element + 4))
                    _ = try slice(raw, element + pos, ksize, "branch page \(id) element \(i) key")
                    children.append(raw.le64(element + 8))
                }
            }
            for child in children {
                try walk(page: child, depth: depth + 1, visited: &visited, visit: visit)
            }
        } else if flags == BboltFormat.leafPageFlag {
            try page.withUnsafeBytes { raw in
                try checkedElements(page: raw, pageID: id, label: "leaf page \(id)", visit: visit)
            }
        } else {
            throw invalid("page \(id) has type 0x\(String(flags, radix: 16)), want a branch or leaf page")
        }
    }

    /// Validates and visits the elements of a leaf page (stored or inline).
    private func checkedElements(page raw: UnsafeRawBufferPointer, pageID: UInt64?, label: @autoclosure () -> String,
                                 visit: (UInt32, UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Void) throws {
        guard raw.count >= BboltFormat.pageHeaderSize else { throw invalid("\(label()) is shorter than a page header") }
        if pageID == nil {
            guard raw.le16(8) == BboltFormat.leafPageFlag else { throw invalid("\(label()) is not a leaf page") }
        }
        let count = Int(raw.le16(10))
        try checkElementArray(raw, count: count, id: pageID, label: label())
        for i in 0..<count {
            let element = BboltFormat.pageHeaderSize + BboltFormat.elementSize * i
            let flags = raw.le32(element)
            let pos = Int(raw.le32(element + 4))
            let ksize = Int(raw.le32(element + 8)), vsize = Int(raw.le32(element + 12))
            let key = try slice(raw, element + pos, ksize, "\(label()) element \(i) key")
            let value = try slice(raw, element + pos + ksize, vsize, "\(label()) element \(i) value")
            try visit(flags, key, value)
        }
    }

    private func checkElementArray(_ raw: UnsafeRawBufferPointer, count: Int, id: UInt64?,
                                   label: @autoclosure () -> String? = nil) throws(BboltError) {
        guard BboltFormat.pageHeaderSize + BboltFormat.elementSize * count <= raw.count else {
            throw invalid("\(label() ?? "page \(id ?? 0)") claims \(count) elements, more than fit")
        }
    }

    /// `what` names the bytes in the error (built only then: this runs for
    /// every key and value).
    private func slice(_ raw: UnsafeRawBufferPointer, _ start: Int, _ count: Int,
                       _ what: @autoclosure () -> String) throws(BboltError) -> UnsafeRawBufferPointer {
        guard start >= 0, count >= 0, start <= raw.count, count <= raw.count - start else {
            throw invalid("\(what()) (\(count) bytes at offset \(start)) runs past its page")
        }
        return UnsafeRawBufferPointer(rebasing: raw[start..<(start + count)])
    }

    /// Reads page `id` and its overflow pages, checking the header.
    private func readNode(_ id: UInt64) throws(BboltError) -> [UInt8] {
        let offset = Int(id) * pageSize
        var page = try preadAll(fd: fd, path: path, count: pageSize, at: offset)
        let (storedID, overflow) = page.withUnsafeBytes { ($0.le64(0), UInt64($0.le32(12))) }
        guard storedID == id else { throw invalid("page \(id) has id \(storedID) in its header") }
        if overflow > 0 {
            guard overflow < meta.pageCount - id else {
                throw invalid("page \(id) overflows \(overflow) pages past the high water mark \(meta.pageCount)")
            }
            page = try preadAll(fd: fd, path: path, count: Int(overflow + 1) * pageSize, at: offset)
        }
        return page
    }

    private func checkOrder(_ last: inout [UInt8]?, _ key: UnsafeRawBufferPointer, in label: String) throws(BboltError) {
        if let previous = last {
            guard previous.withUnsafeBytes({ compareKeys($0, key) }) < 0 else {
                throw invalid("keys out of order in \(label) at \"\(printable(key))\"")
            }
        }
        if last == nil { last = [] }
        last!.removeAll(keepingCapacity: true)
        last!.append(contentsOf: key)
    }

    private func invalid(_ reason: String) -> BboltError { .invalid(path: path, reason: reason) }
}

/// A short printable form of a key for error messages.
func printable(_ bytes: some Collection<UInt8>) -> String {
    let shown = bytes.prefix(64).map { (0x20..<0x7F).contains($0) ? String(UnicodeScalar($0)) : "\\x" + String($0, radix: 16) }.joined()
    return bytes.count > 64 ? shown + "..." : shown
}

func preadAll(fd: Int32, path: String, count: Int, at offset: Int) throws(BboltError) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    var done = 0
    while done < count {
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset + done)) }
        if n < 0 {
            if errno == EINTR { continue }
            throw .io(operation: "read", path: path, errno: errno)
        }
        if n == 0 { throw .invalid(path: path, reason: "truncated: read past the end of the file at offset \(offset + done)") }
        done += n
    }
    return bytes
}
