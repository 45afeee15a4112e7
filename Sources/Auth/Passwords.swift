import Foundation
import HummingbirdBcrypt

/// bcrypt, as etcd uses it (golang.org/x/crypto/bcrypt): hashes are made
/// before a request is proposed and compared before Authenticate is
/// proposed, never on the raft loop. Slow on purpose; call from a task or
/// thread that may block.
public enum Passwords {
    /// etcd's default `--bcrypt-cost`; a cost outside bcrypt's 4...31 falls
    /// back to it, as etcd does (with a warning, from the caller).
    public static let defaultCost = 10
    public static let costs = 4...31

    public static func effectiveCost(_ cost: Int) -> Int { costs.contains(cost) ? cost : defaultCost }

    public static func hash(_ password: String, cost: Int) -> Data {
        Data(Bcrypt.hash(password, cost: UInt8(effectiveCost(cost))).utf8)
    }

    /// Whether `password` matches a stored hash (`$2a$`/`$2b$`, so hashes
    /// made by etcd's Go bcrypt compare too).
    public static func matches(_ password: String, hash: Data) -> Bool {
        guard !hash.isEmpty, let text = String(data: hash, encoding: .utf8) else { return false }
        return Bcrypt.verify(password, hash: text)
    }
}
