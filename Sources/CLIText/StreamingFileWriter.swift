import Dispatch
import Foundation
import Locks

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a large file front to back as its bytes arrive (a snapshot being
/// saved) and keeps the disk busy meanwhile: after every `syncEvery` bytes
/// a background thread flushes what has been written so far
/// (`fdatasync`, at most one at a time), so the disk writes while the rest
/// is still arriving and `finish` has only the tail left to flush. Without
/// it the kernel holds the whole file as dirty pages (below its writeback
/// threshold, 10 % of memory) and writes all of it in the final sync, after
/// the transfer: the save takes transfer time plus disk time instead of the
/// larger of the two. It also bounds the dirty pages a save leaves behind.
///
/// One thread writes. A failed background flush fails the next `write` or
/// `finish`: the file is never reported durable when it is not.
public final class StreamingFileWriter: @unchecked Sendable {
    public let path: String
    private let fd: Int32
    private let syncEvery: Int
    private var sinceSync = 0
    private let syncer = DispatchQueue(label: "StreamingFileWriter.sync")
    private let inFlight = DispatchGroup()
    /// A flush in flight, flushes begun, the first flush's error (errno).
    private let state = Mutex<(syncing: Bool, started: Int, error: Int32)>((false, 0, 0))
    private var closed = false

    /// Creates (or truncates) the file at `path`.
    public init(path: String, syncEvery: Int = 64 << 20) throws(POSIXError) {
        self.path = path
        self.syncEvery = max(syncEvery, 1)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        self.fd = fd
    }

    deinit {
        if !closed { abandon() }
    }

    /// Background flushes begun so far.
    public var backgroundSyncs: Int { state.withLock { $0.started } }

    /// Appends `bytes`; may start a background flush.
    public func write(_ bytes: Data) throws(POSIXError) {
        try checkSync()
        let failure = bytes.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> Int32 in
            var offset = 0
            while offset < raw.count {
                let n = Foundation.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                offset += n
            }
            return 0
        }
        if failure != 0 { throw POSIXError(POSIXErrorCode(rawValue: failure) ?? .EIO) }
        sinceSync += bytes.count
        if sinceSync >= syncEvery { startSync() }
    }

    /// Waits for a background flush, flushes the rest and closes the file.
    public func finish() throws(POSIXError) {
        inFlight.wait()
        try checkSync()
        closed = true
        while fdatasync(fd) != 0 {
            if errno == EINTR { continue }
            let code = errno
            close(fd)
            throw POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO)
        }
        guard close(fd) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    }

    /// Closes and removes the file (a save that failed).
    public func abandon() {
        inFlight.wait()
        if !closed {
            closed = true
            close(fd)
        }
        unlink(path)
    }

    private func startSync() {
        let begin = state.withLock { state -> Bool in
            if state.syncing { return false }
            state.syncing = true
            state.started += 1
            return true
        }
        guard begin else { return }
        sinceSync = 0
        inFlight.enter()
        let fd = fd
        syncer.async { [self] in
            var code: Int32 = 0
            while fdatasync(fd) != 0 {
                if errno == EINTR { continue }
                code = errno
                break
            }
            state.withLock { state in
                if code != 0 && state.error == 0 { state.error = code }
                state.syncing = false
            }
            inFlight.leave()
        }
    }

    private func checkSync() throws(POSIXError) {
        let code = state.withLock { $0.error }
        if code != 0 { throw POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO) }
    }
}

extension StreamingFileWriter {
    /// Flushes the directory holding `path` (so a rename into it survives a
    /// crash). Errors are ignored: some file systems refuse directory syncs.
    public static func syncDirectory(of path: String) {
        let directory = (path as NSString).deletingLastPathComponent
        let fd = open(directory.isEmpty ? "." : directory, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        close(fd)
    }
}

/// An errno as Go prints it (the C library's text, first letter lower-case:
/// "no such file or directory", "no space left on device").
public func goErrnoText(_ code: POSIXErrorCode) -> String {
    let text = String(cString: strerror(code.rawValue))
    return text.prefix(1).lowercased() + text.dropFirst()
}
