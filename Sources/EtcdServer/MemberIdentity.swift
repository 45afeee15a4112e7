import Crypto
import Foundation

/// Member and cluster ids derived as etcd derives them, so the same flags
/// give the same ids (and tools that remember ids keep working).
public enum MemberIdentity {
    /// The first 8 bytes (big-endian) of SHA-1 over the member's sorted peer
    /// URLs joined with nothing, then the cluster token, then — for a member
    /// added at runtime — the time it was added in Unix seconds.
    public static func memberID(peerURLs: [String], clusterToken: String, addedAtUnixSeconds: Int64? = nil) -> UInt64 {
        var input = peerURLs.sorted().joined() + clusterToken
        if let addedAtUnixSeconds { input += String(addedAtUnixSeconds) }
        return firstWord(Insecure.SHA1.hash(data: Data(input.utf8)))
    }

    /// The first 8 bytes (big-endian) of SHA-1 over the sorted member ids,
    /// each as 8 big-endian bytes.
    public static func clusterID(memberIDs: [UInt64]) -> UInt64 {
        var bytes = Data(capacity: 8 * memberIDs.count)
        for id in memberIDs.sorted() { withUnsafeBytes(of: id.bigEndian) { bytes.append(contentsOf: $0) } }
        return firstWord(Insecure.SHA1.hash(data: bytes))
    }

    private static func firstWord(_ digest: Insecure.SHA1.Digest) -> UInt64 {
        digest.withUnsafeBytes { raw in raw.prefix(8).reduce(0) { $0 << 8 | UInt64($1) } }
    }
}
