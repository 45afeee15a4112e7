import EtcdClient
import EtcdProto
import Foundation
import Testing

/// Runs `body` with a fresh real etcd and a client for it.
func withEtcd(_ body: (RealEtcd, EtcdClient) async throws -> Void) async throws {
    let etcd = try await RealEtcd.start()
    let client = try etcd.client()
    do { try await body(etcd, client) } catch {
        client.close()
        await etcd.cleanupAsync()
        throw error
    }
    client.close()
    await etcd.cleanupAsync()
}

@Suite struct KVTests {
    @Test func putGetRangeOptions() async throws {
        try await withEtcd { _, client in
            for (k, v) in [("a/1", "z"), ("a/2", "y"), ("a/3", "x"), ("b", "w")] { try await client.put(k, v) }
            let one = try await client.get("a/1")
            #expect(one.kvs.map { $0.value.string } == ["z"])
            #expect(one.kvs[0].version == 1 && one.kvs[0].createRevision == 2)

            let prefix = try await client.get("a/", options: .prefix)
            #expect(prefix.kvs.map { $0.key.string } == ["a/1", "a/2", "a/3"])
            #expect(prefix.count == 3)

            var limited = GetOptions(range: .prefix, limit: 2, sortOrder: .descend, sortTarget: .value)
            let sorted = try await client.get("a/", options: limited)
            #expect(sorted.kvs.map { $0.value.string } == ["z", "y"] && sorted.more)
            limited.keysOnly = true
            #expect(try await client.get("a/", options: limited).kvs.allSatisfy { $0.value.isEmpty })

            let fromKey = try await client.get("a/3", options: GetOptions(range: .fromKey))
            #expect(fromKey.kvs.map { $0.key.string } == ["a/3", "b"])
            let explicit = try await client.get("a/2", options: GetOptions(range: .end(Data("b".utf8))))
            #expect(explicit.kvs.map { $0.key.string } == ["a/2", "a/3"])
            let all = try await client.get("", options: .prefix)
            #expect(all.count == 4)

            let count = try await client.get("a/", options: GetOptions(range: .prefix, countOnly: true))
            #expect(count.count == 3 && count.kvs.isEmpty)
            let serial = try await client.get("b", options: GetOptions(serializable: true))
            #expect(serial.kvs.first?.value.string == "w")

            // Revisions: read the past.
            let put = try await client.put("a/1", "new", options: PutOptions(prevKV: true))
            #expect(put.prevKv.value.string == "z")
            let old = try await client.get("a/1", options: GetOptions(revision: put.header.revision - 1))
            #expect(old.kvs.first?.value.string == "z")
            var minMod = GetOptions(range: .prefix)
            minMod.minModRevision = put.header.revision
            #expect(try await client.get("a/", options: minMod).kvs.map { $0.key.string } == ["a/1"])

            let ignore = try await client.put("a/1", "", options: PutOptions(prevKV: true, ignoreValue: true))
            #expect(ignore.prevKv.value.string == "new")
            #expect(try await client.get("a/1").kvs.first?.value.string == "new")
        }
    }

    @Test func deleteTxnCompactAndTypedErrors() async throws {
        try await withEtcd { _, client in
            for k in ["d/1", "d/2", "d/3"] { try await client.put(k, "v") }
            let deleted = try await client.delete("d/", options: DeleteOptions(range: .prefix, prevKV: true))
            #expect(deleted.deleted == 3 && deleted.prevKvs.count == 3)
            #expect(try await client.delete("nothing").deleted == 0)

            let created = try await client.txn(Txn()
                .when(.version("t", .equal, 0))
                .then(.put("t", "1"), .get("t"))
                .orElse(.get("t")))
            #expect(created.succeeded)
            guard case let .responseRange(r)? = created.responses.last?.response else { Issue.record("no range"); return }
            #expect(r.kvs.first?.value.string == "1")
            let second = try await client.txn(Txn()
                .when(.version("t", .equal, 0))
                .then(.put("t", "2"))
                .orElse(.get("t"), .txn(Txn().when(.value("t", .equal, "1")).then(.delete("t")))))
            #expect(!second.succeeded && second.responses.count == 2)
            #expect(try await client.get("t").kvs.isEmpty)
            let modGuard = try await client.txn(Txn().when(.modRevision("zz", .less, 1), .createRevision("zz", .equal, 0)).then(.put("zz", "z")))
            #expect(modGuard.succeeded)

            // Duplicate keys in one txn: etcd's error, typed.
            await #expect(throws: EtcdClientError.duplicateKey) {
                try await client.txn(Txn().then(.put("k", "1"), .put("k", "2")))
            }
            // Compaction.
            let rev = try await client.put("c", "1").header.revision
            try await client.put("c", "2")
            try await client.compact(revision: rev, physical: true)
            await #expect(throws: EtcdClientError.compacted) { try await client.get("c", options: GetOptions(revision: rev - 1)) }
            await #expect(throws: EtcdClientError.futureRevision) { try await client.get("c", options: GetOptions(revision: rev + 100)) }
            await #expect(throws: EtcdClientError.emptyKey) { try await client.put("", "x") }
            do {
                _ = try await client.get("c", options: GetOptions(revision: rev - 1))
            } catch let error as EtcdClientError {
                #expect(error.description == "etcdserver: mvcc: required revision has been compacted")
                #expect(error.code == .outOfRange)
            }
        }
    }
}

@Suite struct WatchTests {
    @Test func watchEventsPrefixPrevKVProgressAndCompaction() async throws {
        try await withEtcd { _, client in
            let watch = try await client.watch("w/", options: WatchOptions(range: .prefix, prevKV: true))
            try await client.put("w/a", "1")
            try await client.put("w/a", "2")
            try await client.put("other", "x")
            try await client.delete("w/a")
            var events: [Event] = []
            try await withTimeout(10, "watch events") {
                var collected: [Event] = []
                for try await response in watch {
                    collected += response.events
                    if collected.count >= 3 { break }
                }
                return collected
            }.forEach { events.append($0) }
            #expect(events.map(\.type) == [.put, .put, .delete])
            #expect(events.map { $0.kv.key.string } == ["w/a", "w/a", "w/a"])
            #expect(events[1].prevKv.value.string == "1")
            #expect(events[2].prevKv.value.string == "2")

            // Progress notification on request.
            let idle = try await client.watch("idle")
            idle.requestProgress()
            let progress = try await withTimeout(10, "progress notify") {
                for try await response in idle where response.isProgressNotify { return response.header.revision }
                return Int64(-1)
            }
            #expect(progress >= 5)
            idle.cancel()

            // Start revision in the past, after compaction: typed error.
            let head = try await client.put("w/b", "1").header.revision
            try await client.compact(revision: head)
            await #expect(throws: EtcdClientError.watchCompacted(compactRevision: head)) {
                let old = try await client.watch("w/", options: WatchOptions(range: .prefix, startRevision: 2))
                for try await _ in old {}
            }
            // Replay from a revision that is still there.
            let history = try await client.watch("w/b", options: WatchOptions(startRevision: head))
            let replayed = try await withTimeout(10, "replay") {
                for try await r in history { return r.events.first?.kv.value.string }
                return nil
            }
            #expect(replayed == "1")
        }
    }

    /// A consumer that reads nothing while 3 MiB of events arrive (more than
    /// the watch's buffer and the stream's window hold): the watch stops
    /// reading and the server waits; reading later, every event is there, in order.
    @Test func slowWatchConsumerLosesNothing() async throws {
        try await withEtcd { etcd, client in
            let writer = try etcd.client()
            defer { writer.close() }
            let watch = try await client.watch("s/", options: WatchOptions(range: .prefix))
            let value = String(repeating: "v", count: 16 << 10)
            for index in 0..<200 { try await writer.put("s/\(index)", value) }
            let keys = try await withTimeout(20, "slow consumer's events") {
                var keys: [String] = []
                for try await response in watch {
                    keys += response.events.map { $0.kv.key.string }
                    if keys.count >= 200 { break }
                }
                return keys
            }
            #expect(keys == (0..<200).map { "s/\($0)" })
            watch.cancel()
        }
    }

    @Test func watchResumesAcrossServerRestart() async throws {
        let etcd = try await RealEtcd.start()
        defer { etcd.cleanup() }
        let client = try etcd.client()
        defer { client.close() }
        let writer = try etcd.client()
        defer { writer.close() }
        let watch = try await client.watch("r/", options: WatchOptions(range: .prefix))
        try await writer.put("r/1", "before")
        let collector = Task {
            var values: [String] = []
            for try await response in watch {
                values += response.events.map { $0.kv.value.string }
                if values.count >= 3 { break }
            }
            return values
        }
        // Let the first event arrive, then restart the server (same data dir and ports).
        try await Task.sleep(for: .milliseconds(300))
        await etcd.stopAsync()
        try await etcd.startAsync()
        try await writer.put("r/2", "after-1")
        try await writer.put("r/3", "after-2")
        let values = try await withTimeout(20, "resumed watch") { try await collector.value }
        #expect(values == ["before", "after-1", "after-2"])
        #expect(watch.nextRevision == 5)
        watch.cancel()
    }
}

@Suite struct LeaseTests {
    @Test func grantRevokeTimeToLiveLeases() async throws {
        try await withEtcd { _, client in
            let lease = try await client.leaseGrant(ttl: 30)
            #expect(lease.ttl == 30 && lease.id != 0)
            try await client.put("leased", "v", options: PutOptions(lease: lease.id))
            let ttl = try await client.leaseTimeToLive(id: lease.id, keys: true)
            #expect(ttl.grantedTtl == 30 && ttl.ttl > 25 && ttl.keys.map(\.string) == ["leased"])
            #expect(try await client.leases().leases.map(\.id).contains(lease.id))
            let once = try await client.leaseKeepAliveOnce(id: lease.id)
            #expect(once.ttl == 30)
            try await client.leaseRevoke(id: lease.id)
            #expect(try await client.get("leased").kvs.isEmpty)
            #expect(try await client.leaseTimeToLive(id: lease.id).ttl == -1)
            await #expect(throws: EtcdClientError.leaseNotFound) { try await client.leaseRevoke(id: lease.id) }
            await #expect(throws: EtcdClientError.leaseNotFound) { try await client.leaseKeepAliveOnce(id: lease.id) }
            let chosen = try await client.leaseGrant(ttl: 10, id: 0x1234)
            #expect(chosen.id == 0x1234)
            await #expect(throws: EtcdClientError.leaseExists) { try await client.leaseGrant(ttl: 10, id: 0x1234) }
        }
    }

    @Test func keepAliveKeepsTwoSecondLeaseAliveForSixSeconds() async throws {
        try await withEtcd { _, client in
            let lease = try await client.leaseGrant(ttl: 2)
            try await client.put("alive", "yes", options: PutOptions(lease: lease.id))
            let renewals = Task {
                var count = 0
                for try await response in client.leaseKeepAlive(id: lease.id) {
                    #expect(response.id == lease.id)
                    count += 1
                }
                return count
            }
            try await Task.sleep(for: .milliseconds(6500))
            #expect(try await client.get("alive").kvs.count == 1)
            renewals.cancel()
            let count = try await renewals.value
            #expect(count >= 6, "renewals: \(count)")
            // Without keep-alive the lease runs out (bounded wait).
            let expired = try await withTimeout(8, "lease expiry") {
                while try await client.leaseTimeToLive(id: lease.id).ttl != -1 { try await Task.sleep(for: .milliseconds(200)) }
                return true
            }
            #expect(expired)
            #expect(try await client.get("alive").kvs.isEmpty)
        }
    }

    @Test func keepAliveEndsWhenLeaseRevoked() async throws {
        try await withEtcd { _, client in
            let lease = try await client.leaseGrant(ttl: 5)
            let stream = client.leaseKeepAlive(id: lease.id)
            let ended = Task {
                var n = 0
                for try await _ in stream { n += 1 }
                return n
            }
            try await Task.sleep(for: .milliseconds(300))
            try await client.leaseRevoke(id: lease.id)
            let n = try await withTimeout(10, "keep-alive end") { try await ended.value }
            #expect(n >= 1)
        }
    }
}

@Suite struct ClusterMaintenanceTests {
    @Test func memberListAddUpdateRemove() async throws {
        try await withEtcd { etcd, client in
            let list = try await client.memberList()
            #expect(list.members.count == 1)
            let me = list.members[0]
            #expect(me.clientUrls == ["http://\(etcd.endpoint)"])
            let added = try await client.memberAdd(peerURLs: ["http://127.0.0.1:1"], isLearner: true)
            #expect(added.member.isLearner && added.members.count == 2)
            await #expect(throws: EtcdClientError.learnerNotReady) { try await client.memberPromote(id: added.member.id) }
            try await client.memberUpdate(id: added.member.id, peerURLs: ["http://127.0.0.1:2"])
            #expect(try await client.memberList().members.first { $0.id == added.member.id }?.peerUrls == ["http://127.0.0.1:2"])
            try await client.memberRemove(id: added.member.id)
            #expect(try await client.memberList().members.count == 1)
            await #expect(throws: EtcdClientError.memberNotFound) { try await client.memberRemove(id: 42) }
        }
    }

    @Test func statusAlarmsDefragHashSnapshotMoveLeader() async throws {
        try await withEtcd { etcd, client in
            try await client.put("s", "1")
            let status = try await client.status(endpoint: etcd.endpoint)
            #expect(status.version.hasPrefix("3.4") && status.leader == status.header.memberID)
            #expect(try await client.alarmList().alarms.isEmpty)
            try await client.alarmDisarm()
            try await client.defragment(endpoint: etcd.endpoint)
            let h1 = try await client.hash()
            #expect(h1.hash != 0)
            let kvHash = try await client.hashKV(revision: 0)
            #expect(kvHash.hash != 0 && kvHash.header.revision >= 2)
            var bytes = 0
            var chunks = 0
            for try await chunk in client.snapshot() { bytes += chunk.count; chunks += 1 }
            #expect(bytes > 16_000 && chunks >= 1)
            await #expect(throws: EtcdClientError.badLeaderTransferee) { try await client.moveLeader(targetID: 12345, endpoint: etcd.endpoint) }
        }
    }
}

@Suite struct AuthTests {
    @Test func usersRolesPermissionsAndTokenRefresh() async throws {
        let etcd = try await RealEtcd.start()
        defer { etcd.cleanup() }
        let admin = try etcd.client()
        defer { admin.close() }
        await #expect(throws: EtcdClientError.rootUserNotExist) { try await admin.authEnable() }
        try await admin.userAdd("root", password: "rootpw")
        try await admin.roleAdd("root")
        try await admin.userGrantRole("root", role: "root")
        try await admin.userAdd("alice", password: "alicepw")
        try await admin.roleAdd("app")
        try await admin.roleGrantPermission("app", key: "app/", rangeEnd: KeyRange.prefixEnd(Data("app/".utf8)), type: .readwrite)
        try await admin.userGrantRole("alice", role: "app")
        #expect(try await admin.userList().users == ["alice", "root"])
        #expect(try await admin.roleList().roles == ["app", "root"])
        #expect(try await admin.userGet("alice").roles == ["app"])
        let perms = try await admin.roleGet("app").perm
        #expect(perms.count == 1 && perms[0].permType == .readwrite && perms[0].key.string == "app/")
        await #expect(throws: EtcdClientError.userAlreadyExists) { try await admin.userAdd("alice", password: "x") }
        try await admin.authEnable()

        // Without credentials: rejected.
        await #expect(throws: EtcdClientError.userEmpty) { try await admin.put("app/x", "1") }
        // Wrong password.
        let wrong = try EtcdClient(endpoints: [etcd.endpoint], options: EtcdClientOptions(username: "alice", password: "nope"))
        defer { wrong.close() }
        await #expect(throws: EtcdClientError.authFailed) { try await wrong.get("app/x") }
        // Alice: own prefix only.
        let alice = try EtcdClient(endpoints: [etcd.endpoint], options: EtcdClientOptions(username: "alice", password: "alicepw"))
        defer { alice.close() }
        try await alice.put("app/x", "1")
        #expect(try await alice.get("app/x").kvs.count == 1)
        await #expect(throws: EtcdClientError.permissionDenied) { try await alice.put("other", "1") }
        let firstToken = alice.authToken
        #expect(firstToken != nil)

        // Simple tokens live in the server's memory: after a restart the old token is invalid
        // and the client must re-authenticate transparently.
        try await etcd.restartAsync(statusOnly: true)
        #expect(try await alice.get("app/x").kvs.count == 1)
        #expect(alice.authToken != nil && alice.authToken != firstToken)

        await #expect(throws: EtcdClientError.permissionDenied) { try await alice.userChangePassword("alice", password: "newpw") }
        let root = try EtcdClient(endpoints: [etcd.endpoint], options: EtcdClientOptions(username: "root", password: "rootpw"))
        defer { root.close() }
        try await root.roleRevokePermission("app", key: "app/", rangeEnd: KeyRange.prefixEnd(Data("app/".utf8)))
        try await root.userRevokeRole("alice", role: "app")
        try await root.userDelete("alice")
        try await root.roleDelete("app")
        try await root.authDisable()
        try await admin.put("free", "again")
    }
}

@Suite struct FailoverTests {
    @Test func firstEndpointDeadFailsOverToSecond() async throws {
        let etcd = try await RealEtcd.start()
        defer { etcd.cleanup() }
        let (port, fd) = try deadPort()
        defer { close(fd) }
        let dead = "127.0.0.1:\(port)"
        let client = try EtcdClient(endpoints: [dead, etcd.endpoint], options: EtcdClientOptions(dialTimeout: .seconds(2), commandTimeout: .seconds(5)))
        defer { client.close() }
        let clock = ContinuousClock()
        let start = clock.now
        try await client.put("f", "1")
        #expect(try await client.get("f").kvs.first?.value.string == "1")
        #expect(client.activeEndpoint == etcd.endpoint)
        #expect(clock.now - start < .seconds(5))
    }

    @Test func unreachableEndpointFailsWithinDialTimeout() async throws {
        let (port, fd) = try deadPort()
        defer { close(fd) }
        let client = try EtcdClient(endpoints: ["127.0.0.1:\(port)"], options: EtcdClientOptions(dialTimeout: .seconds(1), commandTimeout: .seconds(10)))
        defer { client.close() }
        let clock = ContinuousClock()
        let start = clock.now
        await #expect(throws: EtcdClientError.deadlineExceeded) { try await client.get("x") }
        let took = clock.now - start
        #expect(took >= .milliseconds(900) && took < .seconds(4), "took \(took)")
    }

    /// Deadlines on the lean unary path: the command timeout (and a call's
    /// own timeout) ends a call a connected server never answers.
    @Test func timeoutsEndCallsAServerNeverAnswers() async throws {
        let (port, fd) = try silentPort()
        defer { close(fd) }
        let client = try EtcdClient(endpoints: ["127.0.0.1:\(port)"], options: EtcdClientOptions(dialTimeout: .seconds(5), commandTimeout: .seconds(1)))
        defer { client.close() }
        let clock = ContinuousClock()
        var start = clock.now
        await #expect(throws: EtcdClientError.deadlineExceeded) { try await client.get("x") }
        var took = clock.now - start
        #expect(took >= .milliseconds(950) && took < .seconds(3), "took \(took)")

        var request = Etcdserverpb_RangeRequest()
        request.key = Data("x".utf8)
        start = clock.now
        await #expect(throws: EtcdClientError.deadlineExceeded) { _ = try await client.range(request, timeout: .milliseconds(300)) }
        took = clock.now - start
        #expect(took >= .milliseconds(290) && took < .milliseconds(900), "took \(took)")
    }

    /// Cancelling the task of a call ends it at once with `canceled`.
    @Test func cancellingTheTaskEndsTheCall() async throws {
        let (port, fd) = try silentPort()
        defer { close(fd) }
        // The call would wait for a minute; cancelled, it ends well before
        // (the bound is generous: a loaded CI machine took 1.3 s).
        let client = try EtcdClient(endpoints: ["127.0.0.1:\(port)"], options: EtcdClientOptions(dialTimeout: .seconds(60), commandTimeout: .seconds(60)))
        defer { client.close() }
        let clock = ContinuousClock()
        let task = Task { () -> EtcdClientError? in
            do { try await client.put("k", "v"); return nil } catch { return EtcdClientError(error) }
        }
        try await Task.sleep(for: .milliseconds(200))
        let cancelled = clock.now
        task.cancel()
        #expect(await task.value == .canceled)
        #expect(clock.now - cancelled < .seconds(15))
    }

    @Test func clusterMemberKilledReadsAndWritesContinue() async throws {
        let cluster = try await RealEtcdCluster.start(size: 3)
        defer { cluster.cleanup() }
        let client = try EtcdClient(endpoints: cluster.endpoints, options: EtcdClientOptions(dialTimeout: .seconds(3), commandTimeout: .seconds(10)))
        defer { client.close() }
        try await client.put("c", "1")
        #expect(client.activeEndpoint == cluster.endpoints[0])
        let watch = try await client.watch("c")
        await cluster.members[0].kill9Async()
        #expect(try await client.get("c").kvs.first?.value.string == "1")
        #expect(client.activeEndpoint != cluster.endpoints[0])
        // A write is never re-sent blindly: right after the kill it may fail with
        // "leader changed"/"no leader"; the caller decides (here: retry a few times).
        var written = false
        for _ in 0..<20 where !written {
            do { try await client.put("c", "2"); written = true } catch let e as EtcdClientError where e.code == .unavailable {
                try await Task.sleep(for: .milliseconds(250))
            }
        }
        #expect(written)
        #expect(try await client.get("c").kvs.first?.value.string == "2")
        // The watch moved too and saw the write.
        let seen = try await withTimeout(15, "watch after failover") {
            for try await r in watch { if let e = r.events.first { return e.kv.value.string } }
            return ""
        }
        #expect(seen == "2")
        #expect(try await client.memberList().members.count == 3)
    }
}

@Suite struct ErrorMappingTests {
    @Test func messagesMapToTypedErrors() {
        #expect(EtcdClientError.leaseNotFound.description == "etcdserver: requested lease not found")
        #expect(EtcdClientError.noLeader.code == .unavailable)
        #expect(EtcdClientError.requestTooLarge.description == "etcdserver: request is too large")
        #expect(EtcdClientError.deadlineExceeded.description == "context deadline exceeded")
        #expect(EtcdClientError.rpc(code: .unavailable, message: "x").description == "rpc error: code = Unavailable desc = x")
    }
}
