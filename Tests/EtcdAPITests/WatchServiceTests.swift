import EtcdAPI
import EtcdGRPC
import EtcdProto
@testable import EtcdServer
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Locks
import Testing

/// The Watch service over gRPC: created/canceled responses and their ids,
/// etcd's errors, events, compaction notices, progress and fragments.
@Suite struct WatchServiceTests {
    @Test func idsDuplicatesAndEmptyRanges() async throws {
        try await withServedMember { member, client in
            let stream = try await WatchStreamProbe.open(client)
            defer { stream.finish() }
            stream.send(.create(key: "a"))
            stream.send(.create(key: "b"))
            stream.send(.create(key: "c", watchID: 1))
            stream.send(.create(key: "z", rangeEnd: "a"))
            let responses = try await stream.waitFor(count: 4)
            #expect(responses.map(\.watchID) == [0, 1, -1, -1])
            #expect(responses.allSatisfy { $0.created })
            #expect(responses[2].canceled && responses[2].cancelReason == "mvcc: duplicate watch ID provided on the WatchStream")
            #expect(responses[3].canceled && responses[3].cancelReason == "mvcc: watcher range is empty")
        }
    }

    @Test func eventsThenCancel() async throws {
        try await withServedMember { member, client in
            let stream = try await WatchStreamProbe.open(client)
            defer { stream.finish() }
            stream.send(.create(key: "k", prevKV: true))
            _ = try await stream.waitFor(count: 1)
            _ = try await member.put(Self.put("k", "1"))
            _ = try await member.put(Self.put("k", "2"))
            let events = try await stream.waitFor(count: 3).dropFirst().flatMap(\.events)
            #expect(events.map(\.kv.value) == [Data("1".utf8), Data("2".utf8)])
            #expect(events.last?.prevKv.value == Data("1".utf8))

            var cancel = Etcdserverpb_WatchRequest()
            cancel.cancelRequest.watchID = 0
            stream.send(cancel)
            let canceled = try await stream.waitFor(count: 4)[3]
            #expect(canceled.canceled && canceled.watchID == 0)
            _ = try await member.put(Self.put("k", "3"))
            try await Task.sleep(for: .milliseconds(200))
            #expect(stream.responses.count == 4, "no event after the cancel")
        }
    }

    @Test func compactedStartIsReportedAndCanceled() async throws {
        try await withServedMember { member, client in
            for i in 0..<5 { _ = try await member.put(Self.put("k", "\(i)")) }
            var compaction = Etcdserverpb_CompactionRequest()
            compaction.revision = 4
            _ = try await member.compact(compaction)
            let stream = try await WatchStreamProbe.open(client)
            defer { stream.finish() }
            stream.send(.create(key: "k", startRevision: 2))
            let responses = try await stream.waitFor(count: 2)
            #expect(responses[1].compactRevision == 4)
            #expect(responses[1].canceled)
            // From the compaction revision on, history is there.
            stream.send(.create(key: "k", startRevision: 4))
            let later = try await stream.waitFor(count: 4)
            #expect(later[3].events.map(\.kv.modRevision) == [4, 5, 6])
        }
    }

    @Test func progressRequestAnswersWithTheCurrentRevision() async throws {
        try await withServedMember { member, client in
            let stream = try await WatchStreamProbe.open(client)
            defer { stream.finish() }
            stream.send(.create(key: "p"))
            _ = try await stream.waitFor(count: 1)
            let revision = try await member.put(Self.put("other", "x")).header.revision
            var progress = Etcdserverpb_WatchRequest()
            progress.progressRequest = Etcdserverpb_WatchProgressRequest()
            stream.send(progress)
            let answer = try await stream.waitFor(count: 2)[1]
            #expect(answer.watchID == -1)
            #expect(answer.events.isEmpty)
            #expect(answer.header.revision == revision)
        }
    }

    /// A revision bigger than --max-request-bytes reaches a `fragment`
    /// watcher in pieces, all but the last marked; one event per piece at
    /// most the limit.
    @Test func largeRevisionsAreFragmentedForWatchersThatAsk() async throws {
        try await withServedMember(maxRequestBytes: 64 * 1024) { member, client in
            let value = String(repeating: "v", count: 5_000)
            for i in 0..<20 { _ = try await member.put(Self.put("f/\(i)", value)) }
            let stream = try await WatchStreamProbe.open(client)
            defer { stream.finish() }
            stream.send(.create(key: "f/", rangeEnd: "f0", prevKV: true, fragment: true))
            stream.send(.create(key: "f/", rangeEnd: "f0", prevKV: true, fragment: false))
            _ = try await stream.waitFor(count: 2)
            var delete = Etcdserverpb_DeleteRangeRequest()
            delete.key = Data("f/".utf8)
            delete.rangeEnd = Data("f0".utf8)
            _ = try await member.deleteRange(delete)
            let deadline = ContinuousClock.now + .seconds(10)
            while ContinuousClock.now < deadline {
                let events = stream.responses.filter { $0.watchID == 0 }.reduce(0) { $0 + $1.events.count }
                if events == 20 && stream.responses.contains(where: { $0.watchID == 1 && !$0.events.isEmpty }) { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            let pieces = stream.responses.filter { $0.watchID == 0 && !$0.events.isEmpty }
            #expect(pieces.count > 1)
            #expect(pieces.dropLast().allSatisfy { $0.fragment })
            #expect(pieces.last?.fragment == false)
            #expect(pieces.flatMap(\.events).count == 20)
            let whole = stream.responses.filter { $0.watchID == 1 && !$0.events.isEmpty }
            #expect(whole.count == 1 && whole[0].events.count == 20 && !whole[0].fragment)
        }
    }

    /// Watchers that asked for progress notifications get one per interval
    /// while idle, with the current revision; others get none.
    @Test func idleWatchersWithProgressNotifyGetNotifications() async throws {
        try await withServedMember(progressNotifyMilliseconds: 200) { member, client in
            let revision = try await member.put(Self.put("x", "1")).header.revision
            let stream = try await WatchStreamProbe.open(client)
            defer { stream.finish() }
            var notify = Etcdserverpb_WatchRequest.create(key: "quiet")
            notify.createRequest.progressNotify = true
            stream.send(notify)
            stream.send(.create(key: "silent"))
            let responses = try await stream.waitFor(count: 4)
            let progress = responses.filter { !$0.created }
            #expect(progress.allSatisfy { $0.watchID == 0 && $0.events.isEmpty && $0.header.revision == revision })
        }
    }

    /// Resumable: a watch restarted from the last revision it saw + 1 gets
    /// exactly the rest of the history.
    @Test func aWatchResumedFromTheNextRevisionGetsExactlyTheRest() async throws {
        try await withServedMember { member, client in
            let first = try await WatchStreamProbe.open(client)
            first.send(.create(key: "r/", rangeEnd: "r0"))
            _ = try await first.waitFor(count: 1)
            var all: [Int64] = []
            for i in 0..<10 { all.append(try await member.put(Self.put("r/\(i % 3)", "\(i)")).header.revision) }
            let seen = try await first.waitFor(count: 2).dropFirst().flatMap(\.events).map(\.kv.modRevision)
            first.finish()
            let last = try #require(seen.last)
            for i in 10..<15 { all.append(try await member.put(Self.put("r/\(i % 3)", "\(i)")).header.revision) }
            let second = try await WatchStreamProbe.open(client)
            defer { second.finish() }
            second.send(.create(key: "r/", rangeEnd: "r0", startRevision: last + 1))
            let deadline = ContinuousClock.now + .seconds(10)
            while second.responses.flatMap(\.events).count < all.count - seen.count && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            let rest = second.responses.flatMap(\.events).map(\.kv.modRevision)
            #expect(seen + rest == all)
        }
    }

    static func put(_ key: String, _ value: String) -> Etcdserverpb_PutRequest {
        var request = Etcdserverpb_PutRequest()
        request.key = Data(key.utf8)
        request.value = Data(value.utf8)
        return request
    }
}

/// A member with a client listener on a free loopback port, and a gRPC client to it.
func withServedMember(
    maxRequestBytes: Int = 1_572_864,
    progressNotifyMilliseconds: Int = 600_000,
    configure: (inout ServerConfig) throws -> Void = { _ in },
    _ body: (Member, GRPCClient<HTTP2ClientTransport.Posix>) async throws -> Void
) async throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("api-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var config = ServerConfig(name: "api", dataDir: dir)
    config.maxRequestBytes = maxRequestBytes
    config.watchProgressNotifyIntervalMilliseconds = progressNotifyMilliseconds
    try configure(&config)
    let member = try Member(config: config)
    defer { member.stop() }
    try await withListener(on: member) { client in try await body(member, client) }
}

/// A client listener for `member` on a free loopback port, and a gRPC client to it.
func withListener(on member: Member, _ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> Void) async throws {
    let listener = ClientListener(address: try ListenAddress(parsing: "http://127.0.0.1:0"), member: member)
    try await withThrowingTaskGroup { group in
        group.addTask { try await listener.serve() }
        defer { listener.stop() }
        let port = try #require(try await listener.boundPort())
        let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
        try await withGRPCClient(transport: transport) { client in
            try await body(client)
        }
        listener.stop()
        try await group.waitForAll()
    }
}

/// One watch stream driven by a test: requests go in as sent, responses
/// are collected as they arrive.
final class WatchStreamProbe: Sendable {
    private let requests: AsyncStream<Etcdserverpb_WatchRequest>.Continuation
    private let collected: ResponseBox
    private let task: Task<Void, any Error>

    final class ResponseBox: Sendable {
        let responses = Mutex<[Etcdserverpb_WatchResponse]>([])
    }

    private init(client: GRPCClient<HTTP2ClientTransport.Posix>) {
        let (stream, continuation) = AsyncStream<Etcdserverpb_WatchRequest>.makeStream()
        requests = continuation
        let watch = Etcdserverpb_Watch.Client(wrapping: client)
        let box = ResponseBox()
        collected = box
        task = Task {
            try await watch.watch(requestProducer: { writer in
                for await request in stream { try await writer.write(request) }
            }, onResponse: { response in
                for try await message in response.messages {
                    box.responses.withLock { $0.append(message) }
                }
            })
        }
    }

    static func open(_ client: GRPCClient<HTTP2ClientTransport.Posix>) async throws -> WatchStreamProbe {
        WatchStreamProbe(client: client)
    }

    var responses: [Etcdserverpb_WatchResponse] { collected.responses.withLock { $0 } }

    func send(_ request: Etcdserverpb_WatchRequest) { requests.yield(request) }

    /// Waits (at most 30 s: the whole in-process suite shares two cores)
    /// for `count` responses and returns them.
    func waitFor(count: Int) async throws -> [Etcdserverpb_WatchResponse] {
        let deadline = ContinuousClock.now + .seconds(30)
        while responses.count < count && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        let got = responses
        try #require(got.count >= count, "expected \(count) responses, got \(got.count): \(got)")
        return got
    }

    func finish() {
        requests.finish()
        task.cancel()
    }
}

extension Etcdserverpb_WatchRequest {
    static func create(
        key: String, rangeEnd: String = "", startRevision: Int64 = 0, watchID: Int64 = 0,
        prevKV: Bool = false, fragment: Bool = false
    ) -> Etcdserverpb_WatchRequest {
        var request = Etcdserverpb_WatchRequest()
        request.createRequest.key = Data(key.utf8)
        request.createRequest.rangeEnd = Data(rangeEnd.utf8)
        request.createRequest.startRevision = startRevision
        request.createRequest.watchID = watchID
        request.createRequest.prevKv = prevKV
        request.createRequest.fragment = fragment
        return request
    }
}
