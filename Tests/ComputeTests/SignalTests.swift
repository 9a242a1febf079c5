import CSOPCore
import CSOPTestSupport
import Foundation
import Testing

@testable import ComputePlugin

/// JavaScriptCore's thread suspend/resume signal is moved off SIGUSR1, so a SIGUSR1 or SIGUSR2
/// from outside never reaches a JavaScriptCore handler that crashes on it.
@Suite struct SignalTests {
    @Test func javaScriptCoreSuspendsThreadsWithARealTimeSignal() async throws {
        // Any service starts the set-up; the environment of `swift test` does not set JSC_SIGNAL_FOR_GC.
        let h = ComputeHarness(ComputeConfiguration(workers: 1))
        #expect(try await h.custom("return 1").get()["result"] == 1)
        var action = sigaction()
        switch h.service.signalSetup {
        case .moved(let signal):
            #expect(signal >= __libc_current_sigrtmin() && signal <= __libc_current_sigrtmax())
            #expect(sigaction(signal, nil, &action) == 0)
            #expect(action.sa_flags & SA_SIGINFO != 0, "JavaScriptCore's handler is installed on signal \(signal)")
        case .movedEarlier:
            // This test process also dlopens libcsop-compute.so (the host tests): that copy of
            // the plugin may have moved the signal first.
            let handled = (__libc_current_sigrtmin()...__libc_current_sigrtmax()).filter {
                sigaction($0, nil, &action) == 0 && action.sa_flags & SA_SIGINFO != 0
            }
            #expect(!handled.isEmpty, "no real-time signal has JavaScriptCore's handler")
        default:
            Issue.record("the signal was not moved: \(h.service.signalSetup)")
        }
        #expect(sigaction(SIGUSR1, nil, &action) == 0)
        #expect(action.__sigaction_handler.sa_handler == nil, "SIGUSR1 keeps its default action")
    }

    /// Issue 10: `kill -USR1` made `csop run` with compute loaded die with SIGSEGV inside
    /// JavaScriptCore. The CLI does not handle SIGUSR1 or SIGUSR2, so either may end the process
    /// by its default action; what must not happen is a crash (SIGSEGV, status 139 in a shell).
    @Test(arguments: [SIGUSR1, SIGUSR2])
    func userSignalsDoNotCrashAHostRunningCompute(_ signal: Int32) async throws {
        let directory = try TemporaryDirectory("csop-compute-signals")
        let plugins = try directory.writePlugins([PluginEntry("30-compute.conf", library: "libcsop-compute.so", config: ["workers": 2])])
        // Without Swift's backtracer a crash ends the process at once, with the crash's signal.
        let run = try RunProcess(
            pluginsDirectory: plugins, environment: ["CSOP_PLUGIN_PATH": TestEnvironment.buildDirectory, "SWIFT_BACKTRACE": "enable=no"])
        func task(_ id: String) async throws -> JSONValue? {
            try await run.call(id, "compute.execute", ["task": "custom", "data": ["fn": "return [1, 2, 3].map(x => x * 2)"]], timeout: 30)
        }
        // JavaScriptCore is running, and no collection has suspended a thread yet: then its
        // handler has no target thread, and a SIGUSR1 from outside crashed on it.
        #expect(try await task("before")?["data"] == ["result": [2, 4, 6]])
        run.kill(signal)
        // A default action ends the process at once; a handled signal leaves it serving.
        if let status = await run.waitForExit(timeout: 10) {
            #expect(status != SIGSEGV, "the host crashed with SIGSEGV on signal \(signal)")
            #expect(status == signal, "the host ended with status \(status), not by signal \(signal)'s default action")
        } else {
            #expect(try await task("after")?["data"] == ["result": [2, 4, 6]])
            #expect(await run.finish() == 0)
        }
    }
}
