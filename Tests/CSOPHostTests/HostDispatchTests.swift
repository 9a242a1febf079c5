import CSOPCore
import CSOPHost
import CSOPTestSupport
import Synchronization
import Testing

/// The router's timeout and retry behaviour end to end through a dlopen'ed plugin.
@Suite struct HostDispatchTests {
    @Test func timeoutCancelsTheWorkInThePlugin() async throws {
        let directory = try TemporaryDirectory()
        let host = try await TestEnvironment.makeHost([PluginEntry("00-diag.conf", library: "libcsop-diag.so")], in: directory)
        let first = await host.dispatch("diag.cancelled")
        #expect(first.isOK, "\(first)")
        let before = first.data?.int64Value ?? -1
        let response = await host.dispatch("diag.sleep", ["ms": 60_000], options: RequestOptions(timeout: 50))
        #expect(response.error?.code == .timeout)
        #expect(response.error?.retryable == true)
        // The cancel reaches the plugin from the timer thread; wait for it without a clock.
        var cancelled = await host.dispatch("diag.cancelled").data?.int64Value
        for _ in 0..<6_000 where cancelled != before + 1 {
            try await Task.sleep(for: .milliseconds(5))
            cancelled = await host.dispatch("diag.cancelled").data?.int64Value
        }
        #expect(cancelled == before + 1)
        await host.shutdown()
    }

    @Test func retriesUntilTheFlakyOperationSucceeds() async throws {
        let directory = try TemporaryDirectory()
        let host = try await TestEnvironment.makeHost([PluginEntry("00-diag.conf", library: "libcsop-diag.so")], in: directory)
        // Timeouts far past what the test is about: a loaded machine may take seconds to start a task.
        let response = await host.dispatch("diag.flaky", ["key": "k1", "failures": 2], options: RequestOptions(timeout: 120_000, retry: 2))
        #expect(response.data == ["attempts": 3])
        #expect(response.duration >= 100 * 0.5 + 200 * 0.5)
        let exhausted = await host.dispatch("diag.flaky", ["key": "k2", "failures": 5], options: RequestOptions(timeout: 120_000, retry: 1))
        #expect(exhausted.error?.message == "flaky failure 2 of 5")
        await host.shutdown()
    }

    @Test func pluginErrorsPassThroughWithTheirCodes() async throws {
        let directory = try TemporaryDirectory()
        let host = try await TestEnvironment.makeHost([PluginEntry("00-diag.conf", library: "libcsop-diag.so")], in: directory)
        let patient = RequestOptions(timeout: 120_000, retry: 3)
        let response = await host.dispatch("diag.fail", ["code": "QUOTA_EXCEEDED", "message": "full", "retry": true], options: patient)
        #expect(response.error == CSOPError(ErrorCode("QUOTA_EXCEEDED"), "full", retryable: false))
        let bad = await host.dispatch("diag.sleep", ["ms": "soon"], options: patient)
        #expect(bad.error?.code == .invalidPayload)
        #expect(bad.error?.message.contains("payload.ms") == true)
        await host.shutdown()
    }

    @Test func shutdownDrainsRunningCallsAndThenRefusesNewOnes() async throws {
        let directory = try TemporaryDirectory()
        let host = try await TestEnvironment.makeHost([PluginEntry("00-diag.conf", library: "libcsop-diag.so")], in: directory)
        // Dispatched (admitted by the router) before shutdown starts, however slow the machine.
        let slow = Mutex<Response?>(nil)
        host.dispatch(Request(action: "diag.sleep", payload: ["ms": 100], options: RequestOptions(timeout: 120_000))) { response in
            slow.withLock { $0 = response }
        }
        await host.shutdown(gracePeriod: 120_000)
        #expect(slow.withLock { $0 }?.isOK == true, "\(String(describing: slow.withLock { $0 }))")
        #expect(await host.dispatch("diag.noop").error?.code == .notInitialized)
    }

    @Test func hostInfoDescribesTheHostAndItsPlugins() async throws {
        let directory = try TemporaryDirectory()
        let host = try await TestEnvironment.makeHost([PluginEntry("00-diag.conf", library: "libcsop-diag.so")], in: directory)
        let info = await host.info()
        #expect(info["abiVersion"] == .int(1))
        #expect(info["version"] == .string(CSOPHost.version))
        let names = info["capabilities"]?.arrayValue?.compactMap { $0["name"]?.stringValue }
        #expect(names == ["host", "diag"])
        await host.shutdown()
    }
}
