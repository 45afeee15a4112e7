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
