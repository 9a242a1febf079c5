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

    @Test func tasksListsBuiltins() async throws {
        let value = try await h.call("tasks", [:]).get()
        #expect(value["builtin"] == ["custom", "factorial", "fibonacci", "hash_sha256", "isPrime", "sum"])
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
