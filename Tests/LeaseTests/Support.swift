import Backend
import EtcdProto
import Foundation

@testable import Lease

/// A fresh directory under /tmp, removed when the test ends.
final class TemporaryDirectory {
    let path: String

    init() {
        var template = Array("/tmp/lease-test-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil)
        path = String(cString: made!)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    var db: String { path + "/db" }

    func openBackend() throws -> Backend {
        try Backend(path: db)
    }
}

/// A lessor over a fresh backend; keeps the directory alive with it.
struct Fixture {
    let dir: TemporaryDirectory
    let backend: Backend
    let lessor: Lessor

    init(_ config: LessorConfig = LessorConfig(minTTLSeconds: 1), dir: TemporaryDirectory = TemporaryDirectory()) throws {
        self.dir = dir
        backend = try dir.openBackend()
        lessor = try Lessor(backend: backend, config: config)
    }

    /// Commits, closes and reopens the backend with a new lessor.
    func restarted(_ config: LessorConfig = LessorConfig(minTTLSeconds: 1)) throws -> Fixture {
        try backend.forceCommit()
        try backend.close()
        return try Fixture(config, dir: dir)
    }
}

func d(_ s: String) -> Data { Data(s.utf8) }

/// Seconds on the fake clock.
func at(_ seconds: Double) -> Duration { .seconds(seconds) }

let tick = Duration.nanoseconds(1)

func putEvent(_ key: String, lease: Int64, prevLease: Int64? = nil) -> Mvccpb_Event {
    var event = Mvccpb_Event()
    event.type = .put
    event.kv.key = d(key)
    event.kv.value = d("v")
    event.kv.lease = lease
    if let prevLease {
        event.prevKv.key = d(key)
        event.prevKv.lease = prevLease
    }
    return event
}

func deleteEvent(_ key: String, prevLease: Int64? = nil) -> Mvccpb_Event {
    var event = Mvccpb_Event()
    event.type = .delete
    event.kv.key = d(key)
    if let prevLease {
        event.prevKv.key = d(key)
        event.prevKv.lease = prevLease
    }
    return event
}
