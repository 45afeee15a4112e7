import Bbolt

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension Backend {
    /// The buckets in bbolt's order (byte order of their names).
    public static let bucketsInNameOrder: [Bucket] = Bucket.allCases.sorted { compareBytes($0.nameBytes, $1.nameBytes) < 0 }

    /// Writes every bucket as etcd's backend holds it (our buckets, keys and
    /// values already use etcd's names and encodings) to a new bbolt file at
    /// `destination`, which must not exist. One read transaction: the copy
    /// is the state at one point, committed data plus the open batch, and
    /// writes go on meanwhile. Memory stays bounded (see `BboltWriter`). On
    /// failure the partial file is removed. Any thread.
    @discardableResult
    public func writeBbolt(to destination: String, sync: Bool = true) throws -> BboltWriter.Summary {
        let writer = try BboltWriter(path: destination)
        do {
            try read { tx in try Backend.copyBuckets(tx.frozen(), into: writer) }
            return try writer.finish(sync: sync)
        } catch {
            unlink(destination)
            throw error
        }
    }

    /// The same copy as `writeBbolt`, without a file: the bytes go to `emit`
    /// in blocks, from the file's first byte on, as they are made. Two passes
    /// over one read transaction (the open batch copied once, so both see the
    /// same data): the first lays the file out and tells `layout` its size
    /// before any byte is emitted, the second writes it. `emit` may block
    /// (that holds the read transaction open, as a slow reader of etcd's
    /// snapshot holds bbolt's); an error it throws ends the copy. Any thread.
    @discardableResult
    public func streamBbolt(
        blockBytes: Int = BboltWriter.defaultBlockBytes,
        layout: (BboltWriter.Summary) throws -> Void,
        emit: @escaping (BboltBlock) throws -> Void
    ) throws -> BboltWriter.Summary {
        try read { tx in
            let view = tx.frozen()
            let measuring = try BboltWriter.measuring()
            try Backend.copyBuckets(view, into: measuring)
            let planned = try measuring.finish()
            try layout(planned)
            let writer = try BboltWriter(streaming: planned, blockBytes: blockBytes, emit: emit)
            try Backend.copyBuckets(view, into: writer)
            return try writer.finish()
        }
    }

    private static func copyBuckets(_ tx: ReadTx, into writer: BboltWriter) throws {
        for bucket in Backend.bucketsInNameOrder {
            try writer.beginBucket(bucket.nameBytes)
            // `scan`: the copy reads the whole file through the map; its
            // pages are given back as it goes.
            try tx.scan(bucket) { key, value in
                try writer.put(key: key, value: value)
                return true
            }
            try writer.endBucket()
        }
    }
}
