import CSOPCore
@testable import CSOPHost
import CSOPTestSupport
import Foundation
import Logging
import Testing

/// `isolation = "process"`: real child processes (`csop plugin-host`) running C plugins built
/// here, one of which crashes on purpose.
@Suite struct ProcessIsolationTests {
    let directory: TemporaryDirectory

    init() throws { directory = try TemporaryDirectory("csop-isolation") }

    func compile(_ source: String, _ defines: [String] = [], as name: String) async throws -> String {
        let output = directory.file(name)
        try await CCompiler.buildPlugin(source, defines: defines, output: output)
        return output
    }

    func writeEntry(_ name: String, library: String, isolated: Bool = true, limits: String = "") throws {
        let text = "library = \"\(library)\"\n" + (isolated ? "isolation = \"process\"\n" : "") + limits
        let path = directory.file("plugins.d/\(name)")
        try FileManager.default.createDirectory(atPath: directory.file("plugins.d"), withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    func host(log: LogCapture? = nil) throws -> CSOPHost {
        var configuration = HostConfiguration(
            pluginsDirectory: directory.file("plugins.d"), pluginSearchPath: [TestEnvironment.buildDirectory], searchExecutableDirectory: false)
        if let log { configuration.logger = Logger(label: "test") { _ in log } }
        configuration.pluginHostExecutable = TestEnvironment.csopExecutable
        return CSOPHost(configuration: configuration, scheduler: TimerThread.shared)
    }

    /// Everything the C ABI offers works across the boundary as it does in-process: results,
    /// errors, events, log lines, the caller's fields, begin_commit, timeouts and cancellation.
    @Test func anIsolatedPluginServesAsItWouldInProcess() async throws {
        try writeEntry("10-hello.conf", library: try await compile("hello.c", as: "libhello.so"))
        try writeEntry("20-never.conf", library: try await compile("broken.c", ["NEVER_COMPLETE", "NAME=\"never\""], as: "libnever.so"))
        let log = LogCapture()
        let host = try host(log: log)
        #expect(host.failures.isEmpty, "\(host.failures)")
        let recorder = EventRecorder()
        _ = host.addEventListener { recorder.record($0.json.bytes) }

        #expect(await host.dispatch("hello.greet", ["a": 1]).data == ["greeting": "hello from C", "payloadBytes": 7])
        #expect(await host.dispatch("hello.echo", ["n": [1, 2]]).data == ["n": [1, 2]])
        #expect(await recorder.wait(for: 1) { $0["type"] == "hello.echoed" }.count == 1)
        let fail = await host.dispatch("hello.fail", options: RequestOptions(retry: 2))
        #expect(fail.error == CSOPError(ErrorCode("HELLO_FAILED"), "hello.fail always fails"))
        #expect(await host.dispatch("hello.commit").data == ["committed": 1])
        let caller = Caller(subject: "alice", tenant: "acme", actions: try ActionPatterns(parsing: "hello.*"))
        #expect(await host.dispatch("hello.whoami", caller: caller).data == ["tenant": "acme", "subject": "alice", "actions": "hello.*"])
        #expect(await host.dispatch("hello.whoami").data == ["owner": true])
        #expect(log.messages.contains("hello plugin created"), "\(log.messages)")

        // A call the plugin never completes times out, is cancelled in the child, and shows as never completed.
        let stuck = await host.dispatch("never.status", options: RequestOptions(timeout: 200))
        #expect(stuck.error?.code == .timeout)
        #expect(await host.dispatch("never.ping").data == "pong")

        let info = await host.info()
        let hello = info["capabilities"]?.arrayValue?.first { $0["name"] == "hello" }
        #expect(hello?["isolation"] == "process")
        if case .int(let pid)? = hello?["pid"] {
            #expect(pid > 0 && pid != Int64(getpid()))
        } else {
            Issue.record("no pid: \(String(describing: hello))")
        }
        let never = info["capabilities"]?.arrayValue?.first { $0["name"] == "never" }
        #expect(never?["neverCompleted"] == 1)
        await host.shutdown(gracePeriod: 500)
    }

    /// The bar of issue 12: a plugin that crashes, run isolated, fails only its own calls;
    /// the host and every other plugin go on; the child comes back and the next call succeeds.
    @Test(arguments: ["CRASHES", "ABORTS"])
    func aCrashFailsItsCallsAndTheChildComesBack(how: String) async throws {
        try writeEntry("00-diag.conf", library: "libcsop-diag.so", isolated: false)
        try writeEntry("10-crashy.conf", library: try await compile("broken.c", [how, "NAME=\"crashy\""], as: "libcrashy.so"))
        let host = try host()
        #expect(host.failures.isEmpty, "\(host.failures)")
        let recorder = EventRecorder()
        _ = host.addEventListener { recorder.record($0.json.bytes) }
        #expect(await host.dispatch("crashy.ping").data == "pong")

        let crashed = await host.dispatch("crashy.status")
        #expect(crashed.error?.code.rawValue == "PLUGIN_CRASHED", "\(crashed)")
        #expect(crashed.error?.retryable == true)
        #expect(crashed.error?.message.contains("was killed by signal \(how == "CRASHES" ? SIGSEGV : SIGABRT)") == true, "\(crashed)")
        #expect(await host.dispatch("diag.noop").error == nil, "the other plugins keep serving")

        let restarted = await recorder.wait(for: 1) { $0["type"] == "host.plugin" && $0["change"] == "restarted" }
        #expect(restarted.first?["generation"] == 2)
        #expect(recorder.matching { $0["change"] == "crashed" }.count == 1)
        #expect(await host.dispatch("crashy.ping").data == "pong", "the next call after the restart succeeds")
        let info = await host.info()
        let crashy = info["capabilities"]?.arrayValue?.first { $0["name"] == "crashy" }
        #expect(crashy?["restarts"] == 1)
        #expect(crashy?["generation"] == 2)
        #expect(crashy?["lastCrash"]?.stringValue?.contains("killed by signal") == true)
        await host.shutdown()
        if case .int(let pid)? = crashy?["pid"] {
            #expect(kill(pid_t(pid), 0) != 0, "shutdown ends the restarted child too")
        } else {
            Issue.record("no pid for the restarted child")
        }
    }

    /// The same plugin in-process takes the whole host down (documented): `csop dispatch`
    /// dies of the signal; isolated, it answers PLUGIN_CRASHED and exits normally.
    @Test func inProcessTheCrashTakesTheHostDown() async throws {
        let library = try await compile("broken.c", ["CRASHES", "NAME=\"crashy\""], as: "libcrashy.so")
        for isolated in [false, true] {
            try writeEntry("10-crashy.conf", library: library, isolated: isolated)
            let run = try await ChildProcess.run(
                TestEnvironment.csopExecutable, ["dispatch", "crashy.status", "--plugins-dir", directory.file("plugins.d")],
                environment: ["SWIFT_BACKTRACE": "enable=no"])
            let result = (run.status, run.diedOfSignal, run.stdout)
            if isolated {
                #expect(!result.1 && result.0 == 1, "\(result)")
                #expect(result.2.contains("PLUGIN_CRASHED"), "\(result)")
            } else {
                #expect(result.1, "in-process, the segfault ends csop dispatch: \(result)")
            }
        }
    }

    /// `[limits]` become the child's resource limits (read back from /proc).
    @Test func limitsAreTheChildsResourceLimits() async throws {
        try writeEntry(
            "10-hello.conf", library: try await compile("hello.c", as: "libhello.so"),
            limits: "[limits]\nmemory = 4_294_967_296\ncpuSeconds = 600\nopenFiles = 64\n")
        let host = try host()
        #expect(host.failures.isEmpty, "\(host.failures)")
        let info = await host.info()
        guard case .int(let pid)? = info["capabilities"]?.arrayValue?.first(where: { $0["name"] == "hello" })?["pid"] else {
            Issue.record("no pid in \(info)")
            return
        }
        let limits = try String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8)
        func line(_ name: String) -> String { limits.split(separator: "\n").first { $0.hasPrefix(name) }.map(String.init) ?? "" }
        #expect(line("Max open files").split(separator: " ", omittingEmptySubsequences: true).dropFirst(3).prefix(2) == ["64", "64"])
        #expect(line("Max cpu time").contains("600"))
        #expect(line("Max address space").contains("4294967296"))
        #expect(await host.dispatch("hello.greet").error == nil)
        await host.shutdown()
    }

    /// A timeout cancels the call in the child: the Swift diag plugin, isolated, counts the
    /// cancellation its sleep received.
    @Test func aTimeoutCancelsTheCallInTheChild() async throws {
        try writeEntry("00-diag.conf", library: "libcsop-diag.so")
        let host = try host()
        #expect(host.failures.isEmpty, "\(host.failures)")
        let slow = await host.dispatch("diag.sleep", ["ms": 30_000], options: RequestOptions(timeout: 100))
        #expect(slow.error?.code == .timeout)
        var cancelled: JSONValue?
        for _ in 0..<500 where cancelled != 1 {
            cancelled = await host.dispatch("diag.cancelled").data
            if cancelled != 1 { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(cancelled == 1, "the sleep in the child was never cancelled")
        await host.shutdown()
    }

    /// A reload that changes an isolated entry starts a new child, then ends the old one.
    @Test func aReloadReplacesTheChildAndEndsTheOldOne() async throws {
        let library = try await compile("hello.c", as: "libhello.so")
        try writeEntry("10-hello.conf", library: library)
        let host = try host()
        func pid() async -> Int64? {
            let info = await host.info()
            guard case .int(let pid)? = info["capabilities"]?.arrayValue?.first(where: { $0["name"] == "hello" })?["pid"] else { return nil }
            return pid
        }
        let first = try #require(await pid())
        try writeEntry("10-hello.conf", library: library, limits: "# edited\n")
        #expect(await host.reload().items.map(\.change) == [.replaced])
        let second = try #require(await pid())
        #expect(second != first)
        #expect(await host.dispatch("hello.greet").error == nil)
        var gone = false
        for _ in 0..<500 where !gone {
            gone = kill(pid_t(first), 0) != 0
            if !gone { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(gone, "the old child \(first) still runs")
        await host.shutdown()
        #expect(kill(pid_t(second), 0) != 0, "shutdown ends the child")
    }

    /// A plugin that breaks the contract in its child gets PLUGIN_FAULT, as in-process.
    @Test func aContractBreachInTheChildIsAPluginFault() async throws {
        try writeEntry("10-bad.conf", library: try await compile("broken.c", ["BAD_OUTPUT", "NAME=\"bad\""], as: "libbad.so"))
        let host = try host()
        let ping = await host.dispatch("bad.ping")
        #expect(ping.error?.code == .pluginFault)
        #expect(ping.error?.message.contains("returned invalid JSON") == true, "\(ping)")
        #expect(await host.dispatch("bad.status").error?.code == .pluginFault)
        await host.shutdown()
    }

    /// A child that cannot load its plugin is a load failure like any other, with the child's reason.
    @Test func aChildThatCannotLoadItsPluginIsAnEntryFailure() async throws {
        try writeEntry("10-missing.conf", library: "libnowhere.so")
        try writeEntry("20-failing.conf", library: try await compile("broken.c", ["FAILING_INIT", "NAME=\"failing\""], as: "libfailing.so"))
        try writeEntry("30-hello.conf", library: try await compile("hello.c", as: "libhello.so"))
        let host = try host()
        #expect(host.failures.map(\.kind) == [.libraryNotFound, .initFailed], "\(host.failures)")
        #expect(host.failures.last?.message.contains("cannot open /nonexistent/db") == true, "\(host.failures)")
        #expect(host.failures.last?.domain == "failing")
        #expect(host.plugins.map(\.name) == ["hello"])
        #expect(await host.dispatch("hello.greet").error == nil)
        let missing = await host.dispatch("failing.ping")
        #expect(missing.error?.code == .capabilityNotFound)
        await host.shutdown()
    }

    @Test func badIsolationSettingsAreConfigErrors() throws {
        func parse(_ text: String) -> String? {
            do throws(PluginConfigError) {
                _ = try PluginConfigFile.parse("library = \"x.so\"\n" + text, path: "e.conf")
                return nil
            } catch {
                return error.message
            }
        }
        #expect(parse("isolation = \"process\"\n") == nil)
        #expect(parse("isolation = \"container\"\n")?.contains("isolation must be \"in-process\" (the default) or \"process\"") == true)
        #expect(parse("[limits]\nmemory = 100_000_000\n")?.contains("add isolation = \"process\"") == true)
        #expect(parse("isolation = \"process\"\n[limits]\nmemory = 10\n")?.contains("limits.memory must be an integer from") == true)
        #expect(parse("isolation = \"process\"\n[limits]\nthreads = 10\n")?.contains("unknown key limits.threads") == true)
    }
}
