import CSOPCore
@testable import CSOPHost
import CSOPTestSupport
import Foundation
import InMemoryTracing
import Logging
import Testing
import Tracing

/// W3C trace context in and out: parsed strictly from a request's `trace` field, handed to
/// plugins across the ABI (in process and to an isolated child), and spans per request and
/// attempt with swift-distributed-tracing.
@Suite struct TracingTests {
    let directory: TemporaryDirectory

    init() throws { directory = try TemporaryDirectory("csop-tracing") }

    static let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    func host(isolatedHello: Bool = false, tracer: (any Tracer)? = nil, log: LogCapture? = nil) async throws -> CSOPHost {
        try await CCompiler.buildPlugin("hello.c", output: directory.file("libhello.so"))
        let plugins = try directory.writePlugins([
            PluginEntry("10-diag.conf", library: "libcsop-diag.so"),
            PluginEntry("20-hello.conf", library: directory.file("libhello.so"), extra: isolatedHello ? "isolation = \"process\"\n" : ""),
        ])
        var configuration = HostConfiguration(
            pluginsDirectory: plugins, pluginSearchPath: [TestEnvironment.buildDirectory], searchExecutableDirectory: false)
        configuration.tracer = tracer
        if let log { configuration.logger = Logger(label: "test") { _ in log } }
        configuration.pluginHostExecutable = TestEnvironment.csopExecutable
        let host = CSOPHost(configuration: configuration, scheduler: TimerThread.shared)
        #expect(host.failures.isEmpty, "\(host.failures)")
        return host
    }

    static let patient = RequestOptions(timeout: 600_000)

    @Test func traceparentsAreReadStrictly() throws {
        let context = try TraceContext(traceparent: Self.parent, tracestate: "congo=t61rcWkgMzE")
        #expect(context.traceID == "0af7651916cd43dd8448eb211c80319c" && context.spanID == "b7ad6b7169203331" && context.flags == 1)
        #expect(context.traceparent == Self.parent && context.state == "congo=t61rcWkgMzE")
        // A later version is read by its first four fields.
        #expect(try TraceContext(traceparent: "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-extra").flags == 0)
        let child = context.child()
        #expect(child.traceID == context.traceID && child.spanID != context.spanID && child.spanID.utf8.count == 16)
        for bad in [
            "", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331", "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01", "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
            "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333g-01",
        ] {
            #expect(throws: TraceContextError.self, "\(bad)") { try TraceContext(traceparent: bad) }
        }
        #expect(throws: TraceContextError.self) { try TraceContext(traceparent: Self.parent, tracestate: String(repeating: "a", count: 513)) }
        #expect(throws: TraceContextError.self) { try TraceContext(traceparent: Self.parent, tracestate: "a=\u{7}") }
    }

    @Test func aRequestsTraceFieldIsCheckedAndBadOnesAreNamed() throws {
        let string = try Request.decode(["action": "diag.noop", "trace": .string(Self.parent)]).get()
        #expect(string.trace?.traceparent == Self.parent)
        let object = try Request.decode(["action": "diag.noop", "trace": ["traceparent": .string(Self.parent), "tracestate": "a=b"]]).get()
        #expect(object.trace?.state == "a=b")
        for (bad, words) in [
            (JSONValue.string("nope"), "trace: traceparent must be"), (.int(3), "trace must be a traceparent string"),
            (["traceparent": .string(Self.parent), "extra": 1], "extra"), (["tracestate": "a=b"], "traceparent"),
        ] {
            guard case .failure(let failure) = Request.decode(["id": "x", "action": "diag.noop", "trace": bad]) else {
                Issue.record("\(bad) was accepted")
                continue
            }
            #expect(failure.error.code == .invalidPayload && failure.error.message.contains(words) && failure.id == "x", "\(failure.error)")
        }
    }

    /// Without a tracer the plugin gets the caller's own context, unchanged; none without one.
    @Test(arguments: [false, true]) func pluginsGetTheCallersTraceContext(isolated: Bool) async throws {
        let host = try await host(isolatedHello: isolated)
        let trace = try TraceContext(traceparent: Self.parent, tracestate: "congo=t61rcWkgMzE")
        let traced = await host.dispatch(Request(action: "hello.trace", options: Self.patient, trace: trace))
        #expect(traced.data == ["traceparent": .string(Self.parent), "tracestate": "congo=t61rcWkgMzE"], "\(traced)")
        let plain = await host.dispatch("hello.trace", options: Self.patient)
        #expect(plain.data == ["traceparent": .null, "tracestate": .null], "\(plain)")
        await host.shutdown()
    }

    /// With a tracer: one `csop.dispatch` span per request and a `csop.attempt` child per try,
    /// with the action, outcome and retries; a refused request gets its span too.
    @Test func requestsAndAttemptsBecomeSpans() async throws {
        let tracer = InMemoryTracer()
        let host = try await host(tracer: tracer)
        let flaky = await host.dispatch("diag.flaky", ["key": "t", "failures": 1], options: RequestOptions(timeout: 600_000, retry: 2))
        #expect(flaky.isOK)
        _ = await host.dispatch("nope.noop")
        let traced = await host.dispatch(Request(action: "hello.trace", options: Self.patient, trace: try TraceContext(traceparent: Self.parent)))
        await host.shutdown()

        let spans = tracer.finishedSpans
        let dispatches = spans.filter { $0.operationName == "csop.dispatch" }
        let flakyDispatch = try #require(dispatches.first { $0.attributes["csop.action"]?.toSpanAttribute() == "diag.flaky" })
        #expect(flakyDispatch.kind == .server)
        #expect(flakyDispatch.attributes["csop.outcome"]?.toSpanAttribute() == "OK")
        #expect(flakyDispatch.attributes["csop.retries"]?.toSpanAttribute() == 1)
        #expect(flakyDispatch.attributes["csop.request_id"] != nil)
        let attempts = spans.filter { $0.operationName == "csop.attempt" && $0.parentSpanID == flakyDispatch.spanID }
        #expect(attempts.count == 2, "\(spans.map(\.operationName))")
        let outcomes = attempts.compactMap { $0.attributes["csop.outcome"]?.toSpanAttribute() }
        #expect(outcomes.count == 2 && outcomes.contains("OK") && outcomes.contains("EXECUTION_FAILED"), "\(outcomes)")
        #expect(attempts.allSatisfy { $0.traceID == flakyDispatch.traceID })

        let refused = try #require(dispatches.first { $0.attributes["csop.action"]?.toSpanAttribute() == "nope.noop" })
        #expect(refused.attributes["csop.outcome"]?.toSpanAttribute() == "CAPABILITY_NOT_FOUND")
        #expect(refused.status?.code == .error)
        // This tracer injects no W3C header of its own: the plugin gets the caller's context.
        #expect(traced.data?["traceparent"] == .string(Self.parent))
    }

    /// A plugin's log line about a call (`csop_call.log`) carries the request's id and trace
    /// id, in process and from an isolated child.
    @Test(arguments: [false, true]) func aCallsLogLinesCarryItsRequestAndTraceIDs(isolated: Bool) async throws {
        let log = LogCapture()
        let host = try await host(isolatedHello: isolated, log: log)
        let trace = try TraceContext(traceparent: Self.parent)
        #expect(await host.dispatch(Request(id: "req-7", action: "hello.greet", options: Self.patient, trace: trace)).isOK)
        #expect(await host.dispatch(Request(id: "req-8", action: "hello.greet", options: Self.patient)).isOK)
        // An isolated child's lines arrive over its socket: wait for them.
        var lines: [(message: String, metadata: Logger.Metadata)] = []
        for _ in 0..<200 {
            lines = log.entries.filter { $0.message == "greeting a caller" }
            if lines.count >= 2 { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(lines.count == 2, "\(log.messages)")
        let traced = lines.first { $0.metadata["requestId"] == "req-7" }
        #expect(traced?.metadata["traceId"] == "0af7651916cd43dd8448eb211c80319c", "\(lines)")
        let plain = lines.first { $0.metadata["requestId"] == "req-8" }
        #expect(plain != nil && plain?.metadata["traceId"] == nil, "\(lines)")
        await host.shutdown()
    }

    /// A span a plugin measured (`csop_call.record_span`) becomes a child of the call's
    /// attempt span with its own times and attributes, in process and from an isolated child;
    /// a malformed one is logged and dropped. Without a tracer the plugin is told not to measure.
    @Test(arguments: [false, true]) func aPluginsSpansJoinTheAttempt(isolated: Bool) async throws {
        let tracer = InMemoryTracer()
        let log = LogCapture()
        let host = try await host(isolatedHello: isolated, tracer: tracer, log: log)
        #expect(await host.dispatch("hello.greet", options: Self.patient).isOK)
        var composed: FinishedInMemorySpan?
        for _ in 0..<200 {
            composed = tracer.finishedSpans.first { $0.operationName == "hello.compose" }
            if composed != nil, log.messages.contains(where: { $0.contains("dropped a span") }) { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        await host.shutdown()
        let span = try #require(composed, "\(tracer.finishedSpans.map(\.operationName))")
        let attempt = try #require(tracer.finishedSpans.first { $0.operationName == "csop.attempt" })
        #expect(span.parentSpanID == attempt.spanID && span.traceID == attempt.traceID)
        #expect(span.attributes["words"]?.toSpanAttribute() == 3)
        #expect(span.attributes["language"]?.toSpanAttribute() == "en")
        #expect(span.attributes["csop.plugin"]?.toSpanAttribute() == "hello")
        #expect(span.startInstant.nanosecondsSinceEpoch == 1_700_000_000_000_000_000)
        #expect(span.endInstant.nanosecondsSinceEpoch == 1_700_000_000_000_500_000)
        #expect(!tracer.finishedSpans.contains { $0.operationName == "hello.bad" })
        #expect(log.messages.contains { $0.contains("dropped a span the plugin recorded") && $0.contains("span.end") }, "\(log.messages)")

        let untraced = try await self.host(isolatedHello: isolated)
        #expect(await untraced.dispatch("hello.greet", options: Self.patient).isOK)
        await untraced.shutdown()
    }

    @Test func spansAreReadStrictly() throws {
        let good = try PluginSpan(json: Array(#"{"name":"q","start":1,"end":2,"attributes":{"a":"b","n":1.5,"f":true}}"#.utf8))
        #expect(good.name == "q" && good.attributes.count == 3)
        for (bad, words) in [
            (#"{"name":"q","start":2,"end":1}"#, "span.end"), (#"{"start":1,"end":2}"#, "span.name"),
            (#"{"name":"q","start":1,"end":2,"extra":1}"#, "extra"), (#"{"name":"q","start":1,"end":2,"attributes":{"a":[1]}}"#, "span.attributes.a"),
            (#"{"name":"q","start":-1,"end":2}"#, "span.start"), ("nope", "JSON"), (#"{"name":"q","start":1,"end":2,"attributes":3}"#, "attributes"),
        ] {
            #expect(throws: CSOPError.self, "\(bad)") { try PluginSpan(json: Array(bad.utf8)) }
            do { _ = try PluginSpan(json: Array(bad.utf8)) } catch { #expect(error.message.contains(words), "\(bad): \(error.message)") }
        }
    }

    /// The compute plugin records each traced job as a span under the attempt.
    @Test func computeJobsBecomeSpans() async throws {
        let tracer = InMemoryTracer()
        let plugins = try directory.writePlugins([PluginEntry("10-compute.conf", library: "libcsop-compute.so", config: ["workers": 1])])
        var configuration = HostConfiguration(
            pluginsDirectory: plugins, pluginSearchPath: [TestEnvironment.buildDirectory], searchExecutableDirectory: false)
        configuration.tracer = tracer
        let host = CSOPHost(configuration: configuration, scheduler: TimerThread.shared)
        let answer = await host.dispatch("compute.execute", ["task": "fibonacci", "data": ["n": 30]], options: Self.patient)
        #expect(answer.isOK, "\(answer)")
        await host.shutdown()
        let job = try #require(tracer.finishedSpans.first { $0.operationName == "compute.job" }, "\(tracer.finishedSpans.map(\.operationName))")
        let attempt = try #require(tracer.finishedSpans.first { $0.operationName == "csop.attempt" })
        #expect(job.parentSpanID == attempt.spanID)
        #expect(job.attributes["compute.task"]?.toSpanAttribute() == "fibonacci")
        #expect(job.attributes["csop.plugin"]?.toSpanAttribute() == "compute")
    }
}
