import CSOPCore
import Testing

@testable import ComputePlugin

@Suite struct RegistryTests {
    let h = ComputeHarness()

    @Test func registerCallReplaceUnregister() async throws {
        #expect(try await h.call("register", ["name": "double", "fn": "return data.x * 2"]).get() == ["name": "double", "replaced": false])
        #expect(try await h.result("double", ["x": 21]) == 42)
        let batch = try await h.call("batch", ["tasks": [["task": "double", "data": ["x": 1]], ["task": "double", "data": ["x": 2]]]]).get()
        #expect(batch["results"]?.arrayValue?.map { $0["result"] } == [2, 4])
        #expect(try await h.call("register", ["name": "double", "fn": "return data.x * 3"]).get()["replaced"] == true)
        // Several calls so both workers pick up the replacement.
        for _ in 0..<6 { #expect(try await h.result("double", ["x": 2]) == 6) }
        #expect(try await h.call("tasks", [:]).get()["registered"] == ["double"])
        #expect(try await h.call("unregister", ["name": "double"]).get() == ["name": "double", "removed": true])
        #expect(try await h.call("unregister", ["name": "double"]).get()["removed"] == false)
        #expect(await h.error("execute", ["task": "double", "data": ["x": 1]])?.code == .invalidTask)
    }

    @Test func aRegisteredFunctionMayReturnAPromise() async throws {
        let fn = "return (async () => { const base = await Promise.resolve(10); if (data < 0) throw new Error('negative'); return base + data })()"
        #expect(try await h.call("register", ["name": "later", "fn": .string(fn)]).get()["replaced"] == false)
        #expect(try await h.result("later", 5) == 15)
        let batch = try await h.call("batch", ["tasks": [["task": "later", "data": 1], ["task": "later", "data": -1]]]).get()
        #expect(batch["results"]?.arrayValue?.first?["result"] == 11)
        let failed = try #require(batch["results"]?.arrayValue?.last?["error"])
        #expect(failed["code"] == "EXECUTION_FAILED")
        #expect(failed["message"]?.stringValue?.contains("was rejected: Error: negative") == true, "\(failed)")
    }

    @Test func registeredSourceIsBoundedInBytes() async throws {
        let small = ComputeHarness(ComputeConfiguration(workers: 1, maxRegisteredBytes: 4096))
        func body(_ size: Int) -> JSONValue { .string("return 1" + String(repeating: " ", count: size - 8)) }
        #expect(try await small.call("register", ["name": "a", "fn": body(1500)]).get()["replaced"] == false)
        #expect(try await small.call("register", ["name": "b", "fn": body(1500)]).get()["replaced"] == false)
        let error = try #require(await small.error("register", ["name": "c", "fn": body(1500)]))
        #expect(error.code == .quotaExceeded)
        #expect(!error.retryable)
        #expect(error.message.contains("maxRegisteredBytes"), "\(error.message)")
        #expect(error.message.contains("4096"), "\(error.message)")
        #expect(try await small.call("tasks", [:]).get()["registered"] == ["a", "b"])
        // Replacing counts the new source instead of the old one.
        #expect(await small.error("register", ["name": "b", "fn": body(2700)])?.code == .quotaExceeded)
        #expect(try await small.call("register", ["name": "b", "fn": body(2500)]).get()["replaced"] == true)
        #expect(try await small.stats()["registeredBytes"] == 4000)
        // Unregistering frees its bytes.
        #expect(try await small.call("unregister", ["name": "a"]).get()["removed"] == true)
        #expect(try await small.call("register", ["name": "c", "fn": body(1500)]).get()["replaced"] == false)
        #expect(try await small.stats()["registeredBytes"] == 4000)
        #expect(try await small.result("c", .null) == 1)
    }

    @Test func tasksListsBuiltins() async throws {
        let value = try await h.call("tasks", [:]).get()
        #expect(value["builtin"] == ["custom", "wasm", "factorial", "fibonacci", "hash_sha256", "isPrime", "sum"])
        #expect(value["registered"] == [])
    }

    @Test func registeredFunctionErrorsAndConsole() async throws {
        _ = try await h.call("register", ["name": "noisy", "fn": "console.log('got', data); if (data < 0) throw new RangeError('negative'); return data"]).get()
        #expect(try await h.call("execute", ["task": "noisy", "data": 3]).get() == ["result": 3, "logs": ["got 3"]])
        let error = try #require(await h.error("execute", ["task": "noisy", "data": -1]))
        #expect(error.code == .executionFailed)
        #expect(error.message.contains("RangeError: negative"))
    }

    @Test func badRegistrations() async throws {
        let syntax = try #require(await h.error("register", ["name": "broken", "fn": "return )"]))
        #expect(syntax.code == .invalidPayload)
        #expect(syntax.message.contains("SyntaxError"))
        #expect(try await h.call("tasks", [:]).get()["registered"] == [])
        #expect(await h.error("register", ["name": "fibonacci", "fn": "return 1"])?.message.contains("built-in") == true)
        #expect(await h.error("register", ["name": "custom", "fn": "return 1"])?.code == .invalidPayload)
        #expect(await h.error("register", ["name": "1abc", "fn": "return 1"])?.code == .invalidPayload)
        #expect(await h.error("register", ["name": "a b", "fn": "return 1"])?.code == .invalidPayload)
        #expect(await h.error("register", ["name": .string(String(repeating: "a", count: 65)), "fn": "return 1"])?.code == .invalidPayload)
        #expect(await h.error("register", ["name": "x"])?.message.contains("payload.fn is required") == true)
        #expect(await h.error("register", ["fn": "return 1"])?.message.contains("payload.name is required") == true)
        #expect(await h.error("unregister", [:])?.code == .invalidPayload)
        #expect(await h.error("tasks", ["x": 1])?.code == .invalidPayload)
    }
}
