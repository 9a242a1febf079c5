import CSOPCore
import Glibc
import Testing

@testable import ComputePlugin

@Suite struct WorkerPoolTests {
    /// Polls `stats` until `condition` holds; fails after 30 s so a bug cannot hang the suite.
    static func waitFor(_ h: ComputeHarness, _ condition: (JSONValue) -> Bool) async throws {
        for _ in 0..<3000 {
            if condition(try await h.stats()) { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("condition not reached; stats: \(try await h.stats().jsonString)")
    }

    @Test func runawayLoopIsStoppedAndTheWorkerRecovers() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1))
        let started = monotonicMilliseconds()
        let error = try #require(await h.custom("while (true) {}", timeout: 200).error)
        let elapsed = monotonicMilliseconds() - started
        #expect(error.code == .timeout)
        #expect(error.retryable, "a task that ran out of time may succeed with more, as after the router's TIMEOUT")
        #expect(error.message.contains("200 ms"))
        // A lower bound only: upper bounds on time are flaky on shared machines. That it
        // stopped at its deadline shows in the TIMEOUT code and the timedOut count below.
        #expect(elapsed >= 200)
        #expect(try await h.custom("return 'alive'").get()["result"] == "alive")
        let stats = try await h.stats()
        #expect(stats["timedOut"] == 1)
        #expect(stats["recycled"] == 1)
    }

    @Test func hundredRunawaysLeaveFullParallelism() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 2))
        let runaway: JSONValue = ["task": "custom", "data": ["fn": "for (;;) {}"]]
        let batch = try await h.call("batch", ["tasks": .array(Array(repeating: runaway, count: 100)), "options": ["timeout": 15]]).get()
        #expect(batch["failed"] == 100)
        let codes = Set(batch["results"]?.arrayValue?.compactMap { $0["error"]?["code"]?.stringValue } ?? [])
        #expect(codes == ["TIMEOUT"])
        var stats = try await h.stats()
        #expect(stats["timedOut"] == 100)
        #expect(stats["recycled"] == 100)
        #expect(stats["alive"] == 2)

        // Both workers must be able to hold a long task at the same time.
        let first = h.start("execute", ["task": "custom", "data": ["fn": "for (;;) {}"], "options": ["timeout": 60_000]])
        let second = h.start("execute", ["task": "custom", "data": ["fn": "for (;;) {}"], "options": ["timeout": 60_000]])
        try await Self.waitFor(h) { $0["busy"] == 2 }
        h.service.cancel(callID: first.id)
        h.service.cancel(callID: second.id)
        #expect(await first.outcome.value.error?.code == .timeout)
        #expect(await second.outcome.value.error?.code == .timeout)
        stats = try await h.stats()
        #expect(stats["cancelled"] == 2)
        #expect(stats["busy"] == 0)
        #expect(try await h.custom("return 1").get()["result"] == 1)
    }

    /// Promise reactions a task leaves behind run before it answers, under its timeout: a chain
    /// of short ones used to keep the worker busy forever (each ran in a fresh VM entry, which
    /// restarts JavaScriptCore's watchdog).
    @Test func promiseReactionsRunUnderTheTaskTimeout() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1))
        let chains = [
            "Promise.resolve().then(function f() { Promise.resolve().then(f) }); return 1",
            "(async () => { for (;;) await null })(); return 1",
            "throw {toString() { Promise.resolve().then(function f() { Promise.resolve().then(f) }); return 'thrown' }}",
        ]
        for fn in chains {
            let error = try #require(await h.custom(fn, timeout: 100).error, "\(fn)")
            #expect(error.code == .timeout, "\(fn): \(error.message)")
        }
        let logged = try await h.custom("Promise.resolve(2).then(x => console.log('then', x)); (async () => { await null; console.log('awaited') })(); return 1").get()
        #expect(logged == ["result": 1, "logs": ["then 2", "awaited"]])
        let stats = try await h.stats()
        #expect(stats["timedOut"] == 3)
        #expect(stats["busy"] == 0)
    }

    @Test func promiseReactionsStopWhenTheCallIsCancelled() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1))
        let fn = "Promise.resolve().then(function f() { Promise.resolve().then(f) }); return 1"
        let call = h.start("execute", ["task": "custom", "data": ["fn": .string(fn)], "options": ["timeout": 600_000]])
        try await Self.waitFor(h) { $0["busy"] == 1 }
        h.service.cancel(callID: call.id)
        #expect(await call.outcome.value.error?.code == .timeout)
        #expect(try await h.stats()["cancelled"] == 1)
        #expect(try await h.custom("return 'alive'").get()["result"] == "alive")
    }

    @Test func routerCancellationStopsAQueuedTaskBeforeItStarts() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1))
        let blocker = h.start("execute", ["task": "custom", "data": ["fn": "for (;;) {}"], "options": ["timeout": 60_000]])
        try await Self.waitFor(h) { $0["busy"] == 1 }
        let queued = h.start("execute", ["task": "custom", "data": ["fn": "console.log('ran'); return 1"]])
        try await Self.waitFor(h) { $0["queued"] == 1 }
        h.service.cancel(callID: queued.id)
        h.service.cancel(callID: blocker.id)
        #expect(await queued.outcome.value.error?.code == .timeout)
        #expect(await blocker.outcome.value.error?.code == .timeout)
        #expect(try await h.stats()["completed"] == 0)
    }

    @Test func memoryBombIsStoppedBeforeTheCap() async throws {
        let limitMB = 256
        let h = ComputeHarness(ComputeConfiguration(workers: 2, memoryLimitMB: limitMB))
        let error = try #require(
            await h.custom("let a = []; while (true) a.push(new Array(1e6).fill(1))", timeout: 60_000).error)
        #expect(error.code == .resourceExhausted)
        #expect(error.message.contains("\(limitMB) MiB"))
        #expect(try await h.custom("return [1, 2].map(x => x * 2)").get()["result"] == [2, 4])
        let stats = try await h.stats()
        #expect(stats["memoryStops"] == 1)
        #expect(stats["recycled"] == 1)
    }

    @Test func fullQueueAnswersQueueFullRetryable() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1, maxQueue: 2))
        let blocker = h.start("execute", ["task": "custom", "data": ["fn": "for (;;) {}"], "options": ["timeout": 60_000]])
        try await Self.waitFor(h) { $0["busy"] == 1 }
        let waiting = (0..<2).map { i in h.start("execute", ["task": "custom", "data": ["fn": "return data", "args": .int(Int64(i))]]) }
        try await Self.waitFor(h) { $0["queued"] == 2 }
        let error = try #require(await h.custom("return 'one too many'").error)
        #expect(error.code == .queueFull)
        #expect(error.retryable)
        #expect(error.message.contains("maxQueue"))
        // Quick built-ins still answer inline while the queue is full.
        #expect(try await h.result("fibonacci", ["n": 10]) == "55")
        h.service.cancel(callID: blocker.id)
        #expect(await blocker.outcome.value.error?.code == .timeout)
        for (i, call) in waiting.enumerated() {
            #expect(try await call.outcome.value.get()["result"] == .int(Int64(i)))
        }
    }

    @Test func timeoutCountsExecutionNotQueueTime() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1))
        let slow = h.start(
            "execute",
            ["task": "custom", "data": ["fn": "const end = Date.now() + 600; while (Date.now() < end) {} return 'slow'"], "options": ["timeout": 30_000]])
        // One worker and a FIFO queue: the quick task waits behind the 600 ms one.
        let quick = h.start("execute", ["task": "custom", "data": ["fn": "return 'quick'"], "options": ["timeout": 300]])
        #expect(try await quick.outcome.value.get()["result"] == "quick")
        #expect(try await slow.outcome.value.get()["result"] == "slow")
    }

    @Test func tasksRunInParallelOnSeparateContexts() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 2))
        let heavy: JSONValue = ["task": "custom", "data": ["fn": "let s = 0; for (let i = 0; i < 2e6; i++) s += i; return s"]]
        let value = try await h.call("batch", ["tasks": .array(Array(repeating: heavy, count: 8))]).get()
        #expect(value["completed"] == 8)
        #expect(value["results"]?.arrayValue?.allSatisfy { $0["result"] == 1_999_999_000_000 } == true)
    }
}
