@testable import GRPCWire
import NIOHTTP2
import Testing

/// InboundWindow alone: what is given back, and when.
@Suite struct InboundFlowTests {
    /// Bytes that arrive are not given back until they are consumed; then in
    /// one WINDOW_UPDATE once half the window has gathered.
    @Test func windowReturnsOnConsumptionNotArrival() {
        var window = InboundWindow(size: 1000)
        window.received(900)
        #expect(window.available == 100)
        #expect(window.consumed(400) == nil)
        #expect(window.consumed(100) == 500)
        #expect(window.available == 600)
        #expect(window.consumed(400) == nil)
        window.received(600)
        #expect(window.available == 0)
    }

    /// A message larger than the window: the rest it needs is advanced at
    /// once, and its consumption repays the advance before giving anything
    /// back, so the peer's credit never exceeds window plus message.
    @Test func aMessageLargerThanTheWindowIsAdvancedThenRepaid() {
        var window = InboundWindow(size: 1000)
        window.received(1000)
        #expect(window.expect(1500) == 1500)
        #expect(window.expect(1500) == nil)
        window.received(1500)
        #expect(window.available == 0)
        // 2,500 consumed: 1,500 repay the advance, 1,000 come back.
        #expect(window.consumed(2500) == 1000)
        #expect(window.available == 1000)
        // Enough credit already: nothing advanced.
        #expect(window.expect(800) == nil)
    }

    /// Arrival-counted (connection windows): as before, half a window per update.
    @Test func connectionWindowReturnsOnArrival() {
        var window = InboundWindow(size: 1000)
        #expect(window.update(after: 499, on: .rootStream) == nil)
        let update = window.update(after: 1, on: .rootStream)
        guard case .windowUpdate(windowSizeIncrement: let increment)? = update?.payload else {
            Issue.record("expected a WINDOW_UPDATE, got \(String(describing: update))")
            return
        }
        #expect(increment == 500)
    }
}
