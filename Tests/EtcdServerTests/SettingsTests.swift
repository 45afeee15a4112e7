import Auth
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
        #expect(!config.extensiveMetrics)
        #expect(try ServerConfig(settings: [.metrics: "extensive"]).extensiveMetrics)
        #expect(try !ServerConfig(settings: [.metrics: "basic"]).extensiveMetrics)
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
        ([.metrics: "verbose"], "metrics"),
        ([.initialCluster: "other=http://localhost:2380"], "initial-cluster"),
        ([.initialCluster: "default=http://localhost:9999"], "initial-cluster"),
        ([.initialCluster: "default=http://localhost:2380,twin=http://localhost:2380"], "initial-cluster"),
        ([.snapshotCatchUpEntries: "0"], "experimental-snapshot-catchup-entries"),
        ([.maxTxnOps: "0"], "max-txn-ops"),
        ([.watchProgressNotifyInterval: "10 minutes"], "experimental-watch-progress-notify-interval"),
        ([.watchProgressNotifyInterval: "0s"], "experimental-watch-progress-notify-interval"),
        ([.autoCompactionMode: "hourly"], "auto-compaction-mode"),
        ([.autoCompactionMode: "", .autoCompactionRetention: "1"], "auto-compaction-mode"),
        ([.autoCompactionRetention: "1 hour"], "auto-compaction-retention"),
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

    @Test func disasterRecoveryAndReconfigurationSwitches() throws {
        let defaults = try ServerConfig(settings: [:])
        #expect(!defaults.forceNewCluster && defaults.strictReconfigCheck)
        let set = try ServerConfig(settings: [.forceNewCluster: "true", .strictReconfigCheck: "false"])
        #expect(set.forceNewCluster && !set.strictReconfigCheck)
        #expect(try CommandLineFlags(parsing: ["--force-new-cluster"]).values == ["force-new-cluster": "true"])
        #expect(throws: SettingsError.self) { try ServerConfig(settings: [.strictReconfigCheck: "yes"]) }
    }
}

@Suite struct FailpointParsingTests {
    @Test func specificationsArmPointsAndIgnoreTypos() throws {
        let points = Failpoints(specification: "afterWALSave=panic@3; beforeWALSave=sleep(5);nonsense=panic;midCompaction=bogus")
        #expect(!points.isEmpty)
        // Sleeping points stall and return; unarmed points do nothing.
        let start = ContinuousClock.now
        try points.hit(.beforeWALSave)
        #expect(ContinuousClock.now - start >= .milliseconds(5))
        try points.hit(.afterBackendCommit)
        try points.hit(.afterWALSave)
        try points.hit(.afterWALSave)
        #expect(Failpoints(specification: "").isEmpty)
        #expect(Failpoints(specification: "afterWALSave=off").isEmpty)
    }

    @Test func crashFiresAtItsHitOrIndexAndBugsSwitchOn() throws {
        let byHit = Failpoints(specification: "afterWALAppend=crash@2")
        try byHit.hit(.afterWALAppend, index: 10)
        #expect(throws: FailpointCrash.self) { try byHit.hit(.afterWALAppend, index: 11) }
        try byHit.hit(.afterWALAppend, index: 12)

        let byIndex = Failpoints(specification: "afterApplyBeforeBackendCommit=crash@index=23")
        try byIndex.hit(.afterApplyBeforeBackendCommit, index: 22)
        try byIndex.hit(.afterApplyBeforeBackendCommit)
        #expect(throws: FailpointCrash.self) { try byIndex.hit(.afterApplyBeforeBackendCommit, index: 23) }
        #expect(throws: FailpointCrash.self) { try byIndex.hit(.afterApplyBeforeBackendCommit, index: 40) }
        try byIndex.hit(.afterWALAppend, index: 40)

        #expect(Failpoints(specification: "bugLocalLinearizableReads=on").isOn(.bugLocalLinearizableReads))
        #expect(!Failpoints(specification: "").isOn(.bugLocalLinearizableReads))
        #expect(!Failpoints(specification: "afterWALSave=crash").isOn(.afterWALSave))
        #expect(Failpoints(specification: "afterWALSave=crash@index=x").isEmpty)
    }
}

/// Settings the gRPC layer uses, and TLS URLs refused until TLS arrives.
@Suite struct ServerConfigSettingsTests {
    func refusal(_ body: () throws -> Any) -> String {
        do { _ = try body(); return "started" } catch { return "\(error)" }
    }

    @Test func tlsURLsNeedACertificateSource() throws {
        #expect(refusal { try ServerConfig(settings: [.listenClientURLs: "http://127.0.0.1:1,https://127.0.0.1:2379"]) }
            == "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:2379 with HTTPS scheme")
        #expect(refusal { try ServerConfig(settings: [.listenPeerURLs: "https://127.0.0.1:2380"]) }
            == "TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url https://127.0.0.1:2380 with HTTPS scheme")
        #expect(refusal { try ServerConfig(settings: [.listenClientURLs: "unixs://sock:0"]) }
            == "unix sockets are not supported yet: --listen-client-urls unixs://sock:0")
        let secure = try ServerConfig(settings: [.listenClientURLs: "https://127.0.0.1:2379", .certFile: "/c.pem", .keyFile: "/k.pem",
                                                 .clientCertAuth: "true", .trustedCAFile: "/ca.pem", .clientCRLFile: "/crl.pem"])
        #expect(secure.clientTLS.certFile == "/c.pem" && secure.clientTLS.requiresClientCertificate && secure.clientTLS.crlFile == "/crl.pem")
        let auto = try ServerConfig(settings: [.listenPeerURLs: "https://127.0.0.1:2380", .initialAdvertisePeerURLs: "https://127.0.0.1:2380",
                                               .initialCluster: "default=https://127.0.0.1:2380", .peerAutoTLS: "true",
                                               .peerCertAllowedCN: "etcd", .selfSignedCertValidity: "3"])
        #expect(auto.peerTLS.autoTLS && auto.peerTLS.allowedCN == "etcd" && auto.peerTLS.selfSignedValidityYears == 3)
        #expect(auto.peerTLS.checksClientAddress && !auto.clientTLS.checksClientAddress)
        // Versions and suites, checked as etcd checks them.
        #expect(refusal { try ServerConfig(settings: [.tlsMinVersion: "TLS1.0"]) }
            == "unexpected TLS version \"TLS1.0\" (must be one of: TLS1.2, TLS1.3)")
        #expect(refusal { try ServerConfig(settings: [.tlsMinVersion: "TLS1.3", .tlsMaxVersion: "TLS1.2"]) }
            == "min version (TLS1.3) is greater than max version (TLS1.2)")
        #expect(refusal { try ServerConfig(settings: [.tlsMinVersion: "TLS1.3", .cipherSuites: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]) }
            == "cipher suites cannot be configured when only TLS1.3 is enabled")
        #expect(refusal { try ServerConfig(settings: [.cipherSuites: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_RC4"]) }
            == "unexpected TLS cipher suite \"TLS_RC4\"")
        #expect(refusal { try ServerConfig(settings: [.peerCertAllowedCN: "a", .peerCertAllowedHostname: "b"]) }
            .hasPrefix("AllowedCN and AllowedHostname are mutually exclusive"))
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

/// etcd's command line, as Go's `flag` package parses it.
@Suite struct CommandLineFlagsTests {
    @Test func oneOrTwoDashesAndEqualsOrNextArgument() throws {
        for arguments in [["-name", "x"], ["--name", "x"], ["--name=x"], ["-name=x"]] {
            #expect(try CommandLineFlags(parsing: arguments).values == ["name": "x"], "\(arguments)")
        }
        // A value flag takes the next argument whatever it looks like; the last occurrence wins.
        #expect(try CommandLineFlags(parsing: ["--name", "-x", "--name=y=z"]).values == ["name": "y=z"])
        #expect(try CommandLineFlags(parsing: ["--initial-cluster-token="]).values == ["initial-cluster-token": ""])
    }

    @Test func bareBooleanMeansTrueAndNeverTakesTheNextArgument() throws {
        #expect(try CommandLineFlags(parsing: ["--pre-vote"]).values == ["pre-vote": "true"])
        #expect(try CommandLineFlags(parsing: ["-pre-vote=false"]).values == ["pre-vote": "false"])
        #expect(try CommandLineFlags(parsing: ["--auto-tls", "--name", "y"]).values == ["auto-tls": "true", "name": "y"])
        #expect(try CommandLineFlags(parsing: ["-version"]).values == ["version": "true"])
        // Go leaves `false` as an argument, which etcd rejects.
        #expect(throws: FlagError.strayArgument("false")) { try CommandLineFlags(parsing: ["--pre-vote", "false"]) }
        #expect(throws: FlagError.invalidBoolean(flag: "pre-vote", value: "maybe")) { try CommandLineFlags(parsing: ["--pre-vote=maybe"]) }
    }

    @Test func errorsInGosWords() {
        func error(_ arguments: [String]) -> String {
            do { _ = try CommandLineFlags(parsing: arguments); return "no error" } catch { return error.description }
        }
        #expect(error(["--bogus"]) == "flag provided but not defined: -bogus")
        #expect(error(["-bogus=1"]) == "flag provided but not defined: -bogus")
        #expect(error(["--name"]) == "flag needs an argument: -name")
        #expect(error(["---name=a"]) == "bad flag syntax: ---name=a")
        #expect(error(["--=x"]) == "bad flag syntax: --=x")
        #expect(error(["--pre-vote="]) == "invalid boolean value \"\" for -pre-vote: parse error")
        #expect(error(["--name", "a", "extra"]) == "error verifying flags, 'extra' is not a valid flag. See 'etcd --help'.")
        #expect(error(["--", "--name=a"]) == "error verifying flags, '--name=a' is not a valid flag. See 'etcd --help'.")
        #expect(error(["-"]) == "error verifying flags, '-' is not a valid flag. See 'etcd --help'.")
        #expect(FlagError.notDefined("x").exitCode == 2 && FlagError.strayArgument("x").exitCode == 1)
    }

    @Test func helpStopsParsing() throws {
        for arguments in [["-h"], ["--help"], ["-help", "--bogus"], ["--name", "a", "-h"]] {
            #expect(try CommandLineFlags(parsing: arguments).help, "\(arguments)")
        }
        #expect(try !CommandLineFlags(parsing: ["--name", "-h"]).help)
    }

    @Test func everyEtcdFlagIsKnownAndItsDefaultIsHarmless() {
        for flag in EtcdFlag.unsupported {
            #expect(flag.isHarmless(flag.etcdDefault), "\(flag.name)")
            #expect(EtcdFlag.byName[flag.name] != nil)
        }
        for key in ConfigKey.allCases { #expect(EtcdFlag.byName[key.rawValue]?.key == key) }
        #expect(EtcdFlag.byName["client-cert-auth"]?.kind == .bool)
        #expect(EtcdFlag.byName.count == 2 + EtcdFlag.supported.count + EtcdFlag.unsupported.count)
    }
}

/// Flags, `ETCD_*` variables and the config file, failing closed.
@Suite struct SettingsSourcesTests {
    func resolve(_ arguments: [String], _ environment: [String: String] = [:]) throws -> ResolvedSettings {
        try SettingsSources.resolve(flags: CommandLineFlags(parsing: arguments), environment: environment)
    }

    func refusal(_ body: () throws -> Any) -> String {
        do { _ = try body(); return "started" } catch { return "\(error)" }
    }

    @Test func flagsWinOverEnvironment() throws {
        let resolved = try resolve(["-name", "flag", "--pre-vote=false"], ["ETCD_NAME": "env", "ETCD_DATA_DIR": "/d", "ETCD_SNAPSHOT_COUNT": "7"])
        #expect(resolved.settings == [.name: "flag", .dataDir: "/d", .snapshotCount: "7", .preVote: "false"])
        #expect(resolved.warnings == ["recognized environment variable ETCD_NAME=env, but unused: shadowed by corresponding flag"])
    }

    @Test func unknownVariablesAreWarnedAbout() throws {
        let resolved = try resolve([], ["ETCD_NAMEE": "typo", "ETCD_FAILPOINTS": "", "PATH": "/bin"])
        #expect(resolved.warnings == ["unrecognized environment variable ETCD_NAMEE=typo"])
        #expect(resolved.settings.isEmpty)
    }

    @Test func unsupportedFlagsAndVariablesRefuseToStart() throws {
        #expect(refusal { try resolve(["--enable-pprof"]) } == "--enable-pprof is not supported yet")
        #expect(refusal { try resolve(["--enable-grpc-gateway=false", "--enable-pprof"]) }
            == "--enable-grpc-gateway is not supported yet; --enable-pprof is not supported yet")
        // --listen-metrics-urls and --metrics are settings now.
        #expect(try resolve(["--metrics=extensive"]).settings == [.metrics: "extensive"])
        #expect(try resolve(["--listen-metrics-urls=http://127.0.0.1:1"]).settings == [.listenMetricsURLs: "http://127.0.0.1:1"])
        #expect(refusal { try resolve([], ["ETCD_ENABLE_PPROF": "true"]) }
            == "ETCD_ENABLE_PPROF=true: --enable-pprof is not supported yet")
        // The TLS flags are settings now, on the command line and in the environment.
        #expect(try resolve(["--client-cert-auth", "--cert-file=/c.pem"], ["ETCD_PEER_AUTO_TLS": "true"]).settings
            == [.clientCertAuth: "true", .certFile: "/c.pem", .peerAutoTLS: "true"])
        #expect(refusal { try resolve(["--unsafe-no-fsync"]) } == "--unsafe-no-fsync is not supported yet")
        // etcd's defaults are as good as absent: etcd itself cannot tell them apart.
        let defaults = try resolve(["--enable-pprof=false", "--experimental-memory-mlock=false", "--raft-read-timeout=5000ms",
                                    "--log-outputs=stderr", "--enable-grpc-gateway"], ["ETCD_DISCOVERY_SRV": ""])
        #expect(defaults.settings.isEmpty)
    }

    @Test func etcd36NamesOfExperimentalFlags() throws {
        #expect(try resolve(["--watch-progress-notify-interval=5s"]).settings == [.watchProgressNotifyInterval: "5s"])
        #expect(try resolve([], ["ETCD_SNAPSHOT_CATCHUP_ENTRIES": "10"]).settings == [.snapshotCatchUpEntries: "10"])
        #expect(refusal { try resolve(["--watch-progress-notify-interval=5s", "--experimental-watch-progress-notify-interval=6s"]) }
            .contains("set only one"))
    }

    @Test func corruptionChecksAndFeatureGates() throws {
        #expect(try ServerConfig(settings: [:]).initialCorruptCheck == false)
        #expect(try ServerConfig(settings: [:]).corruptCheckTimeMilliseconds == 0)
        let flags = try resolve(["--experimental-initial-corrupt-check", "--corrupt-check-time=2m"])
        #expect(flags.settings == [.initialCorruptCheck: "true", .corruptCheckTime: "2m"])
        let config = try ServerConfig(settings: flags.settings)
        #expect(config.initialCorruptCheck && config.corruptCheckTimeMilliseconds == 120_000)
        let environment = try resolve([], ["ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME": "1s", "ETCD_FEATURE_GATES": "InitialCorruptCheck=true"])
        let fromEnvironment = try ServerConfig(settings: environment.settings)
        #expect(fromEnvironment.initialCorruptCheck && fromEnvironment.corruptCheckTimeMilliseconds == 1000)
        let file = try SettingsSources.resolve(configFile: ["experimental-corrupt-check-time": .scalar("3000000000"),
                                                            "experimental-initial-corrupt-check": .scalar("true")])
        #expect(try ServerConfig(settings: file.settings).corruptCheckTimeMilliseconds == 3000)
        // Gates at etcd's defaults pass; others refuse, named; unknown gates get Kubernetes' error.
        #expect(try ServerConfig(settings: [.featureGates: "TxnModeWriteWithSharedBuffer=true,CompactHashCheck=false"]).initialCorruptCheck == false)
        #expect(refusal { try ServerConfig(settings: [.featureGates: "StopGRPCServiceOnDefrag=true"]) }
            == "--feature-gates StopGRPCServiceOnDefrag=true is not supported yet")
        #expect(refusal { try ServerConfig(settings: [.featureGates: "NoSuchGate=true"]) }.hasSuffix("unrecognized feature gate: NoSuchGate"))
        #expect(refusal { try ServerConfig(settings: [.featureGates: "InitialCorruptCheck"]) }.hasSuffix("missing bool value for InitialCorruptCheck"))
        #expect(refusal { try ServerConfig(settings: [.featureGates: "InitialCorruptCheck=true", .initialCorruptCheck: "false"]) }
            .contains("cannot specify both flags"))
    }

    @Test func compactHashCheckSettings() throws {
        let defaults = try ServerConfig(settings: [:])
        #expect(!defaults.compactHashCheck && defaults.compactHashCheckTimeMilliseconds == 60_000)
        let flags = try resolve(["--experimental-compact-hash-check-enabled", "--experimental-compact-hash-check-time=15s"])
        #expect(flags.settings == [.compactHashCheckEnabled: "true", .compactHashCheckTime: "15s"])
        let config = try ServerConfig(settings: flags.settings)
        #expect(config.compactHashCheck && config.compactHashCheckTimeMilliseconds == 15_000)
        // 3.6's spellings: the feature gate and --compact-hash-check-time.
        let gated = try ServerConfig(settings: resolve(["--feature-gates=CompactHashCheck=true", "--compact-hash-check-time=2m"]).settings)
        #expect(gated.compactHashCheck && gated.compactHashCheckTimeMilliseconds == 120_000)
        let environment = try resolve([], ["ETCD_EXPERIMENTAL_COMPACT_HASH_CHECK_ENABLED": "true"])
        #expect(try ServerConfig(settings: environment.settings).compactHashCheck)
        #expect(refusal { try ServerConfig(settings: [.featureGates: "CompactHashCheck=true", .compactHashCheckEnabled: "true"]) }
            .contains("cannot specify both flags: --experimental-compact-hash-check-enabled=true and --feature-gates=CompactHashCheck=true"))
        #expect(refusal { try ServerConfig(settings: [.compactHashCheckTime: "0s"]) }.contains("expected a duration of at least 1ms"))
        #expect(refusal { try ServerConfig(settings: [.compactHashCheckEnabled: "maybe"]) }.contains("expected true or false"))
    }

    @Test func configFileKeysAndTLSBlocks() throws {
        let file: [String: ConfigFileValue] = [
            "name": .scalar("fromfile"), "listen-client-urls": .list([.scalar("http://127.0.0.1:1"), .scalar("http://127.0.0.1:2")]),
            "wal-dir": .null, "enable-v2": .scalar("true"), "log-outputs": .list([.scalar("stderr")]),
            "grpc-keepalive-interval": .scalar("60000000000"), "grpc-keepalive-timeout": .scalar("3s"),
            // etcd's sample etcd.conf.yml: every TLS key present, all empty or false.
            "client-transport-security": .mapping(["cert-file": .null, "key-file": .scalar(""), "client-cert-auth": .scalar("false"),
                                                   "auto-tls": .scalar("false"), "allowed-cn": .list([])]),
            "peer-transport-security": .null,
        ]
        let resolved = try SettingsSources.resolve(configFile: file)
        // The sample's empty TLS values are set as given (etcd's defaults).
        #expect(resolved.settings == [.name: "fromfile", .listenClientURLs: "http://127.0.0.1:1,http://127.0.0.1:2",
                                      .grpcKeepaliveInterval: "60000000000ns", .grpcKeepaliveTimeout: "3s",
                                      .keyFile: "", .clientCertAuth: "false", .autoTLS: "false"])
        #expect(resolved.warnings == ["unrecognized config file key enable-v2 (ignored, as etcd does)"])
        let config = try ServerConfig(settings: resolved.settings)
        #expect(config.grpcKeepaliveIntervalMilliseconds == 60_000 && config.grpcKeepaliveTimeoutMilliseconds == 3_000)

        func refused(_ file: [String: ConfigFileValue]) -> String { refusal { try SettingsSources.resolve(configFile: file) } }
        // The two blocks set the TLS flags of their side.
        let tls = try SettingsSources.resolve(configFile: [
            "client-transport-security": .mapping(["cert-file": .scalar("/c.pem"), "key-file": .scalar("/k.pem"), "client-cert-auth": .scalar("true"),
                                                   "trusted-ca-file": .scalar("/ca.pem"), "crl-file": .scalar("/crl.pem")]),
            "peer-transport-security": .mapping(["auto-tls": .scalar("true"), "allowed-cn": .scalar("etcd"), "skip-client-san-verification": .scalar("true")]),
        ])
        #expect(tls.settings == [.certFile: "/c.pem", .keyFile: "/k.pem", .clientCertAuth: "true", .trustedCAFile: "/ca.pem",
                                 .clientCRLFile: "/crl.pem", .peerAutoTLS: "true", .peerCertAllowedCN: "etcd", .peerSkipClientSANVerification: "true"])
        // What the client block cannot do, and unknown keys, refuse the start.
        #expect(refused(["client-transport-security": .mapping(["allowed-cn": .scalar("x")])])
            == "config file key client-transport-security.allowed-cn is not supported yet")
        #expect(refused(["peer-transport-security": .mapping(["future-tls-knob": .scalar("x")])]).contains("peer-transport-security.future-tls-knob"))
        #expect(refused(["client-transport-security": .scalar("on")]) == "config file key client-transport-security must be a mapping of TLS settings")
        #expect(refused(["discovery-srv": .scalar("example.com")]) == "config file key discovery-srv is not supported yet")
        #expect(refused(["name": .mapping([:])]).contains("--name"))
    }
}

/// --auto-compaction-mode and --auto-compaction-retention, parsed as etcd's
/// `parseCompactionRetention` parses them.
@Suite struct AutoCompactionSettingsTests {
    func policy(_ settings: [ConfigKey: String]) throws -> AutoCompactionPolicy? {
        try ServerConfig(settings: settings).autoCompaction
    }

    func refusal(_ settings: [ConfigKey: String]) -> String {
        do { _ = try ServerConfig(settings: settings); return "started" } catch { return "\(error)" }
    }

    @Test func offByDefaultAndAtZero() throws {
        #expect(try policy([:]) == nil)
        #expect(try policy([.autoCompactionRetention: "0"]) == nil)
        #expect(try policy([.autoCompactionRetention: "0s"]) == nil)
        #expect(try policy([.autoCompactionMode: "revision", .autoCompactionRetention: "0"]) == nil)
        #expect(try ServerConfig(settings: [:]).autoCompactionRevisionCheckIntervalMilliseconds == 300_000)
    }

    @Test func periodicTakesGoDurationsOrHours() throws {
        #expect(try policy([.autoCompactionRetention: "1h"]) == .periodic(retention: .seconds(3600)))
        #expect(try policy([.autoCompactionMode: "periodic", .autoCompactionRetention: "30m"]) == .periodic(retention: .seconds(1800)))
        #expect(try policy([.autoCompactionRetention: "10s"]) == .periodic(retention: .seconds(10)))
        #expect(try policy([.autoCompactionRetention: "1.5h"]) == .periodic(retention: .seconds(5400)))
        #expect(try policy([.autoCompactionRetention: "500ms"]) == .periodic(retention: .milliseconds(500)))
        // A plain integer is hours (etcd's default unit for periodic mode).
        #expect(try policy([.autoCompactionRetention: "5"]) == .periodic(retention: .seconds(5 * 3600)))
        #expect(try policy([.autoCompactionRetention: "10000"]) == .periodic(retention: .seconds(10_000 * 3600)))
    }

    @Test func revisionTakesACount() throws {
        #expect(try policy([.autoCompactionMode: "revision", .autoCompactionRetention: "1000"]) == .revision(revisions: 1000))
        #expect(try policy([.autoCompactionMode: "revision", .autoCompactionRetention: "1"]) == .revision(revisions: 1))
    }

    @Test func badValuesRefuseToStartNamingTheFlag() {
        #expect(refusal([.autoCompactionMode: "hourly"])
            == #"invalid value "hourly" for --auto-compaction-mode: expected periodic or revision"#)
        // etcd checks the mode even with auto-compaction off.
        #expect(refusal([.autoCompactionMode: "Periodic", .autoCompactionRetention: "0"]).contains("--auto-compaction-mode"))
        for bad in ["1 hour", "-1", "-1h", "h", "1d", "", "10001", "10001h"] {
            #expect(refusal([.autoCompactionRetention: bad]).contains("for --auto-compaction-retention:"), "\(bad)")
        }
        // Revision mode counts revisions; a duration there is refused (etcd
        // 3.4 would count its nanoseconds).
        for bad in ["1h", "-5", "1.5", "many"] {
            #expect(refusal([.autoCompactionMode: "revision", .autoCompactionRetention: bad])
                == "invalid value \"\(bad)\" for --auto-compaction-retention: expected a number of revisions to keep, such as 1000 (--auto-compaction-mode revision)")
        }
    }

    @Test func flagsEnvironmentAndConfigFile() throws {
        let fromFlags = try SettingsSources.resolve(
            flags: CommandLineFlags(parsing: ["--auto-compaction-mode", "revision", "--auto-compaction-retention=100"]), environment: [:])
        #expect(fromFlags.settings == [.autoCompactionMode: "revision", .autoCompactionRetention: "100"])
        #expect(try ServerConfig(settings: fromFlags.settings).autoCompaction == .revision(revisions: 100))

        let fromEnvironment = try SettingsSources.resolve(
            flags: CommandLineFlags(parsing: []), environment: ["ETCD_AUTO_COMPACTION_MODE": "periodic", "ETCD_AUTO_COMPACTION_RETENTION": "2h"])
        #expect(fromEnvironment.warnings.isEmpty)
        #expect(try ServerConfig(settings: fromEnvironment.settings).autoCompaction == .periodic(retention: .seconds(7200)))
        #expect(ConfigKey.autoCompactionRetention.environmentVariable == "ETCD_AUTO_COMPACTION_RETENTION")

        let fromFile = try SettingsSources.resolve(configFile: ["auto-compaction-mode": .scalar("periodic"), "auto-compaction-retention": .scalar("1")])
        #expect(fromFile.warnings.isEmpty)
        #expect(try ServerConfig(settings: fromFile.settings).autoCompaction == .periodic(retention: .seconds(3600)))
        let badFile = try SettingsSources.resolve(configFile: ["auto-compaction-retention": .scalar("soon")])
        #expect(refusal(badFile.settings).contains("--auto-compaction-retention"))
    }

    @Test func goDurationStrings() {
        #expect(GoDuration.string(.seconds(3600)) == "1h0m0s")
        #expect(GoDuration.string(.seconds(90)) == "1m30s")
        #expect(GoDuration.string(.milliseconds(1500)) == "1.5s")
        #expect(GoDuration.string(.milliseconds(500)) == "500ms")
        #expect(GoDuration.string(.microseconds(250)) == "250µs")
        #expect(GoDuration.string(.nanoseconds(1_234_567)) == "1.234567ms")
        #expect(GoDuration.string(.zero) == "0s")
        #expect(GoDuration.string(.seconds(5 * 60)) == "5m0s")
        #expect(GoDuration.string(.seconds(36_000_000)) == "10000h0m0s")
    }
}

extension SettingsTests {
    /// --auth-token simple (the default) and its TTL, or jwt with etcd's
    /// options (an unknown or repeated option, a missing or unknown
    /// sign-method or a bad ttl refuse the start); --bcrypt-cost within
    /// bcrypt's 4...31.
    @Test func authSettings() throws {
        let config = try ServerConfig(settings: [.authToken: "simple", .authTokenTTL: "60", .bcryptCost: "12"])
        #expect(config.authTokenTTLSeconds == 60 && config.bcryptCost == 12 && config.jwt == nil)
        #expect(try ServerConfig(settings: [:]).authTokenTTLSeconds == 300)
        #expect(try ServerConfig(settings: [:]).bcryptCost == 10)
        let jwt = try ServerConfig(settings: [.authToken: "jwt,pub-key=a.pem,priv-key=b.pem,sign-method=RS256"]).jwt
        #expect(jwt == JWTOptions(signMethod: "RS256", publicKeyPath: "a.pem", privateKeyPath: "b.pem", ttl: .seconds(300)))
        #expect(try ServerConfig(settings: [.authToken: "jwt,priv-key=k,sign-method=ES256,ttl=1h"]).jwt?.ttl == .seconds(3600))
        for bad in ["jwt,priv-key=k", "jwt,priv-key=k,sign-method=XS1", "jwt,priv-key=k,sign-method=RS256,ttl=soon",
                    "jwt,priv-key=k,sign-method=RS256,tll=1m", "jwt,priv-key=k,priv-key=j,sign-method=RS256", "jwt,priv-key"] {
            #expect(throws: SettingsError.self, "\(bad)") { try ServerConfig(settings: [.authToken: bad]) }
        }
        #expect(throws: SettingsError.self) { try ServerConfig(settings: [.authToken: "other"]) }
        #expect(throws: SettingsError.self) { try ServerConfig(settings: [.bcryptCost: "3"]) }
        #expect(throws: SettingsError.self) { try ServerConfig(settings: [.authTokenTTL: "soon"]) }
    }
}
