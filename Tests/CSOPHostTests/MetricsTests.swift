import CSOPCore
@testable import CSOPHost
import CSOPTestSupport
import Foundation
import Testing

/// The host's Prometheus metrics: requests by action and outcome, durations, retries and
/// timeouts, plugin changes, and each plugin's own series (filtered to its own names), in
/// process and from an isolated plugin's child.
@Suite struct MetricsTests {
    let directory: TemporaryDirectory

    init() throws { directory = try TemporaryDirectory("csop-metrics") }

    func host(_ entries: [PluginEntry], metrics: Bool = true) throws -> CSOPHost {
        let plugins = try directory.writePlugins(entries)
        var configuration = HostConfiguration(
            pluginsDirectory: plugins, pluginSearchPath: [TestEnvironment.buildDirectory, directory.path], searchExecutableDirectory: false)
        configuration.metrics = metrics ? HostMetrics() : nil
        configuration.pluginHostExecutable = TestEnvironment.csopExecutable
        return CSOPHost(configuration: configuration, scheduler: TimerThread.shared)
    }

    func text(_ host: CSOPHost) async throws -> String {
        String(decoding: try #require(await host.metricsText()), as: UTF8.self)
    }

    /// The value of the sample line `series` (name with labels, exactly as exported), or nil.
    func sample(_ text: String, _ series: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1))
        }
        return nil
    }

    /// Long enough for a loaded machine (the whole suite at once): only the timeout below is meant to pass.
    static let patient = RequestOptions(timeout: 600_000)

    @Test func requestsAreCountedByActionAndOutcome() async throws {
        let host = try host([PluginEntry("10-diag.conf", library: "libcsop-diag.so")])
        for _ in 0..<3 { #expect(await host.dispatch("diag.noop", options: Self.patient).isOK) }
        #expect(await host.dispatch("diag.fail", ["code": "TEAPOT"], options: Self.patient).error?.code.rawValue == "TEAPOT")
        _ = await host.dispatch("nope.noop")
        _ = await host.dispatch("not an action")
        // Two retryable failures, then success: two retries.
        #expect(await host.dispatch("diag.flaky", ["key": "k", "failures": 2], options: RequestOptions(timeout: 600_000, retry: 3)).isOK)
        // A sleep past its timeout, tried twice: two timeouts (each cancelled in the plugin, so
        // the sleep's length costs nothing; it is long so that a timer late on a loaded machine
        // still fires first).
        let slow = await host.dispatch("diag.sleep", ["ms": 60_000], options: RequestOptions(timeout: 50, retry: 1))
        #expect(slow.error?.code == .timeout)

        let text = try await text(host)
        #expect(sample(text, #"csop_requests_total{action="diag.noop",code="OK"}"#) == 3, "\(text)")
        #expect(sample(text, #"csop_requests_total{action="diag.fail",code="TEAPOT"}"#) == 1)
        #expect(sample(text, #"csop_requests_total{action="",code="CAPABILITY_NOT_FOUND"}"#) == 1)
        #expect(sample(text, #"csop_requests_total{action="",code="INVALID_ACTION"}"#) == 1)
        #expect(sample(text, #"csop_requests_total{action="diag.flaky",code="OK"}"#) == 1)
        #expect(sample(text, #"csop_request_retries_total{action="diag.flaky"}"#) == 2)
        #expect(sample(text, #"csop_request_timeouts_total{action="diag.sleep"}"#) == 2)
        #expect(sample(text, #"csop_requests_total{action="diag.sleep",code="TIMEOUT"}"#) == 1)
        #expect(sample(text, #"csop_request_duration_seconds_count{action="diag.noop"}"#) == 3)
        // A no-op lands in the smallest buckets; the sleep's answer took at least its two timeouts.
        #expect(sample(text, #"csop_request_duration_seconds_bucket{action="diag.noop",le="30.0"}"#) == 3)
        #expect(sample(text, #"csop_request_duration_seconds_bucket{action="diag.sleep",le="0.05"}"#) == 0)
        #expect(sample(text, #"csop_request_duration_seconds_bucket{action="diag.sleep",le="+Inf"}"#) == 1)
        #expect(sample(text, #"csop_requests_in_flight"#) == 0)
        #expect(sample(text, #"csop_plugin_generation{plugin="diag",version="1.0.0"}"#) == 1)
        #expect(sample(text, #"csop_plugin_changes_total{plugin="diag",change="loaded"}"#) == 1)
        // Every line is a comment or a sample; each metric has one TYPE line.
        let types = text.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }.map { $0.split(separator: " ")[2] }
        #expect(Set(types).count == types.count)
        await host.shutdown()
    }

    @Test func metricsAreOffUnlessConfigured() async throws {
        let host = try host([PluginEntry("10-diag.conf", library: "libcsop-diag.so")], metrics: false)
        #expect(await host.dispatch("diag.noop", options: Self.patient).isOK)
        #expect(await host.metricsText() == nil)
        await host.shutdown()
    }

    /// A C plugin's write_metrics: its own series are kept (even written in pieces), another
    /// plugin's name and anything malformed are dropped. The same across a child process.
    @Test(arguments: [false, true]) func aPluginsOwnSeriesAreKeptAndNothingElse(isolated: Bool) async throws {
        try await CCompiler.buildPlugin("hello.c", output: directory.file("libhello.so"))
        let host = try host([
            PluginEntry("10-hello.conf", library: directory.file("libhello.so"), extra: isolated ? "isolation = \"process\"\n" : "")
        ])
        #expect(host.failures.isEmpty, "\(host.failures)")
        for _ in 0..<2 { #expect(await host.dispatch("hello.greet", options: Self.patient).isOK) }
        let text = try await text(host)
        #expect(sample(text, "csop_hello_greetings_total") == 2, "\(text)")
        #expect(text.contains("# HELP csop_hello_greetings_total Greetings answered.\n"))
        #expect(text.contains("# TYPE csop_hello_greetings_total counter\n"))
        #expect(!text.contains("csop_storage_bytes"))
        #expect(!text.contains("hello_other"))
        #expect(!text.contains(" {} 3"))
        #expect(sample(text, #"csop_requests_total{action="hello.greet",code="OK"}"#) == 2)
        await host.shutdown()
    }

    @Test func aReloadIsCounted() async throws {
        let host = try host([PluginEntry("10-diag.conf", library: "libcsop-diag.so")])
        let plugins = directory.file("plugins.d")
        try PluginEntry("10-diag.conf", library: "libcsop-diag.so", extra: "# changed\n").text
            .write(toFile: "\(plugins)/10-diag.conf", atomically: true, encoding: .utf8)
        try "library = \"libnothere.so\"\n".write(toFile: "\(plugins)/20-gone.conf", atomically: true, encoding: .utf8)
        _ = await host.reload()
        // Changes after the first load arrive as events; give the listener a moment.
        var text = ""
        for _ in 0..<100 {
            text = try await self.text(host)
            if sample(text, #"csop_plugin_changes_total{plugin="nothere",change="failed"}"#) == 1 { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(sample(text, #"csop_plugin_changes_total{plugin="diag",change="replaced"}"#) == 1, "\(text)")
        #expect(sample(text, #"csop_plugin_changes_total{plugin="nothere",change="failed"}"#) == 1, "\(text.split(separator: "\n").filter { $0.contains("changes") })")
        #expect(sample(text, #"csop_plugin_generation{plugin="diag",version="1.0.0"}"#) == 2)
        #expect(sample(text, "csop_plugin_entries_failing") == 1)
        await host.shutdown()
    }

    /// What a plugin writes is checked line by line: hostile text cannot add another plugin's
    /// series, the host's, a comment of its own, or a line with control bytes.
    @Test func pluginTextIsFilteredLineByLine() {
        let input = [
            "# HELP csop_hello_x ok", "# TYPE csop_hello_x gauge", "csop_hello_x 1", #"csop_hello_x{a="b"} 2"#,
            "csop_hellox 3", "csop_hello_ 4", "csop_requests_total 5", "# EVIL csop_hello_x", "#csop_hello_x 6",
            "csop_hello_x\u{1B}[2J 7", "csop_hello_x 8\r", "csop_hello-x 9", "", "csop_hello_y", "csop_hello_z 10",
        ].joined(separator: "\n")  // The last line has no newline: cut off, so dropped.
        var output: [UInt8] = []
        PluginMetricsText.append(Array(input.utf8), plugin: "hello", to: &output)
        #expect(
            String(decoding: output, as: UTF8.self)
                == ["# HELP csop_hello_x ok", "# TYPE csop_hello_x gauge", "csop_hello_x 1", #"csop_hello_x{a="b"} 2"#].joined(separator: "\n") + "\n")
    }

    /// A plugin that invents error codes cannot grow the series without bound.
    @Test func errorCodesPerActionAreCapped() async throws {
        let host = try host([PluginEntry("10-diag.conf", library: "libcsop-diag.so")])
        for i in 0..<(OperationMetrics.maxCodes + 10) {
            #expect(await host.dispatch("diag.fail", ["code": .string("CODE_\(i)")], options: Self.patient).error?.code.rawValue == "CODE_\(i)")
        }
        let text = try await text(host)
        let series = text.split(separator: "\n").filter { $0.hasPrefix(#"csop_requests_total{action="diag.fail""#) }
        #expect(series.count == OperationMetrics.maxCodes + 2, "\(series.count)")  // and OK, and OTHER
        #expect(sample(text, #"csop_requests_total{action="diag.fail",code="OTHER"}"#) == 10)
        await host.shutdown()
    }

    /// The request-duration histogram: a value on a bound counts in that bucket, past the last
    /// bound only in +Inf; buckets are cumulative; the sum is in seconds; label values escaped.
    @Test func durationBucketsAreCumulativeAndBoundsInclusive() {
        let histogram = LatencyHistogram(action: "a.\"b\"")
        for nanoseconds in [1_000, 1_001, 2_500, 40_000_000_000] { histogram.record(nanoseconds: nanoseconds) }
        var buffer: [UInt8] = []
        histogram.emit(name: "h", into: &buffer)
        let text = String(decoding: buffer, as: UTF8.self)
        #expect(text.contains(#"h_bucket{action="a.\"b\"",le="0.000001"} 1"# + "\n"), "\(text)")
        #expect(text.contains(#"h_bucket{action="a.\"b\"",le="0.0000025"} 3"# + "\n"))
        #expect(text.contains(#"h_bucket{action="a.\"b\"",le="30.0"} 3"# + "\n"))
        #expect(text.contains(#"h_bucket{action="a.\"b\"",le="+Inf"} 4"# + "\n"))
        #expect(text.contains(#"h_count{action="a.\"b\""} 4"# + "\n"))
        #expect(text.contains(#"h_sum{action="a.\"b\""} 40.000004501"# + "\n"))
        #expect(LatencyHistogram.bounds.count == 23 && LatencyHistogram.bounds == LatencyHistogram.bounds.sorted())
    }
}
