import Foundation
import Locks

/// A TCP proxy in front of one member's peer port, for network faults
/// between processes on loopback. Every other member dials the member
/// through it (the member advertises the proxy's port). It reads the
/// dialer's hello frame to learn who is calling (our peer protocol: a
/// 4-byte length, a kind byte, then magic, version, cluster id, from id,
/// to id), so a test can cut the link from chosen members — existing
/// connections are closed and new ones refused — or delay everything
/// through it, both directions.
final class PeerProxy: @unchecked Sendable {
    let listenPort: Int
    let targetPort: Int
    private let listener: Int32

    private struct State {
        var blocked: Set<UInt64> = []
        /// One-way delay added to every chunk, in seconds.
        var delay: TimeInterval = 0
        var connections: [Int: (from: UInt64, fds: [Int32])] = [:]
        var nextConnection = 0
        var stopped = false
    }
    private let state = Mutex(State())

    /// The hello frame up to and including the from id.
    static let helloPrefix = 5 + 4 + 1 + 8 + 8

    init(listenPort: Int, targetPort: Int) throws {
        self.listenPort = listenPort
        self.targetPort = targetPort
        listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = Self.loopback(port: listenPort)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(listener, 64) == 0 else {
            close(listener)
            throw EtcdProcess.ProcessError.notReady
        }
        let thread = Thread { [self] in acceptLoop() }
        thread.start()
    }

    /// Refuse (and cut) traffic from these member ids; empty: heal.
    func block(from members: Set<UInt64>) {
        let victims = state.withLock { state -> [Int32] in
            state.blocked = members
            return state.connections.values.filter { members.contains($0.from) }.flatMap(\.fds)
        }
        for fd in victims { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    func setDelay(_ seconds: TimeInterval) {
        state.withLock { $0.delay = seconds }
    }

    func stop() {
        let fds = state.withLock { state -> [Int32] in
            state.stopped = true
            return state.connections.values.flatMap(\.fds)
        }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        for fd in fds { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    // MARK: - Plumbing (threads with blocking sockets)

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if state.withLock({ $0.stopped }) { return }
                continue
            }
            let thread = Thread { [self] in serve(client) }
            thread.start()
        }
    }

    private func serve(_ client: Int32) {
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard let hello = Self.readExactly(client, Self.helloPrefix) else { close(client); return }
        let from = hello[18..<26].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        if state.withLock({ $0.blocked.contains(from) || $0.stopped }) { close(client); return }
        let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = Self.loopback(port: targetPort)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0, Self.writeAll(upstream, hello) else {
            close(upstream)
            close(client)
            return
        }
        var none = timeval(tv_sec: 0, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &none, socklen_t(MemoryLayout<timeval>.size))
        let id = state.withLock { state -> Int in
            let id = state.nextConnection
            state.nextConnection += 1
            state.connections[id] = (from, [client, upstream])
            return id
        }
        let done = DispatchGroup()
        for (source, destination) in [(client, upstream), (upstream, client)] {
            done.enter()
            let thread = Thread { [self] in
                pump(from: source, to: destination)
                done.leave()
            }
            thread.start()
        }
        done.wait()
        state.withLock { _ = $0.connections.removeValue(forKey: id) }
        close(client)
        close(upstream)
    }

    /// Copies one direction; with a delay, a reader queues chunks stamped
    /// with their arrival and this thread writes each once it is due (order
    /// kept, no throughput lost to the delay).
    private func pump(from source: Int32, to destination: Int32) {
        let queue = Mutex<(chunks: [(due: Date, bytes: [UInt8])], closed: Bool)>(([], false))
        let ready = DispatchSemaphore(value: 0)
        let reader = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 64 << 10)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, $0.count) }
                if n <= 0 { break }
                let due = Date().addingTimeInterval(state.withLock { $0.delay })
                queue.withLock { $0.chunks.append((due, Array(buffer[..<n]))) }
                ready.signal()
            }
            queue.withLock { $0.closed = true }
            ready.signal()
        }
        reader.start()
        while true {
            ready.wait()
            let next = queue.withLock { q -> (due: Date, bytes: [UInt8])?? in
                if !q.chunks.isEmpty { return q.chunks.removeFirst() }
                return q.closed ? .some(nil) : nil
            }
            guard let next else { continue }
            guard let chunk = next else { break }
            let wait = chunk.due.timeIntervalSinceNow
            if wait > 0 { Thread.sleep(forTimeInterval: wait) }
            if !Self.writeAll(destination, chunk.bytes) { break }
        }
        shutdown(source, Int32(SHUT_RDWR))
        shutdown(destination, Int32(SHUT_RDWR))
        // Let the reader see the shutdown and finish.
        while !queue.withLock({ $0.closed }) { ready.wait() }
    }

    private static func readExactly(_ fd: Int32, _ count: Int) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: count)
        var offset = 0
        while offset < count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + offset, count - offset) }
            if n <= 0 { return nil }
            offset += n
        }
        return bytes
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            offset += n
        }
        return true
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }
}
