import CSOPCore
import Testing

@testable import ComputePlugin

/// The queue is bounded by the bytes its tasks carry (`maxQueueBytes`), not only by count.
@Suite struct QueueBudgetTests {
    static let fn = "return data.length"

    /// A custom task whose `args` string makes it carry `bytes` bytes: its source, plus the
    /// string's JSON (with its two quotes). It returns the string's length.
    static func task(bytes: Int) -> JSONValue {
        ["task": "custom", "data": ["fn": .string(fn), "args": .string(String(repeating: "x", count: length(bytes)))]]
    }

    static func length(_ bytes: Int) -> Int { bytes - fn.utf8.count - 2 }

    @Test func inputBytesFollowTheJSON() {
        let values: [JSONValue] = [
            nil, true, false, 0, -7, 1_234_567_890_123, "", "plain", ["a": [1, 2, ["b": nil]], "c": "d"], [], [:],
            .array([.object(["k": .array([.int(Int64.min), .int(Int64.max)])])]),
        ]
        for value in values {
            #expect(value.approximateJSONBytes == value.serialized().count, "\(value.jsonString)")
        }
        #expect(JSONValue.double(0.1).approximateJSONBytes >= JSONValue.double(0.1).serialized().count)
        let job = ComputeJob(taskName: "custom", work: .script(source: "return 1", data: ["a": 1]), timeoutMilliseconds: 1) { _ in }
        #expect(job.inputBytes == 8 + 7)
    }

    @Test func waitingTasksAreBoundedInBytes() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1, maxQueueBytes: 1 << 20))
        let blocker = h.start("execute", ["task": "custom", "data": ["fn": "for (;;) {}"], "options": ["timeout": 600_000]])
        try await WorkerPoolTests.waitFor(h) { $0["busy"] == 1 }
        #expect(try await h.stats()["queuedBytes"] == 0)

        let first = h.start("execute", Self.task(bytes: 600_000))
        try await WorkerPoolTests.waitFor(h) { $0["queued"] == 1 }
        var stats = try await h.stats()
        #expect(stats["queuedBytes"] == 600_000)
        #expect(stats["maxQueueBytes"] == 1_048_576)

        // A second one would take the queue past its budget: retry later.
        let full = try #require(await h.call("execute", Self.task(bytes: 600_000)).error)
        #expect(full.code == .queueFull)
        #expect(full.retryable)
        #expect(full.message.contains("maxQueueBytes") && full.message.contains("1048576"), "\(full.message)")
        // Small ones still fit beside it.
        let small = h.start("execute", Self.task(bytes: 1000))
        try await WorkerPoolTests.waitFor(h) { $0["queued"] == 2 }
        #expect(try await h.stats()["queuedBytes"] == 601_000)

        // One larger than the whole budget can never run: not retryable.
        let huge = try #require(await h.call("execute", Self.task(bytes: 2 << 20)).error)
        #expect(huge.code == .invalidPayload)
        #expect(!huge.retryable)
        #expect(huge.message.contains("maxQueueBytes") && huge.message.contains("more than the compute queue may hold"), "\(huge.message)")

        // Cancelling a waiting task releases its bytes at once, and answers it.
        h.service.cancel(callID: first.id)
        #expect(try await h.stats()["queuedBytes"] == 1000)
        #expect(await first.outcome.value.error?.code == .timeout)

        // Starting releases them too; so nothing is counted once the queue drains.
        h.service.cancel(callID: blocker.id)
        #expect(await blocker.outcome.value.error?.code == .timeout)
        #expect(try await small.outcome.value.get()["result"] == .int(Int64(Self.length(1000))))
        stats = try await h.stats()
        #expect(stats["queuedBytes"] == 0)
        #expect(stats["queued"] == 0)
        #expect(stats["cancelled"] == 2)
        #expect(try await h.call("execute", Self.task(bytes: 600_000)).get()["result"] == .int(Int64(Self.length(600_000))))
    }

    @Test func batchTasksShareTheBudget() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1, maxQueueBytes: 1 << 20))
        let blocker = h.start("execute", ["task": "custom", "data": ["fn": "for (;;) {}"], "options": ["timeout": 600_000]])
        try await WorkerPoolTests.waitFor(h) { $0["busy"] == 1 }
        // Three 400 kB tasks queue at once (maxConcurrent 3): the third does not fit.
        let batch = h.start("batch", ["tasks": .array(Array(repeating: Self.task(bytes: 400_000), count: 3)), "options": ["maxConcurrent": 3]])
        try await WorkerPoolTests.waitFor(h) { $0["queued"] == 2 }
        #expect(try await h.stats()["queuedBytes"] == 800_000)
        h.service.cancel(callID: blocker.id)
        let value = try await batch.outcome.value.get()
        #expect(value["completed"] == 2)
        #expect(value["results"]?.arrayValue?.last?["error"]?["code"] == "QUEUE_FULL")
        #expect(try await h.stats()["queuedBytes"] == 0)
    }

    /// Cancelling a batch answers its waiting tasks at once and releases their bytes, while
    /// the worker is still busy with something else.
    @Test func cancellingABatchReleasesItsWaitingTasks() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1))
        let blocker = h.start("execute", ["task": "custom", "data": ["fn": "for (;;) {}"], "options": ["timeout": 600_000]])
        try await WorkerPoolTests.waitFor(h) { $0["busy"] == 1 }
        let batch = h.start("batch", ["tasks": .array(Array(repeating: Self.task(bytes: 300_000), count: 2))])
        try await WorkerPoolTests.waitFor(h) { $0["queued"] == 2 }
        #expect(try await h.stats()["queuedBytes"] == 600_000)
        h.service.cancel(callID: batch.id)
        var stats = try await h.stats()
        #expect(stats["queuedBytes"] == 0)
        #expect(stats["queued"] == 0)
        #expect(stats["busy"] == 1)
        h.service.cancel(callID: blocker.id)
        let value = try await batch.outcome.value.get()
        #expect(value["failed"] == 2)
        #expect(value["results"]?.arrayValue?.allSatisfy { $0["error"]?["code"] == "CANCELLED" } == true)
        #expect(await blocker.outcome.value.error?.code == .timeout)
        stats = try await h.stats()
        #expect(stats["cancelled"] == 3)
    }
}
