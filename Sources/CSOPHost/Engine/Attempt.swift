import CSOPCore
import Logging
import Synchronization
import Tracing

/// One attempt at a request, as the capability running it sees it: finish it exactly once
/// with ``complete(_:)``, and call ``beginCommit()`` right before an effect that cannot be
/// undone.
///
/// An attempt ends at its completion or at its timeout, whichever comes first, with one
/// exception that keeps answers true: once the capability has begun committing, the timeout
/// no longer abandons it. The answer is then the completion, however late, and if none comes
/// within ``Router/commitGrace`` after the timeout, a non-retryable `TIMEOUT` that says the
/// effect may have happened.
final class Attempt: CallSink, Sendable {
    let callID: UInt64
    /// Zero-based: the first try is attempt 0.
    let number: Int
    let job: Router.Job
    /// The one call an open circuit let through after its cool-down (``CircuitBreaker``).
    let isProbe: Bool
    /// The W3C context the plugin gets (`csop_call.traceparent`): this attempt's span's when a
    /// tracer is set, else the request's own.
    var trace: TraceContext? { tracing?.trace }
    /// Its `csop.attempt` span; nil when no tracer is set.
    var span: (any Span)? { tracing?.span }
    /// Both, boxed: most attempts have neither, and then carry one nil pointer.
    private let tracing: TraceBox?
    private let router: Router

    private final class TraceBox: Sendable {
        let trace: TraceContext?
        let span: (any Span)?
        init(trace: TraceContext?, span: (any Span)?) {
            self.trace = trace
            self.span = span
        }
    }

    private struct State {
        var finished = false
        var committing = false
        var timer: (any ScheduledTimer)?
    }
    private let state = Mutex(State())

    init(
        router: Router, job: Router.Job, number: Int, callID: UInt64, isProbe: Bool = false, trace: TraceContext? = nil,
        span: (any Span)? = nil
    ) {
        self.tracing = trace == nil && span == nil ? nil : TraceBox(trace: trace, span: span)
        self.router = router
        self.isProbe = isProbe
        self.job = job
        self.number = number
        self.callID = callID
    }

    /// Finishes the attempt with the capability's outcome; ignored if it already finished (it
    /// timed out). Any thread, before or after `invoke` returns.
    func complete(_ outcome: Result<RawJSON, CSOPError>) {
        let (first, timer) = state.withLock { state in
            defer {
                state.finished = true
                state.timer = nil
            }
            return (!state.finished, state.timer)
        }
        guard first else { return }
        timer?.cancel()
        router.settle(self, outcome: outcome)
    }

    /// Claims the attempt for an irreversible effect.
    /// - Returns: true when it is still wanted (the timeout will wait for the completion from
    ///   now on); false when it was already answered, so the effect must not happen.
    func beginCommit() -> Bool {
        state.withLock { state in
            guard !state.finished else { return false }
            state.committing = true
            return true
        }
    }

    /// Logs with the request's id (`requestId`) and its trace id (`traceId`) as metadata.
    func log(_ level: Logger.Level, _ message: String, plugin logger: Logger) {
        var metadata: Logger.Metadata = ["requestId": .string(job.request.id)]
        if let trace { metadata["traceId"] = .string(trace.traceID) }
        logger.log(level: level, "\(message)", metadata: metadata)
    }

    /// Records it under this attempt's span; dropped when the host does not trace.
    func recordSpan(_ json: [UInt8], plugin name: String, logger: Logger) {
        guard let span else { return }
        router.record(pluginSpan: json, under: span, plugin: name, logger: logger)
    }

    /// Arms the attempt's timeout: `timer` is kept so a completion can cancel it.
    func arm(_ timer: any ScheduledTimer) {
        let stale = state.withLock { state -> Bool in
            guard !state.finished else { return true }
            state.timer = timer
            return false
        }
        if stale { timer.cancel() }
    }

    /// The timeout passed: abandons the attempt unless it is committing, in which case it
    /// waits ``Router/commitGrace`` more for the completion.
    func timedOut() {
        let committing = state.withLock { state -> Bool? in
            guard !state.finished else { return nil }
            state.timer = nil
            if state.committing { return true }
            state.finished = true
            return false
        }
        switch committing {
        case nil: return
        case false?: router.abandon(self)
        case true?: arm(router.scheduleCommitDeadline(self))
        }
    }

    /// The commit grace passed too: answers that the outcome is unknown.
    func commitOverdue() {
        let first = state.withLock { state in
            defer { state.finished = true }
            return !state.finished
        }
        guard first else { return }
        router.settle(self, outcome: .failure(router.commitOverdueError(self)))
    }
}

/// Where a plugin call's outcome goes: the router's ``Attempt``, or, in an isolated plugin's
/// child process, the frame that carries it back to the host.
protocol CallSink: AnyObject, Sendable {
    /// The outcome, exactly once; later ones are ignored.
    func complete(_ outcome: Result<RawJSON, CSOPError>)
    /// True while the call is still wanted (see ``Attempt/beginCommit()``).
    func beginCommit() -> Bool
    /// A log line the plugin wrote about the call (`csop_call.log`), for `logger` (the
    /// plugin's) to write with the request's id and trace id.
    func log(_ level: Logger.Level, _ message: String, plugin logger: Logger)
    /// A span the plugin measured for the call (`csop_call.record_span`, JSON); a malformed
    /// one is reported to `logger`.
    func recordSpan(_ json: [UInt8], plugin name: String, logger: Logger)
}
