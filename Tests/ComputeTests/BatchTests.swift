import CSOPCore
import Testing

@testable import ComputePlugin

@Suite struct BatchTests {
    let h = ComputeHarness()

    @Test func resultsComeBackInInputOrder() async throws {
        var tasks: [JSONValue] = []
        for i in 0..<40 {
            switch i % 4 {
            case 0: tasks.append(["task": "fibonacci", "data": ["n": .int(Int64(i))]])
            case 1: tasks.append(["task": "custom", "data": ["fn": "let s = 0; for (let k = 0; k < data * 1000; k++) s++; return data", "args": .int(Int64(40 - i))]])
            case 2: tasks.append(["task": "isPrime", "data": ["n": .int(Int64(i + 1))]])
            default: tasks.append(["task": "sum", "data": ["numbers": [.int(Int64(i)), 1]]])
            }
        }
        let value = try await h.call("batch", ["tasks": .array(tasks), "options": ["maxConcurrent": 3]]).get()
        #expect(value["total"] == 40)
        #expect(value["completed"] == 40)
        #expect(value["failed"] == 0)
        let results = try #require(value["results"]?.arrayValue)
        #expect(results.count == 40)
        #expect(results[0]["result"] == "0")
        #expect(results[1]["result"] == 39)
        #expect(results[2]["result"] == true)
        #expect(results[3]["result"] == 4)
        #expect(results[37]["result"] == 3)
        #expect(results[38]["result"] == false)
        #expect(results.allSatisfy { $0["status"] == "fulfilled" })
        #expect(results.map { $0["task"] } == tasks.map { $0["task"] })
    }

    @Test func failuresAreRejectedEntriesWithoutFailFast() async throws {
        let value = try await h.call(
            "batch",
            [
                "tasks": [
                    ["task": "custom", "data": ["fn": "throw new Error('first')"]],
                    ["task": "fibonacci", "data": ["n": -1]],
                    ["task": "nope", "data": [:]],
                    ["task": "fibonacci", "data": ["n": 12]],
                ]
            ]
        ).get()
        #expect(value["total"] == 4)
        #expect(value["completed"] == 1)
        #expect(value["failed"] == 3)
        let results = try #require(value["results"]?.arrayValue)
        #expect(results[0]["status"] == "rejected")
        #expect(results[0]["error"]?["code"] == "EXECUTION_FAILED")
        #expect(results[1]["error"]?["code"] == "INVALID_PAYLOAD")
        #expect(results[2]["error"]?["code"] == "INVALID_TASK")
        #expect(results[2]["error"]?["retry"] == false)
        #expect(results[3] == ["status": "fulfilled", "task": "fibonacci", "result": "144"])
    }

    @Test func failFastCancelsWhatHasNotStarted() async throws {
        var tasks: [JSONValue] = [["task": "custom", "data": ["fn": "throw new Error('stop here')"]]]
        tasks += Array(repeating: ["task": "custom", "data": ["fn": "return 1"]], count: 20)
        let value = try await h.call("batch", ["tasks": .array(tasks), "options": ["failFast": true, "maxConcurrent": 1]]).get()
        #expect(value["total"] == 21)
        #expect(value["completed"] == 0)
        #expect(value["failed"] == 21)
        let results = try #require(value["results"]?.arrayValue)
        #expect(results[0]["error"]?["code"] == "EXECUTION_FAILED")
        #expect(results.dropFirst().allSatisfy { $0["error"]?["code"] == "CANCELLED" })
        #expect(results[1]["error"]?["message"]?.stringValue?.contains("failFast") == true)
    }

    @Test func failFastLetsRunningTasksFinish() async throws {
        let tasks: [JSONValue] = [
            ["task": "custom", "data": ["fn": "const end = Date.now() + 300; while (Date.now() < end) {} return 'finished'"]],
            ["task": "custom", "data": ["fn": "throw new Error('fails while the first runs')"]],
        ]
        let value = try await h.call("batch", ["tasks": .array(tasks), "options": ["failFast": true, "maxConcurrent": 2]]).get()
        let results = try #require(value["results"]?.arrayValue)
        #expect(results[0]["result"] == "finished")
        #expect(results[1]["error"]?["code"] == "EXECUTION_FAILED")
    }

    @Test func emptyBatch() async throws {
        #expect(try await h.call("batch", ["tasks": []]).get() == ["total": 0, "completed": 0, "failed": 0, "results": []])
    }

    @Test func malformedBatches() async throws {
        #expect(await h.error("batch", [:])?.message.contains("payload.tasks is required") == true)
        #expect(await h.error("batch", ["tasks": [1]])?.message.contains("payload.tasks[0] must be an object") == true)
        #expect(await h.error("batch", ["tasks": [["data": [:]]]])?.message.contains("payload.tasks[0].task is required") == true)
        #expect(await h.error("batch", ["tasks": [["task": "sum", "x": 1]]])?.message.contains("unknown field payload.tasks[0].x") == true)
        #expect(await h.error("batch", ["tasks": [], "options": ["maxConcurrent": 0]])?.message.contains("payload.options.maxConcurrent") == true)
        #expect(await h.error("batch", ["tasks": [], "options": ["failFast": "yes"]])?.message.contains("payload.options.failFast") == true)
        let tooMany = JSONValue.array(Array(repeating: ["task": "sum", "data": ["numbers": []]], count: 10_001))
        #expect(await h.error("batch", ["tasks": tooMany])?.message.contains("the limit is 10000") == true)
    }

    @Test func cancellingABatchStopsItsTasks() async throws {
        let single = ComputeHarness(ComputeConfiguration(workers: 1))
        let tasks = JSONValue.array(Array(repeating: ["task": "custom", "data": ["fn": "for (;;) {}"]], count: 5))
        let call = single.start("batch", ["tasks": tasks, "options": ["timeout": 60_000]])
        try await WorkerPoolTests.waitFor(single) { $0["busy"] == 1 }
        single.service.cancel(callID: call.id)
        let value = try await call.outcome.value.get()
        #expect(value["failed"] == 5)
        #expect(value["results"]?.arrayValue?.allSatisfy { $0["error"]?["code"] == "CANCELLED" } == true)
    }

    /// Issue 10: the host's timer can cancel a call while its payload is still being read, before
    /// the plugin registered it; such a call must never start (it used to run to its own
    /// timeout, unwatched).
    @Test(arguments: ["execute", "batch"])
    func aCancelThatArrivesFirstKeepsTheCallFromStarting(operation: String) async throws {
        let single = ComputeHarness(ComputeConfiguration(workers: 1))
        let spin: JSONValue = ["task": "custom", "data": ["fn": "for (;;) {}"], "options": ["timeout": 600_000]]
        let payload: JSONValue = operation == "execute" ? spin : ["tasks": [["task": "custom", "data": ["fn": "for (;;) {}"]]], "options": ["timeout": 600_000]]
        let id = single.newCallID()
        single.service.cancel(callID: id)
        let error = try #require(await single.start(operation, payload, id: id).outcome.value.error)
        #expect(error.code == .timeout)
        #expect(error.message.contains("before it started"), "\(error.message)")
        // Nothing runs: the worker is free for the next task.
        #expect(try await single.stats()["busy"] == 0)
        #expect(try await single.custom("return 7").get()["result"] == 7)
    }
}
