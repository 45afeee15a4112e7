import Backend
import EtcdProto
import Foundation

@testable import Auth

/// A fresh directory under /tmp, removed when the test ends.
final class TemporaryDirectory {
    let path: String

    init() {
        var template = Array("/tmp/auth-test-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil)
        path = String(cString: made!)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// An auth store over a fresh backend; keeps the directory alive with it.
struct Fixture {
    let dir: TemporaryDirectory
    let backend: Backend
    let store: AuthStore

    init(limits: AuthLimits = AuthLimits(), dir: TemporaryDirectory = TemporaryDirectory()) throws {
        self.dir = dir
        backend = try Backend(path: dir.path + "/db")
        store = AuthStore(limits: limits)
        try store.load(from: backend)
    }

    /// Commits, closes and reopens the backend with a new store.
    func restarted() throws -> Fixture {
        try backend.forceCommit()
        try backend.close()
        return try Fixture(dir: dir)
    }

    /// root with the root role, and auth enabled.
    func enableWithRoot() throws {
        try store.addUser("root", hashedPassword: Data("h".utf8), noPassword: false, in: backend)
        try store.grantRole("root", to: "root", in: backend)
        try store.enable(in: backend)
    }

    func info(_ user: String) -> AuthInfo { AuthInfo(username: user, revision: store.revision) }
}

func b(_ s: String) -> [UInt8] { Array(s.utf8) }

func permission(_ type: Authpb_Permission.TypeEnum, _ key: String, _ rangeEnd: String = "") -> Authpb_Permission {
    var p = Authpb_Permission()
    p.permType = type
    p.key = Data(key.utf8)
    p.rangeEnd = Data(rangeEnd.utf8)
    return p
}
