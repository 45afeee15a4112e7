@testable import EtcdAPI
import EtcdServer
import NIOCore
import Testing

/// etcd's keepalive flags reach the wire server as etcd hands them to grpc-go.
@Suite struct ClientListenerKeepaliveTests {
    @Test func etcdDefaults() {
        let keepalive = ClientListener.keepalive(ServerConfig())
        #expect(keepalive.minTime == .seconds(5))
        #expect(keepalive.interval == .hours(2))
        #expect(keepalive.timeout == .seconds(20))
    }

    @Test func givenValues() {
        var config = ServerConfig()
        config.grpcKeepaliveMinTimeMilliseconds = 1500
        config.grpcKeepaliveIntervalMilliseconds = 60_000
        config.grpcKeepaliveTimeoutMilliseconds = 3000
        let keepalive = ClientListener.keepalive(config)
        #expect(keepalive.minTime == .milliseconds(1500))
        #expect(keepalive.interval == .seconds(60))
        #expect(keepalive.timeout == .seconds(3))
    }

    /// Zero: grpc-go's own defaults (enforcement at 5 minutes; no server
    /// pings unless both interval and timeout are set).
    @Test func zeroLeavesGrpcGoDefaults() {
        var config = ServerConfig()
        config.grpcKeepaliveMinTimeMilliseconds = 0
        config.grpcKeepaliveTimeoutMilliseconds = 0
        let keepalive = ClientListener.keepalive(config)
        #expect(keepalive.minTime == .minutes(5))
        #expect(keepalive.interval == nil)
    }
}
