import EtcdServer
import Testing

@Suite struct ServerConfigTests {
    @Test func dataDirDefaultsToNameDotEtcd() {
        #expect(ServerConfig().dataDir == "default.etcd")
        #expect(ServerConfig(name: "infra1").dataDir == "infra1.etcd")
        let config = ServerConfig(name: "x", dataDir: "/var/lib/etcd")
        #expect(config.walDir == "/var/lib/etcd/member/wal")
        #expect(config.backendPath == "/var/lib/etcd/member/snap/db")
    }

    @Test func parsesListenURLs() throws {
        let v4 = try ListenAddress(parsing: "http://127.0.0.1:2379")
        #expect(v4 == ListenAddress(scheme: .http, host: "127.0.0.1", port: 2379))
        let v6 = try ListenAddress(parsing: "https://[::1]:2380/")
        #expect(v6 == ListenAddress(scheme: .https, host: "::1", port: 2380))
        let named = try ListenAddress(parsing: "HTTP://localhost:12379")
        #expect(named.host == "localhost" && named.scheme == .http)
    }

    @Test(arguments: ["127.0.0.1:2379", "ftp://127.0.0.1:21", "http://127.0.0.1", "http://127.0.0.1:99999", "http://:2379", "http://[::1:2379"])
    func rejectsBadURLs(_ url: String) {
        #expect(throws: ConfigError.self) { try ListenAddress(parsing: url) }
    }
}

@Suite struct MemberIdentityTests {
    /// The ids the real etcd 3.4 gives a default single member
    /// (`etcd` with no flags: peer URL http://localhost:2380, token etcd-cluster).
    @Test func defaultMemberMatchesEtcd() {
        let member = MemberIdentity.memberID(peerURLs: ["http://localhost:2380"], clusterToken: "etcd-cluster")
        #expect(String(member, radix: 16) == "8e9e05c52164694d")
        #expect(String(MemberIdentity.clusterID(memberIDs: [member]), radix: 16) == "cdf818194e3a8c32")
    }

    @Test func peerURLOrderDoesNotMatterButTokenDoes() {
        let a = MemberIdentity.memberID(peerURLs: ["http://b:2380", "http://a:2380"], clusterToken: "t")
        let b = MemberIdentity.memberID(peerURLs: ["http://a:2380", "http://b:2380"], clusterToken: "t")
        #expect(a == b)
        #expect(a != MemberIdentity.memberID(peerURLs: ["http://a:2380", "http://b:2380"], clusterToken: "u"))
        #expect(MemberIdentity.clusterID(memberIDs: [1, 2]) == MemberIdentity.clusterID(memberIDs: [2, 1]))
    }
}
