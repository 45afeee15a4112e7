import Checksum

/// What `etcdctl snapshot status` / `etcdutl snapshot status` report about
/// an etcd snapshot file, computed as etcd computes it.
public struct EtcdSnapshotStatus: Sendable, Equatable {
    /// CRC-32C over every bucket in name order: its name, then each key and
    /// value in key order.
    public var hash: UInt32
    /// Main revision of the last key in the `key` bucket.
    public var revision: Int64
    /// Key/value pairs across all buckets.
    public var totalKey: Int
    /// Bytes of the database (pages in use times page size).
    public var totalSize: Int
    /// The `meta` bucket's `storageVersion`, empty when absent (etcd before 3.6).
    public var storageVersion: String
}

extension BboltReader {
    /// Walks every bucket (validating every page on the way) and computes
    /// the status etcd prints for a snapshot.
    public func etcdStatus() throws -> EtcdSnapshotStatus {
        var crc = CRC32C()
        var status = EtcdSnapshotStatus(hash: 0, revision: 0, totalKey: 0, totalSize: databaseBytes, storageVersion: "")
        for bucket in try buckets() {
            crc.update(bucket.name)
            let isKey = bucket.name == Array("key".utf8)
            let isMeta = bucket.name == Array("meta".utf8)
            try forEach(in: bucket) { key, value in
                crc.update(key)
                crc.update(value)
                status.totalKey += 1
                if isKey, key.count >= 8 {
                    status.revision = Int64(bitPattern: key.prefix(8).reduce(0) { $0 << 8 | UInt64($1) })
                }
                if isMeta, key.elementsEqual("storageVersion".utf8) {
                    status.storageVersion = String(decoding: value, as: UTF8.self)
                }
            }
        }
        status.hash = crc.value
        return status
    }
}
