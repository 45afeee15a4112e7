@testable import EtcdServer
import Testing

@Suite struct SettingsTests {
    @Test func defaultsAreEtcds() throws {
        let config = try ServerConfig(settings: [:])
        #expect(config.name == "default")
        #expect(config.dataDir == "default.etcd")
        #expect(config.walDir == "default.etcd/member/wal")
        #expect(config.listenClientURLs == ["http://localhost:2379"])
        #expect(config.initialAdvertisePeerURLs == ["http://localhost:2380"])
        #expect(config.initialCluster.map(\.name) == ["default"])
        #expect(config.snapshotCount == 10_000)
        #expect(config.heartbeatIntervalMilliseconds == 100 && config.electionTicks == 10)
        #expect(config.maxRequestBytes == 1_572_864 && config.maxTxnOps == 128)
        #expect(config.quotaBackendBytes == 2 << 30)
        #expect(config.preVote)
        #expect(config.initialMembers.map(\.id) == [0x8e9e05c52164694d])
    }

    @Test func everyKeyHasItsEnvironmentVariable() {
        #expect(ConfigKey.dataDir.environmentVariable == "ETCD_DATA_DIR")
        #expect(ConfigKey.listenClientURLs.environmentVariable == "ETCD_LISTEN_CLIENT_URLS")
        #expect(ConfigKey.quotaBackendBytes.environmentVariable == "ETCD_QUOTA_BACKEND_BYTES")
        #expect(Set(ConfigKey.allCases.map(\.environmentVariable)).count == ConfigKey.allCases.count)
    }

    @Test func valuesAreParsed() throws {
        let config = try ServerConfig(settings: [
            .name: "infra1", .walDir: "/fast/wal", .listenClientURLs: "http://127.0.0.1:2379, http://[::1]:2379",
            .heartbeatInterval: "50", .electionTimeout: "500", .snapshotCount: "100",
            .initialAdvertisePeerURLs: "http://10.0.0.1:2380", .initialCluster: "infra1=http://10.0.0.1:2380",
        ])
        #expect(config.dataDir == "infra1.etcd")
        #expect(config.walDir == "/fast/wal")
        #expect(config.listenClientURLs == ["http://127.0.0.1:2379", "http://[::1]:2379"])
        #expect(config.electionTicks == 10)
        #expect(config.snapshotCount == 100)
    }

    @Test func durationsUseGoSyntax() throws {
        #expect(try ServerConfig(settings: [:]).watchProgressNotifyIntervalMilliseconds == 600_000)
        let config = try ServerConfig(settings: [.watchProgressNotifyInterval: "1m30s"])
        #expect(config.watchProgressNotifyIntervalMilliseconds == 90_000)
        #expect(GoDuration.milliseconds("500ms") == 500)
        #expect(GoDuration.milliseconds("1.5h") == 5_400_000)
        #expect(GoDuration.milliseconds("250us") == 0)
        #expect(GoDuration.milliseconds("10") == nil)
        #expect(GoDuration.milliseconds("m") == nil)
    }

    @Test func nameWithoutInitialClusterDefaultsToItself() throws {
        let config = try ServerConfig(settings: [.name: "solo"])
        #expect(config.initialCluster.map(\.name) == ["solo"])
        #expect(config.initialCluster.first?.peerURLs == ["http://localhost:2380"])
    }

    @Test(arguments: [
        ([ConfigKey.snapshotCount: "ten"], "snapshot-count"),
        ([.heartbeatInterval: "100", .electionTimeout: "400"], "election-timeout"),
        ([.listenClientURLs: "localhost:2379"], "listen-client-urls"),
        ([.initialClusterState: "maybe"], "initial-cluster-state"),
        ([.logLevel: "loud"], "log-level"),
        ([.initialCluster: "other=http://localhost:2380"], "initial-cluster"),
        ([.initialCluster: "default=http://localhost:9999"], "initial-cluster"),
        ([.initialCluster: "default=http://localhost:2380,twin=http://localhost:2380"], "initial-cluster"),
        ([.snapshotCatchUpEntries: "0"], "experimental-snapshot-catchup-entries"),
        ([.maxTxnOps: "0"], "max-txn-ops"),
        ([.watchProgressNotifyInterval: "10 minutes"], "experimental-watch-progress-notify-interval"),
        ([.watchProgressNotifyInterval: "0s"], "experimental-watch-progress-notify-interval"),
    ])
    func badValuesNameTheFlag(settings: [ConfigKey: String], flag: String) {
        do {
            _ = try ServerConfig(settings: settings)
            Issue.record("expected an error for --\(flag)")
        } catch {
            #expect(error.description.contains("--\(flag)"), "\(error)")
        }
    }

    @Test func initialClusterGivesEtcdsMemberIDs() throws {
        // The ids etcd 3.4 gives `--initial-cluster infra0=http://127.0.0.1:2380,...`
        // with the default token; the cluster id comes from the sorted ids.
        let config = try ServerConfig(settings: [
            .name: "infra1", .initialAdvertisePeerURLs: "http://127.0.0.1:2381",
            .initialCluster: "infra0=http://127.0.0.1:2380,infra1=http://127.0.0.1:2381,infra2=http://127.0.0.1:2382",
            .preVote: "false",
        ])
        #expect(config.initialMembers.map(\.name) == ["infra0", "infra1", "infra2"])
        #expect(Set(config.initialMembers.map(\.id)).count == 3)
        #expect(config.initialMembers[1].id == MemberIdentity.memberID(peerURLs: ["http://127.0.0.1:2381"], clusterToken: "etcd-cluster"))
        #expect(!config.preVote)
        #expect(throws: SettingsError.self) { try ServerConfig(settings: [.preVote: "maybe"]) }
    }
}

@Suite struct FailpointParsingTests {
    @Test func specificationsArmPointsAndIgnoreTypos() {
        let points = Failpoints(specification: "afterWALSave=panic@3; beforeWALSave=sleep(5);nonsense=panic;midCompaction=bogus")
        #expect(!points.isEmpty)
        // Sleeping points stall and return; unarmed points do nothing.
        let start = ContinuousClock.now
        points.hit(.beforeWALSave)
        #expect(ContinuousClock.now - start >= .milliseconds(5))
        points.hit(.afterBackendCommit)
        points.hit(.afterWALSave)
        points.hit(.afterWALSave)
        #expect(Failpoints(specification: "").isEmpty)
        #expect(Failpoints(specification: "afterWALSave=off").isEmpty)
    }
}

/// Settings the gRPC layer uses, and TLS URLs refused until TLS arrives.
@Suite struct ServerConfigSettingsTests {
    func refusal(_ body: () throws -> Any) -> String {
        do { _ = try body(); return "started" } catch { return "\(error)" }
    }

    @Test func tlsURLsRefuseToStart() {
        for (key, url) in [(ConfigKey.listenClientURLs, "https://127.0.0.1:2379"), (.advertiseClientURLs, "https://a:2379"),
                           (.listenPeerURLs, "https://127.0.0.1:2380"), (.initialAdvertisePeerURLs, "https://localhost:2380"),
                           (.listenClientURLs, "unixs://sock:0")] {
            #expect(refusal { try ServerConfig(settings: [key: "http://127.0.0.1:1,\(url)"]) }
                == "TLS is not supported yet: --\(key.rawValue) \(url)")
        }
        #expect(refusal { try ServerConfig(settings: [.initialCluster: "default=https://localhost:2380"]) }
            == "TLS is not supported yet: --initial-cluster https://localhost:2380")
    }

    @Test func grpcSettings() throws {
        let defaults = try ServerConfig(settings: [:])
        #expect(defaults.maxConcurrentStreams == UInt32.max)
        #expect(defaults.grpcKeepaliveMinTimeMilliseconds == 5_000)
        #expect(defaults.grpcKeepaliveIntervalMilliseconds == 7_200_000)
        #expect(defaults.grpcKeepaliveTimeoutMilliseconds == 20_000)
        let config = try ServerConfig(settings: [.maxConcurrentStreams: "100", .grpcKeepaliveMinTime: "0",
                                                 .grpcKeepaliveInterval: "1h30m", .grpcKeepaliveTimeout: "1.5s"])
        #expect(config.maxConcurrentStreams == 100)
        #expect(config.grpcKeepaliveMinTimeMilliseconds == 0)
        #expect(config.grpcKeepaliveIntervalMilliseconds == 5_400_000)
        #expect(config.grpcKeepaliveTimeoutMilliseconds == 1_500)
        for (key, value) in [(ConfigKey.maxConcurrentStreams, "0"), (.maxConcurrentStreams, "4294967296"), (.grpcKeepaliveMinTime, "5"),
                             (.grpcKeepaliveInterval, "0s"), (.grpcKeepaliveTimeout, "soon")] {
            #expect(refusal { try ServerConfig(settings: [key: value]) }.contains("--\(key.rawValue)"), "\(key) \(value)")
        }
    }
}
