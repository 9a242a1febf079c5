import CSOPCore
import CSOPTestSupport
import Foundation
import Testing

/// `csop run` end to end: a real child process fed a script of lines.
@Suite struct RunCommandTests {
    @Test func answersEveryLineIncludingMalformedOnesThenDrainsAtEOF() async throws {
        let directory = try TemporaryDirectory("csop-run")
        let plugins = try directory.writePlugins([PluginEntry("00-diag.conf", library: "libcsop-diag.so")])
        let run = try RunProcess(pluginsDirectory: plugins, environment: ["CSOP_PLUGIN_PATH": TestEnvironment.buildDirectory])
        let script = [
            #"{"id":"slow","action":"diag.sleep","payload":{"ms":300}}"#,
            #"{"id":"fast","action":"diag.echo","payload":{"n":1}}"#,
            "this is not json",
            "",
            #"{"id":"noaction","payload":{}}"#,
            #"{"id":"badaction","action":"diag"}"#,
            #"{"id":"nocap","action":"nothing.here"}"#,
            #"{"id":"noop","action":"diag.nope"}"#,
            #"{"id":"arr","action":"diag.echo","payload":[1]}"#,
            #"{"id":"opt","action":"diag.noop","options":{"timeout":"x"}}"#,
            #"{"id":"timeout","action":"diag.sleep","payload":{"ms":5000},"options":{"timeout":50}}"#,
            #"{"id":"unicode","action":"diag.echo","payload":{"s":"é😀\n"}}"#,
            #"{"action":"diag.noop"}"#,
            #"{"id":"trunc","action":"diag.echo","payload":{"#,
        ]
        for line in script { try run.send(raw: line) }
        let status = await run.finish()
        #expect(status == 0)
        let lines = run.received
        #expect(lines.count == 13, "\(run.receivedText)")
        func response(_ id: String) -> JSONValue? { lines.first { $0["id"]?.stringValue == id } }
        func code(_ id: String) -> String? { response(id)?["error"]?["code"]?.stringValue }
        #expect(response("slow")?["data"] == ["slept": 300])
        #expect(response("fast")?["data"] == ["n": 1])
        #expect(code("noaction") == "INVALID_ACTION")
        #expect(code("badaction") == "INVALID_ACTION")
        #expect(code("nocap") == "CAPABILITY_NOT_FOUND")
        #expect(code("noop") == "OPERATION_NOT_FOUND")
        #expect(code("arr") == "INVALID_PAYLOAD")
        #expect(code("opt") == "INVALID_PAYLOAD")
        #expect(code("timeout") == "TIMEOUT")
        #expect(response("unicode")?["data"] == ["s": "é😀\n"])
        let anonymous = lines.filter { $0["id"]?.stringValue?.hasPrefix("csop_") == true }
        #expect(anonymous.count == 3)
        #expect(anonymous.filter { $0["status"] == "ok" }.count == 1)
        #expect(anonymous.filter { $0["error"]?["code"] == "INVALID_PAYLOAD" }.count == 2)
        // Responses come as they finish: the slow request answers after the fast one.
        let order = lines.compactMap { $0["id"]?.stringValue }
        #expect(order.firstIndex(of: "fast")! < order.firstIndex(of: "slow")!)
        #expect(lines.allSatisfy { $0["duration"]?.doubleValue != nil })
    }

    @Test func servesManyConcurrentRequests() async throws {
        let directory = try TemporaryDirectory("csop-run")
        let plugins = try directory.writePlugins([PluginEntry("00-diag.conf", library: "libcsop-diag.so")])
        let run = try RunProcess(pluginsDirectory: plugins, environment: ["CSOP_PLUGIN_PATH": TestEnvironment.buildDirectory])
        var text = ""
        for i in 0..<5000 { text += #"{"id":"r\#(i)","action":"diag.echo","payload":{"i":\#(i)}}"# + "\n" }
        try run.send(raw: String(text.dropLast()))
        #expect(await run.finish() == 0)
        let lines = run.received
        #expect(lines.count == 5000)
        #expect(Set(lines.compactMap { $0["id"]?.stringValue }).count == 5000)
        #expect(lines.allSatisfy { $0["data"]?["i"]?.int64Value == Int64($0["id"]!.stringValue!.dropFirst())! })
    }

    @Test func stopsReadingAtMaxInFlightInsteadOfOverflowingQueues() async throws {
        let directory = try TemporaryDirectory("csop-run")
        let plugins = try directory.writePlugins([PluginEntry("00-diag.conf", library: "libcsop-diag.so")])
        let run = try RunProcess(
            pluginsDirectory: plugins, arguments: ["--max-in-flight", "2"],
            environment: ["CSOP_PLUGIN_PATH": TestEnvironment.buildDirectory])
        try run.send(raw: #"{"id":"a","action":"diag.sleep","payload":{"ms":200}}"#)
        try run.send(raw: #"{"id":"b","action":"diag.sleep","payload":{"ms":200}}"#)
        try run.send(raw: #"{"id":"c","action":"diag.echo","payload":{}}"#)
        #expect(await run.finish() == 0)
        let order = run.received.compactMap { $0["id"]?.stringValue }
        #expect(Set(order) == ["a", "b", "c"])
        // c is only read once a or b has finished, so it cannot overtake both.
        #expect(order.firstIndex(of: "c")! > min(order.firstIndex(of: "a")!, order.firstIndex(of: "b")!))
    }

    @Test func sigtermStopsReadingButFinishesRunningWork() async throws {
        let directory = try TemporaryDirectory("csop-run")
        let plugins = try directory.writePlugins([PluginEntry("00-diag.conf", library: "libcsop-diag.so")])
        let run = try RunProcess(pluginsDirectory: plugins, environment: ["CSOP_PLUGIN_PATH": TestEnvironment.buildDirectory])
        // Lines are read in order: once the echo is answered, the sleep runs (for 3 s, so
        // still when the signal comes, however loaded the machine).
        try run.send(raw: #"{"id":"slow","action":"diag.sleep","payload":{"ms":3000}}"#)
        #expect(try await run.call("ready", "diag.echo", timeout: 60)?["status"] == "ok")
        run.kill(SIGTERM)
        #expect(await run.waitForExit() == 0)
        #expect(await run.response("slow", timeout: 0)?["data"] == ["slept": 3000])
    }

    @Test func dispatchExitsNonZeroOnAnErrorResponse() async throws {
        let directory = try TemporaryDirectory("csop-dispatch")
        let plugins = try directory.writePlugins([PluginEntry("00-diag.conf", library: "libcsop-diag.so")])
        let ok = try await runCLI(["dispatch", "diag.echo", #"{"a":1}"#, "--plugins-dir", plugins])
        #expect(ok.status == 0)
        #expect(try JSONValue(parsing: ok.stdout)["data"] == ["a": 1])
        let bad = try await runCLI(["dispatch", "diag.echo", "{not json", "--plugins-dir", plugins])
        #expect(bad.status == 1)
        #expect(try JSONValue(parsing: bad.stdout)["error"]?["code"] == "INVALID_PAYLOAD")
        let slow = try await runCLI(["dispatch", "diag.sleep", #"{"ms":2000}"#, "--timeout", "20", "--plugins-dir", plugins])
        #expect(slow.status == 1)
        #expect(try JSONValue(parsing: slow.stdout)["error"]?["code"] == "TIMEOUT")
    }

    @Test func pluginsListsOperationsAndFailures() async throws {
        let directory = try TemporaryDirectory("csop-plugins")
        let plugins = try directory.writePlugins([
            PluginEntry("00-diag.conf", library: "libcsop-diag.so"),
            PluginEntry("10-missing.conf", library: "libnope.so"),
        ])
        let result = try await runCLI(["plugins", "--plugins-dir", plugins])
        #expect(result.status == 2)
        #expect(result.stdout.contains("diag 1.0.0"))
        #expect(result.stdout.contains("diag.noop, diag.echo"))
        #expect(result.stdout.contains("FAILED \(plugins)/10-missing.conf: LIBRARY_NOT_FOUND"))
        let json = try await runCLI(["plugins", "--json", "--plugins-dir", plugins])
        let info = try JSONValue(parsing: json.stdout)
        #expect(info["capabilities"]?.arrayValue?.count == 2)
        #expect(info["failures"]?.arrayValue?.first?["kind"] == "LIBRARY_NOT_FOUND")
    }

    @Test func logsGoToStderrNotStdout() async throws {
        let directory = try TemporaryDirectory("csop-logs")
        let plugins = try directory.writePlugins([PluginEntry("10-missing.conf", library: "libnope.so")])
        let result = try await runCLI(["dispatch", "host.ping", "--log-level", "debug", "--plugins-dir", plugins])
        #expect(result.status == 0)
        #expect(try JSONValue(parsing: result.stdout)["data"] == ["pong": true])
        #expect(result.stderr.contains("libnope.so"))
    }

    func runCLI(_ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        let result = try await ChildProcess.run(
            TestEnvironment.csopExecutable, arguments, environment: ["CSOP_PLUGIN_PATH": TestEnvironment.buildDirectory])
        return (result.status, result.stdout, result.stderr)
    }
}
