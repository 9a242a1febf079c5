import CSOPPluginABI
import Foundation
import Synchronization
import Testing

@testable import CSOPPluginKit

/// Log lines and events that reached the table below.
private let reached = Atomic<Int>(0)

/// A host table that counts what reaches it.
private func countingTable() -> UnsafeMutablePointer<csop_host_api> {
    let table = UnsafeMutablePointer<csop_host_api>.allocate(capacity: 1)
    table.initialize(
        to: csop_host_api(
            struct_size: UInt32(MemoryLayout<csop_host_api>.size), abi_version: CSOP_ABI_VERSION, host_context: nil,
            log: { _, _, _, _ in reached.add(1, ordering: .relaxed) },
            emit_event: { _, _, _ in reached.add(1, ordering: .relaxed) }))
    return table
}

/// After destroy, the host's table is gone: a plugin's background work that still logs or
/// emits (a purge round, a reconnect loop) must not reach it. `PluginHost.close()`, which
/// destroy calls after the plugin's shutdown, makes later calls do nothing and waits for the
/// calls under way.
@Suite(.serialized) struct PluginHostGateTests {
    @Test func afterCloseNothingReachesTheTable() throws {
        let table = countingTable()
        defer { table.deallocate() }
        let host = try PluginHost(api: table)
        let before = reached.load(ordering: .relaxed)
        host.log(.info, "open")
        host.emit(["open": true])
        #expect(reached.load(ordering: .relaxed) == before + 2)
        host.close()
        host.log(.info, "closed")
        host.emit(["closed": true])
        host.emit(rawJSON: Array(#"{"closed":true}"#.utf8))
        #expect(reached.load(ordering: .relaxed) == before + 2)
    }

    /// Threads logging while the plugin is destroyed: once `close()` returns, the count never
    /// moves again, though the threads go on calling (1,000 more calls each after it).
    @Test func closeWaitsForCallsUnderWayAndStopsTheRest() throws {
        let table = countingTable()
        defer { table.deallocate() }
        let host = try PluginHost(api: table)
        let closed = Atomic<Bool>(false)
        let finished = Atomic<Int>(0)
        let threads = (0..<2).map { _ in
            Thread {
                while !closed.load(ordering: .acquiring) { host.log(.debug, "background") }
                for _ in 0..<1000 { host.log(.debug, "after close") }
                finished.add(1, ordering: .releasing)
            }
        }
        let before = reached.load(ordering: .relaxed)
        for thread in threads { thread.start() }
        while reached.load(ordering: .relaxed) < before + 100 { sched_yield() }
        host.close()
        let atClose = reached.load(ordering: .acquiring)
        closed.store(true, ordering: .releasing)
        while finished.load(ordering: .acquiring) < threads.count { sched_yield() }
        #expect(reached.load(ordering: .acquiring) == atClose)
    }
}
