import CSOPCore
import Synchronization
import Testing

@testable import ComputePlugin

/// The memory cap counts each script's own JavaScriptCore VM, not the process.
@Suite struct MemoryCapTests {
    /// Fails on a JavaScriptCore whose VM cannot be measured (the cap then counts process RSS):
    /// add its `offsetof(JSC::VM, heap)` to `JavaScriptCoreHeap.heapOffsets`.
    @Test func thisJavaScriptCoreVMCanBeMeasured() throws {
        if case .unavailable(let reason) = JavaScriptCoreHeap.probe { Issue.record("\(reason)") }
        let watch = ExecutionWatch(memoryLimitBytes: 512 << 20)
        #expect(!watch.countsProcessMemory)
        let sandbox = try JSSandbox(watch: watch, maxConsoleChars: 0)
        let fresh = try #require(sandbox.heapBytes())
        // A fresh sandbox (intrinsics, prelude) is small beside the smallest cap, 16 MiB.
        #expect(fresh < 8 << 20, "\(fresh)")
        _ = try sandbox.run(source: "globalThis.keep = new Array(4e6).fill(1.5); return 1", data: nil, maxResultBytes: 100, watch: watch).get()
        // 4 million doubles take 32 MB of the VM's heap.
        #expect(try #require(sandbox.heapBytes()) >= fresh + (30 << 20))
    }

    @Test func otherAllocationsDoNotStopAScriptButItsOwnDo() async throws {
        try #require(JavaScriptCoreHeap.shared != nil, "the cap counts process RSS on this JavaScriptCore")
        let h = ComputeHarness(ComputeConfiguration(workers: 2, memoryLimitMB: 512))
        let counters = h.service.pool.stats
        let spinner = h.start("execute", ["task": "custom", "data": ["fn": "for (;;) {}"], "options": ["timeout": 600_000]])
        try await WorkerPoolTests.waitFor(h) { $0["busy"] == 1 }

        // 600 MB written by the test itself: the process grows past the script's 512 MiB cap.
        let ballast = [UInt8](repeating: 1, count: 600 << 20)
        let before = counters.memoryChecks.load(ordering: .relaxed)
        for _ in 0..<3000 where counters.memoryChecks.load(ordering: .relaxed) < before + 3 {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(counters.memoryChecks.load(ordering: .relaxed) >= before + 3, "the watchdog did not look at the running script")
        var stats = try await h.stats()
        #expect(stats["memoryStops"] == 0)
        #expect(stats["busy"] == 1)

        // With the ballast still alive, a script's own allocations are stopped at its cap.
        let bomb = try #require(await h.custom("let a = []; while (true) a.push(new Array(1e6).fill(1))", timeout: 60_000).error)
        #expect(bomb.code == .resourceExhausted)
        #expect(bomb.message.contains("512 MiB"), "\(bomb.message)")
        #expect(bomb.message.contains("JavaScript heap"), "\(bomb.message)")
        #expect(ballast[ballast.count - 1] == 1)

        h.service.cancel(callID: spinner.id)
        #expect(await spinner.outcome.value.error?.code == .timeout)
        stats = try await h.stats()
        #expect(stats["memoryStops"] == 1)
        #expect(stats["cancelled"] == 1)
    }

    /// A task's garbage does not count against the next task on that worker: a worker whose VM
    /// holds more than an eighth of the cap after a task starts the next in a fresh one.
    @Test func aHeavyTaskLeavesAFreshVMBehind() async throws {
        try #require(JavaScriptCoreHeap.shared != nil, "the cap counts process RSS on this JavaScriptCore")
        let h = ComputeHarness(ComputeConfiguration(workers: 1, memoryLimitMB: 64))
        // 5 × 8 MB of garbage, under the cap, over an eighth of it.
        let heavy = "for (let i = 0; i < 5; i++) new Array(1e6).fill(i); return 'heavy'"
        #expect(try await h.custom(heavy).get()["result"] == "heavy")
        #expect(try await h.stats()["recycled"] == 1)
        #expect(try await h.custom("return 'light'").get()["result"] == "light")
        #expect(try await h.stats()["recycled"] == 1)
    }
}
