import CSOPCore
import CSOPPluginKit
import Synchronization
import Testing

@Suite struct CallTaskRegistryTests {
    @Test func fastTasksLeaveNoEntryBehind() async throws {
        let registry = CallTaskRegistry()
        let finished = Atomic<Int>(0)
        for id in 0..<2_000 as Range<UInt64> {
            registry.run(id) { finished.add(1, ordering: .relaxed) }
        }
        while finished.load(ordering: .relaxed) < 2_000 { await Task.yield() }
        // A task removes itself after its body: give the last ones a moment to get there.
        var spins = 0
        while registry.count > 0 && spins < 10_000 {
            await Task.yield()
            spins += 1
        }
        #expect(registry.count == 0)
    }

    @Test func cancelReachesTheTaskOfThatCallOnly() async throws {
        let registry = CallTaskRegistry()
        let outcomes = Mutex<[UInt64: Bool]>([:])
        for id in [1, 2] as [UInt64] {
            registry.run(id) {
                let cancelled = (try? await Task.sleep(for: .seconds(30))) == nil
                outcomes.withLock { $0[id] = cancelled }
            }
        }
        #expect(registry.cancel(1))
        #expect(!registry.cancel(99))  // Not registered: remembered for when it is.
        while outcomes.withLock({ $0[1] }) == nil { try await Task.sleep(for: .milliseconds(1)) }
        #expect(outcomes.withLock { $0[1] } == true)
        #expect(outcomes.withLock { $0[2] } == nil)
        registry.cancelAll()
        while outcomes.withLock({ $0[2] }) == nil { try await Task.sleep(for: .milliseconds(1)) }
        #expect(outcomes.withLock { $0[2] } == true)
    }
}
