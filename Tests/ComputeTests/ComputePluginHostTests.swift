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

    @Test func executeAndBatchThroughTheHost() async throws {
        try await withHost { host in
            let add = await host.dispatch(Request(action: "compute.execute", payload: ["task": "custom", "data": ["fn": "return data.a + data.b", "args": ["a": 1, "b": 2]]]))
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
            // A generous timeout: setting the sandbox up can take seconds on a loaded machine.
            #expect(
                await host.dispatch(
                    Request(action: "compute.execute", payload: ["task": "custom", "data": ["fn": "return 1"]], options: RequestOptions(timeout: 120_000))
                ).isOK)
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

    @Test func badConfigIsALoadFailure() async throws {
        let directory = try TemporaryDirectory("csop-compute")
        let host = try await TestEnvironment.makeHost([PluginEntry("30-compute.conf", library: "libcsop-compute.so", config: ["wokers": 2])], in: directory)
        #expect(host.failures.first?.description.contains("config.wokers") == true, "\(host.failures)")
        await host.shutdown()
    }
}
