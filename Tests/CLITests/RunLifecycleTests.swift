import CSOPCore
import CSOPTestSupport
import Foundation
import Glibc
import Testing

/// `csop run` at the edges of its life: over-long lines, stop signals, a reader that goes away.
@Suite struct RunLifecycleTests {
    let directory: TemporaryDirectory
    let plugins: String
    let environment = ["CSOP_PLUGIN_PATH": TestEnvironment.buildDirectory]

    init() throws {
        directory = try TemporaryDirectory("csop-run-life")
        plugins = try directory.writePlugins([PluginEntry("00-diag.conf", library: "libcsop-diag.so")])
    }

    /// One line, one answer, always; the line count goes on past an over-long line.
    @Test func overLongLinesGetOneAnswerEachAndKeepTheLineCount() async throws {
        let run = try RunProcess(pluginsDirectory: plugins, arguments: ["--max-line-bytes", "1024"], environment: environment)
        try run.send(raw: #"{"id":"a","action":"diag.noop"}"#)
        try run.send(raw: #"{"id":"long1","action":"diag.echo","payload":{"s":""# + String(repeating: "x", count: 5_000) + #""}}"#)
        try run.send(raw: #"{"id":"b","action":"diag.noop"}"#)
        try run.send(raw: String(repeating: "y", count: 300_000))
        try run.send(raw: "not json")
        let status = await run.finish()
        #expect(status == 0)
        let lines = run.received
        #expect(lines.count == 5, "\(run.receivedText.map { String($0.prefix(200)) })")
        let messages = lines.compactMap { $0["error"]?["message"]?.stringValue }
        #expect(messages.contains { $0.hasPrefix("line 2 is longer than 1024 bytes") })
        #expect(messages.contains { $0.hasPrefix("line 4 is longer than 1024 bytes") })
        #expect(messages.contains { $0.hasPrefix("line 5 is not valid JSON") })
        #expect(lines.filter { $0["status"] == "ok" }.count == 2)
    }

    /// Issue 10: memory is bounded by bytes, not only by counts. Lines whose payloads together
    /// pass the host's byte budget wait to be read (backpressure), so none is refused.
    @Test func theByteBudgetHoldsBackReadingInsteadOfRefusing() async throws {
        let run = try RunProcess(pluginsDirectory: plugins, arguments: ["--max-in-flight-bytes", "1048576"], environment: environment)
        let pad = String(repeating: "p", count: 400_000)
        for i in 0..<12 {
            try run.send(raw: #"{"id":"s\#(i)","action":"diag.sleep","payload":{"ms":30,"pad":"\#(pad)"},"options":{"timeout":120000}}"#)
        }
        // One payload larger than the whole budget is refused, never retried.
        try run.send(raw: #"{"id":"huge","action":"diag.sleep","payload":{"ms":0,"pad":"\#(String(repeating: "h", count: 1_100_000))"}}"#)
        let huge = await run.response("huge", timeout: 120)
        #expect(huge?["error"]?["code"] == "INVALID_PAYLOAD", "\(String(describing: huge))")
        #expect(huge?["error"]?["message"]?.stringValue?.contains("maxInFlightBytes") == true)
        for i in 0..<12 {
            let answer = await run.response("s\(i)", timeout: 120)
            #expect(answer?["data"]?["slept"] == 30, "s\(i): \(String(describing: answer?["error"]))")
        }
        #expect(await run.finish() == 0)
    }

    /// SIGHUP reloads plugins.d instead of ending the process, and so does a change to it
    /// (unless --no-watch-plugins); each change is a `host.plugin` line on stdout.
    @Test(arguments: [false, true])
    func aHangupOrAChangedDirectoryReloadsThePlugins(watch: Bool) async throws {
        let run = try RunProcess(pluginsDirectory: plugins, arguments: watch ? [] : ["--no-watch-plugins"], environment: environment)
        #expect(try await run.call("before", "diag.noop")?["status"] == "ok")
        try directory.writePlugins([PluginEntry("00-diag.conf", library: "libcsop-diag.so", extra: "\n# edited\n")])
        if !watch {
            // Nothing watches: only the signal reloads.
            #expect(Self.diag(try await run.call("still", "host.info"))?["generation"] == 1)
            run.kill(SIGHUP)
        }
        let event = await run.waitFor(timeout: 60) { $0["type"] == "host.plugin" }
        #expect(event?["change"] == "replaced" && event?["plugin"] == "diag" && event?["generation"] == 2, "\(String(describing: event))")
        let info = try await run.call("after", "host.info")
        #expect(Self.diag(info)?["generation"] == 2)
        #expect(try await run.call("noop", "diag.noop")?["status"] == "ok")
        #expect(await run.finish() == 0)
        #expect(!run.diedOfSignal)
    }

    /// diag's entry in a `host.info` answer.
    static func diag(_ info: JSONValue?) -> JSONValue? {
        info?["data"]?["capabilities"]?.arrayValue?.first { $0["name"] == "diag" }
    }

    /// A stop signal stops reading at once: running work drains, lines already read are
    /// refused, and the process exits by itself.
    ///
    /// Five 20 s sleeps fill `--max-in-flight 5`, so no noop can start before the signal, as
    /// long as the signal comes while they all still run. A machine so loaded that the test
    /// itself stalls for 10 s between the first sleep and the signal voids that premise: the
    /// round is run again (three rounds at most), never judged on it.
    @Test(arguments: [SIGTERM, SIGINT, SIGQUIT])
    func aStopSignalStopsReadingAndDrains(signal: Int32) async throws {
        let clock = ContinuousClock()
        for round in 1...3 {
            let run = try RunProcess(pluginsDirectory: plugins, arguments: ["--max-in-flight", "5"], environment: environment)
            let sent = clock.now
            for i in 0..<4 { try run.send(raw: #"{"id":"sleep\#(i)","action":"diag.sleep","payload":{"ms":20000},"options":{"timeout":60000}}"#) }
            // Wait until the four sleeps run, then fill the last slot.
            var running = false
            for attempt in 0..<12_000 where !running {
                let info = try await run.call("info\(attempt)", "host.info", timeout: 120)
                let diag = info?["data"]?["capabilities"]?.arrayValue?.first { $0["name"] == "diag" }
                running = diag?["running"] == 4
                if !running { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(running, "the four sleeps never ran together")
            try run.send(raw: #"{"id":"sleep4","action":"diag.sleep","payload":{"ms":20000},"options":{"timeout":60000}}"#)
            for i in 0..<300 { try run.send(raw: #"{"id":"n\#(i)","action":"diag.noop"}"#) }
            let stalled = clock.now - sent
            run.kill(signal)
            let status = await run.waitForExit(timeout: 60)
            if stalled > .seconds(10) && round < 3 {
                print("round \(round): \(stalled) from the first sleep to the signal; running it again")
                continue
            }
            #expect(stalled <= .seconds(10), "\(stalled) from the first sleep to the signal in every round")
            #expect(status == 0, "exit status \(String(describing: status))")
            #expect(!run.diedOfSignal)
            let lines = run.received
            #expect((0..<4).allSatisfy { i in lines.contains { $0["id"]?.stringValue == "sleep\(i)" && $0["data"]?["slept"] == 20000 } }, "the running sleeps drain")
            let noops = lines.filter { $0["id"]?.stringValue?.hasPrefix("n") == true }
            let started = noops.filter { $0["error"]?["code"] != "NOT_INITIALIZED" }
            #expect(started.isEmpty, "no work starts after the signal: \(started.prefix(3)); sleeps: \(lines.filter { $0["id"]?.stringValue?.hasPrefix("sleep") == true })")
            #expect(Set(noops.compactMap { $0["id"]?.stringValue }).count == noops.count, "one answer per line")
            return
        }
    }

    /// `csop run | head -1`: when nobody reads the answers, it stops and says so by its status.
    @Test func aClosedStdoutStopsTheRunWithANonZeroStatus() async throws {
        let run = try RunProcess(pluginsDirectory: plugins, environment: environment, closeOutputAfter: 1)
        _ = await run.flood(#"{"action":"diag.noop"}"#, count: 2_000_000)
        let status = await run.waitForExit(timeout: 60)
        #expect(status == 1, "exit status \(String(describing: status))")
    }
}
