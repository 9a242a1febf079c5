import CSOPCore
import CSOPHost
import CSOPTestSupport
import Testing

/// The built libcsop-compute.so, loaded by the real host with dlopen.
@Suite struct ComputePluginHostTests {
    func withHost(config: JSONObject = ["workers": 2], _ body: (CSOPHost) async throws -> Void) async throws {
        let directory = try TemporaryDirectory("csop-compute")
        let host = try await TestEnvironment.makeHost([PluginEntry("30-compute.conf", library: "libcsop-compute.so", config: config)], in: directory)
        #expect(host.failures.isEmpty, "\(host.failures)")
        try await body(host)
        await host.shutdown()
    }

    /// Generous router timeouts: a loaded machine can take seconds to start the pool.
    static let patient = RequestOptions(timeout: 60_000, retry: 0)

    @Test func executeAndBatchThroughTheHost() async throws {
        try await withHost { host in
            let add = await host.dispatch(
                Request(action: "compute.execute", payload: ["task": "custom", "data": ["fn": "return data.a + data.b", "args": ["a": 1, "b": 2]]], options: Self.patient))
            #expect(add.data == ["result": 3])
            let batch = await host.dispatch(Request(action: "compute.batch", payload: ["tasks": [["task": "fibonacci", "data": ["n": 20]], ["task": "nope"]]]))
            #expect(batch.data?["completed"] == 1)
            #expect(batch.data?["results"]?.arrayValue?.first?["result"] == "6765")
            let unknown = await host.dispatch(Request(action: "compute.execute", payload: ["task": "nope"]))
            #expect(unknown.error?.code == "INVALID_TASK")
        }
    }

    @Test func routerTimeoutStopsTheScript() async throws {
        try await withHost(config: ["workers": 1]) { host in
            // Once a task has run, the worker's sandbox is ready and the next task starts at once.
            #expect(await host.dispatch(Request(action: "compute.execute", payload: ["task": "custom", "data": ["fn": "return 1"]], options: Self.patient)).isOK)
            let response = await host.dispatch(
                Request(action: "compute.execute", payload: ["task": "custom", "data": ["fn": "for (;;) {}"], "options": ["timeout": 600_000]], options: RequestOptions(timeout: 300, retry: 0)))
            #expect(response.error?.code == .timeout)
            // The plugin completes the cancelled call once the watchdog has stopped the script.
            for _ in 0..<3000 {
                let stats = await host.dispatch(Request(action: "compute.stats")).data
                if stats?["cancelled"] == 1 && stats?["busy"] == 0 { break }
                try await Task.sleep(for: .milliseconds(10))
            }
            let stats = await host.dispatch(Request(action: "compute.stats")).data
            #expect(stats?["cancelled"] == 1)
            #expect(stats?["busy"] == 0)
            #expect(stats?["recycled"] == 1)
        }
    }

    /// The host refuses JSON nested deeper than 512 levels (PLUGIN_FAULT); the plugin answers
    /// a result nested too deep as the task's error first, and an answer at its limit passes.
    @Test func deeplyNestedResultsAreTheTasksError() async throws {
        try await withHost { host in
            let deep = "let x = 0; for (let i = 0; i < data; i++) x = [x]; return x"
            let patient = Self.patient
            for levels in [513, 600, 5000] {
                let response = await host.dispatch(
                    Request(action: "compute.execute", payload: ["task": "custom", "data": ["fn": .string(deep), "args": .int(Int64(levels))]], options: patient))
                #expect(response.error?.code == "EXECUTION_FAILED", "\(levels) levels: \(String(describing: response.error))")
                #expect(response.error?.message.contains("deeper than 500 levels") == true)
            }
            let execute = await host.dispatch(
                Request(action: "compute.execute", payload: ["task": "custom", "data": ["fn": .string(deep), "args": 500]], options: patient))
            #expect(execute.isOK, "\(String(describing: execute.error))")
            let batch = await host.dispatch(
                Request(
                    action: "compute.batch", payload: ["tasks": [["task": "custom", "data": ["fn": .string(deep), "args": 500]], ["task": "custom", "data": ["fn": .string(deep), "args": 700]]]],
                    options: patient))
            #expect(batch.isOK, "\(String(describing: batch.error))")
            #expect(batch.data?["completed"] == 1)
            #expect(batch.data?["results"]?.arrayValue?.last?["error"]?["code"] == "EXECUTION_FAILED")
        }
    }

    @Test func badConfigIsALoadFailure() async throws {
        let directory = try TemporaryDirectory("csop-compute")
        let host = try await TestEnvironment.makeHost([PluginEntry("30-compute.conf", library: "libcsop-compute.so", config: ["wokers": 2])], in: directory)
        #expect(host.failures.first?.description.contains("config.wokers") == true, "\(host.failures)")
        await host.shutdown()
    }
}
