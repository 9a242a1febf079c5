import CSOPCore
import Instrumentation
import ServiceContextModule
public import Tracing

/// Spans for the router, with swift-distributed-tracing: `csop.dispatch` for each request
/// (kind server; a child of the caller's W3C context when the tracer can read it) and
/// `csop.attempt` for each try (its child). Attributes: `csop.action`, `csop.request_id`,
/// `csop.attempt`, `csop.outcome` (`OK` or the error code), `csop.retries`; a failure sets the
/// span's status to error with the code. Only built when ``HostConfiguration/tracer`` is set:
/// without one the router pays a nil check.
struct RequestTracing: Sendable {
    let tracer: any Tracer

    /// The request's span, started now, as a child of its `trace` when it has one.
    func startDispatch(_ request: Request) -> any Span {
        var context = ServiceContext.topLevel
        if let trace = request.trace {
            var carrier = ["traceparent": trace.traceparent]
            if let state = trace.state { carrier["tracestate"] = state }
            tracer.extract(carrier, into: &context, using: DictionaryCarrier())
        }
        let span = tracer.startSpan("csop.dispatch", context: context, ofKind: .server)
        span.attributes["csop.action"] = request.action
        span.attributes["csop.request_id"] = request.id
        return span
    }

    /// An attempt's span, a child of its request's.
    func startAttempt(number: Int, of request: any Span) -> any Span {
        let span = tracer.startSpan("csop.attempt", context: request.context, ofKind: .internal)
        span.attributes["csop.attempt"] = number + 1
        return span
    }

    /// The W3C context to hand a plugin for `span`: what the tracer injects as `traceparent`
    /// (and `tracestate`), or `fallback` (the caller's) when it injects none.
    func pluginTrace(for span: any Span, fallback: TraceContext?) -> TraceContext? {
        var carrier: [String: String] = [:]
        tracer.inject(span.context, into: &carrier, using: DictionaryCarrier())
        guard let traceparent = carrier["traceparent"] else { return fallback }
        return (try? TraceContext(traceparent: traceparent, tracestate: carrier["tracestate"])) ?? fallback
    }

    /// Records a span a plugin measured (`csop_call.record_span`) as a child of `parent`, with
    /// its own start and end.
    func record(_ measured: PluginSpan, under parent: any Span, plugin: String) {
        let span = tracer.startSpan(
            measured.name, context: parent.context, ofKind: .internal, at: DefaultTracerClock.Timestamp(nanosecondsSinceEpoch: measured.start))
        span.attributes["csop.plugin"] = plugin
        for (key, value) in measured.attributes { span.attributes[key] = value }
        if let error = measured.error {
            span.attributes["csop.outcome"] = error
            span.setStatus(SpanStatus(code: .error, message: error))
        }
        span.end(at: DefaultTracerClock.Timestamp(nanosecondsSinceEpoch: measured.end))
    }

    /// Records the outcome on `span` and ends it.
    static func end(_ span: any Span, outcome: Result<RawJSON, CSOPError>, retries: Int? = nil) {
        switch outcome {
        case .success: span.attributes["csop.outcome"] = "OK"
        case .failure(let error):
            span.attributes["csop.outcome"] = error.code.rawValue
            span.setStatus(SpanStatus(code: .error, message: error.code.rawValue))
        }
        if let retries { span.attributes["csop.retries"] = retries }
        span.end()
    }
}

/// Reads and writes trace headers in a `[String: String]` (names in lowercase).
struct DictionaryCarrier: Extractor, Injector {
    func extract(key: String, from carrier: [String: String]) -> String? { carrier[key.lowercased()] }
    func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) { carrier[key.lowercased()] = value }
}
