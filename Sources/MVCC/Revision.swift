/// A point in the store's history: `main` grows by one per write request
/// (a txn counts once), `sub` numbers the changes within that request.
public struct Revision: Hashable, Comparable, Sendable {
    public var main: Int64
    public var sub: Int64

    public init(main: Int64, sub: Int64 = 0) {
        self.main = main
        self.sub = sub
    }

    public static func < (lhs: Revision, rhs: Revision) -> Bool {
        (lhs.main, lhs.sub) < (rhs.main, rhs.sub)
    }
}
