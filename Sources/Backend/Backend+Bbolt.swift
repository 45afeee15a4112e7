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
            try read { tx in
                for bucket in Backend.bucketsInNameOrder {
                    try writer.beginBucket(bucket.nameBytes)
                    try tx.forEach(bucket) { key, value in
                        try writer.put(key: key, value: value)
                        return true
                    }
                    try writer.endBucket()
                }
            }
            return try writer.finish(sync: sync)
        } catch {
            unlink(destination)
            throw error
        }
    }
}
