import GRPCWire
import Testing

@testable import EtcdAPI

/// Authenticate's budget is kept per client host, read from the peer
/// description the gRPC layer gives each call.
@Suite struct AuthenticateClientTests {
    @Test func theHostOfEachPeerDescription() {
        #expect(WireRouter.clientHost("ipv4:127.0.0.1:51234") == "127.0.0.1")
        #expect(WireRouter.clientHost("ipv4:10.1.2.3:1") == "10.1.2.3")
        #expect(WireRouter.clientHost("ipv6:[::1]:51234") == "::1")
        #expect(WireRouter.clientHost("ipv6:[fe80::1%eth0]:2379") == "fe80::1%eth0")
        #expect(WireRouter.clientHost("unix:/tmp/sock") == nil)
        #expect(WireRouter.clientHost("unknown") == nil)
    }
}
