/// Names the auth store reserves.
public enum AuthNames {
    /// The only user allowed to enable auth, and the role that grants everything.
    public static let root = "root"
}
