import CSOPCore
import Logging
import Synchronization
import Tracing

/// Validates requests and runs them on capabilities with a timeout per attempt and
/// exponential backoff between retries.
///
/// Only failures marked retryable are retried, and never those whose code says the request
/// itself is wrong (``Router/isNeverRetried(_:)``). A timed-out attempt is cancelled on its
/// capability before the router moves on, so abandoned work does not keep running — unless
/// the capability had begun committing (``Attempt/beginCommit()``): then the answer waits
/// for its outcome, so a `TIMEOUT` always means the effect did not happen. A capability with
/// a ``CircuitBreaker`` is asked before every attempt and told every outcome: an open circuit
/// answers `CIRCUIT_OPEN` at once, and ends the request rather than retry into it.
final class Router: Sendable {
    /// The documented rule: `INVALID_*`, `*_NOT_FOUND`, `CONFLICT`, `QUOTA_EXCEEDED`, `FORBIDDEN`
    /// and `UNAUTHENTICATED` describe the request (or who sent it), not the moment, so retrying
    /// cannot help, whatever the plugin says. It holds for every plugin's codes, a third party's
    /// `USER_NOT_FOUND` included.
    static func isNeverRetried(_ code: ErrorCode) -> Bool {
        let raw = code.rawValue
        return raw.hasPrefix("INVALID_") || raw.hasSuffix("_NOT_FOUND") || raw == "CONFLICT" || raw == "QUOTA_EXCEEDED"
            || raw == "FORBIDDEN" || raw == "UNAUTHENTICATED"
    }

    /// What serves each domain now; a reload swaps it whole (``replaceCapabilities(_:)``).
    /// Read without a lock on every request: see ``CapabilityTable``.
    private let current: Atomic<Unmanaged<CapabilityTable>>
    /// Every table ever current, kept for the life of the router: a request may still read
    /// one a reload has just replaced (see ``resolveCapability(_:)``). A table is a small
    /// dictionary; reloads are rare.
    private let tables: Mutex<[CapabilityTable]>
    private let missingDomainHint: @Sendable (String) -> String?
    private let scheduler: any Scheduler
    private let backoff: BackoffPolicy
    private let random: @Sendable () -> Double
    private let nextCallID = Atomic<UInt64>(0)
    private let accepting = Atomic<Bool>(true)
    private let inFlight = Atomic<Int>(0)
    private let inFlightBytes = Atomic<Int>(0)
    /// The most payload bytes held in requests not yet answered.
    let maxInFlightBytes: Int
    /// Where audited requests are recorded (``AuditLog/record(request:outcome:)``); nil: nowhere.
    private let audit: AuditLog?
    /// Where every answer is counted; nil: metrics are off.
    private let metrics: HostMetrics?
    /// Spans for requests and attempts; nil: no tracer is set.
    private let tracing: RequestTracing?

    /// - Parameters:
    ///   - capabilities: what to route to, by domain; names must be unique.
    ///   - scheduler: clock and timers (a manual one in tests).
    ///   - random: jitter source in [0, 1).
    ///   - missingDomainHint: why no capability serves a domain (its entry failed to load...),
    ///     appended to `CAPABILITY_NOT_FOUND`.
    init(
        capabilities: [any Capability], scheduler: any Scheduler = TimerThread.shared,
        backoff: BackoffPolicy = .standard, random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) },
        maxInFlightBytes: Int = HostConfiguration.defaultMaxInFlightBytes, audit: AuditLog? = nil, metrics: HostMetrics? = nil,
        tracer: (any Tracer)? = nil, missingDomainHint: @escaping @Sendable (String) -> String? = { _ in nil }
    ) {
        self.audit = audit
        self.metrics = metrics
        self.tracing = tracer.map { RequestTracing(tracer: $0) }
        self.missingDomainHint = missingDomainHint
        let table = CapabilityTable(capabilities, metrics: metrics)
        self.current = Atomic(Unmanaged.passUnretained(table))
        self.tables = Mutex([table])
        self.scheduler = scheduler
        self.backoff = backoff
        self.random = random
        self.maxInFlightBytes = maxInFlightBytes
    }

    /// Routes new requests to `capabilities` from now on. A request already routed keeps its
    /// capability (its retries included) until it is answered: a capability taken out here
    /// may be destroyed once its ``Capability/users`` and running calls reach zero.
    func replaceCapabilities(_ capabilities: [any Capability]) {
        let table = CapabilityTable(capabilities, metrics: metrics)
        tables.withLock { $0.append(table) }
        // Sequentially consistent, with the loads in resolveCapability: a reloader that reads
        // a capability's user count after this store sees every request that will use it.
        current.store(Unmanaged.passUnretained(table), ordering: .sequentiallyConsistent)
    }

    /// The capability serving `domain` now, entered (``Capability/enter()``), or nil.
    ///
    /// Lock-free: enter, then check that the table is still current. A request that entered
    /// before a reload swapped the table is seen by the reloader's drain (which reads the
    /// count after the swap); one that entered after it sees the new table, leaves, and reads
    /// again, never calling the capability it entered — whose object stays valid, as every
    /// table keeps its capabilities.
    private func resolveCapability(_ domain: String) -> (any Capability, CapabilityTable)? {
        while true {
            let table = current.load(ordering: .sequentiallyConsistent)
            guard let capability = table.takeUnretainedValue().byName[domain] else { return nil }
            capability.enter()
            if current.load(ordering: .sequentiallyConsistent).toOpaque() == table.toOpaque() {
                return (capability, table.takeUnretainedValue())
            }
            capability.leave()
        }
    }

    /// Requests dispatched and not yet answered.
    var pendingCount: Int { inFlight.load(ordering: .acquiring) }

    /// Their payload bytes.
    var inFlightByteCount: Int { inFlightBytes.load(ordering: .acquiring) }

    /// Refuses new requests with `NOT_INITIALIZED` from now on.
    func stopAccepting() { accepting.store(false, ordering: .releasing) }

    /// Runs `request` and calls `completion` exactly once, possibly before returning.
    /// - Returns: whether the answer comes from a thread of this process
    ///   (``Capability/answersInProcess``); false when it was refused.
    @discardableResult
    func dispatch(_ request: Request, completion: @escaping @Sendable (Response) -> Void) -> Bool {
        guard let audit else { return route(request, completion: completion) }
        return route(request) { response in
            audit.record(request: request, outcome: response.outcome)
            completion(response)
        }
    }

    private func route(_ request: Request, completion: @escaping @Sendable (Response) -> Void) -> Bool {
        let start = scheduler.now()
        let span = tracing?.startDispatch(request)
        guard accepting.load(ordering: .acquiring) else {
            let error = CSOPError(.notInitialized, "the host is shutting down and accepts no new requests")
            refuse(request, error, metrics: metrics?.unrouted, span: span, start: start, completion: completion)
            return false
        }
        let resolved: (capability: any Capability, table: CapabilityTable, operation: Int)
        do throws(CSOPError) {
            resolved = try resolve(request)
        } catch {
            refuse(request, error, metrics: metrics?.unrouted, span: span, start: start, completion: completion)
            return false
        }
        let operationMetrics = metrics == nil ? nil : resolved.table.metrics[ObjectIdentifier(resolved.capability)]?[resolved.operation]
        let payload = request.payload.serialized()
        if let refusal = admit(payload.count) {
            resolved.capability.leave()
            refuse(request, refusal, metrics: operationMetrics, span: span, start: start, completion: completion)
            return false
        }
        inFlight.add(1, ordering: .relaxed)
        let job = Job(
            request: request, capability: resolved.capability, operation: resolved.operation, payload: payload, start: start,
            metrics: operationMetrics, span: span, completion: completion)
        attempt(job, number: 0)
        return resolved.capability.answersInProcess
    }

    /// Answers a request refused before it ran: counted, its span ended.
    private func refuse(
        _ request: Request, _ error: CSOPError, metrics: OperationMetrics?, span: (any Span)?, start: Double,
        completion: @Sendable (Response) -> Void
    ) {
        metrics?.record(.failure(error), milliseconds: nil)
        if let span { RequestTracing.end(span, outcome: .failure(error)) }
        completion(Response(id: request.id, outcome: .failure(error), duration: scheduler.now() - start))
    }

    /// Counts `size` payload bytes in flight, or says why not: the byte budget bounds the
    /// memory that requests waiting for an answer hold, whatever their count.
    private func admit(_ size: Int) -> CSOPError? {
        guard size <= maxInFlightBytes else {
            return .invalidPayload(
                "the payload is \(size) bytes; this host holds at most \(maxInFlightBytes) bytes of requests at once (maxInFlightBytes): split the work or raise the budget")
        }
        let total = inFlightBytes.add(size, ordering: .relaxed).newValue
        guard total > maxInFlightBytes else { return nil }
        inFlightBytes.subtract(size, ordering: .relaxed)
        return CSOPError(
            .queueFull,
            "the host holds \(total - size) bytes of requests not yet answered, and this one's \(size) would pass its budget of \(maxInFlightBytes) (maxInFlightBytes); retry when fewer are running",
            retryable: true)
    }

    private func resolve(_ request: Request) throws(CSOPError) -> (capability: any Capability, table: CapabilityTable, operation: Int) {
        let action = try Action(request.action)
        if let caller = request.caller {
            // Before the capability is looked up: a forbidden domain does not reveal whether it is loaded.
            try caller.validate()
            guard caller.allows(request.action) else {
                let allowed = caller.actions.patterns.isEmpty ? "nothing" : caller.actions.patterns.joined(separator: ", ")
                throw CSOPError(.forbidden, "\(request.action) is not allowed: the token allows only \(allowed)")
            }
        }
        guard case .object = request.payload else {
            throw .invalidPayload("payload must be a JSON object, got \(request.payload.typeName)")
        }
        try request.options.validate()
        guard let (capability, table) = resolveCapability(action.domain) else {
            let known = current.load(ordering: .acquiring).takeUnretainedValue().byName.keys.sorted().joined(separator: ", ")
            var message = "no plugin serves \"\(action.domain)\"; loaded capabilities: \(known.isEmpty ? "none" : known)"
            if let hint = missingDomainHint(action.domain) { message += "; \(hint)" }
            throw CSOPError(.capabilityNotFound, message)
        }
        guard let index = capability.operationIndex(action.operation) else {
            capability.leave()
            throw CSOPError(
                .operationNotFound,
                "\(action.domain) has no operation \"\(action.operation)\"; it offers: \(capability.operations.joined(separator: ", "))")
        }
        return (capability, table, index)
    }

    /// How long past its timeout an attempt that began committing (``Attempt/beginCommit()``)
    /// may take before it is answered as a `TIMEOUT` whose effect is unknown.
    static let commitGrace: Double = 30_000

    /// A request being routed, across its attempts.
    final class Job: Sendable {
        let request: Request
        let capability: any Capability
        let operation: Int
        let payload: [UInt8]
        let start: Double
        /// Where its answer is counted; nil when metrics are off.
        let metrics: OperationMetrics?
        /// Its `csop.dispatch` span; nil when no tracer is set.
        let span: (any Span)?
        let completion: @Sendable (Response) -> Void

        init(
            request: Request, capability: any Capability, operation: Int, payload: [UInt8], start: Double,
            metrics: OperationMetrics? = nil, span: (any Span)? = nil, completion: @escaping @Sendable (Response) -> Void
        ) {
            self.request = request
            self.metrics = metrics
            self.span = span
            self.capability = capability
            self.operation = operation
            self.payload = payload
            self.start = start
            self.completion = completion
        }
    }

    private func attempt(_ job: Job, number: Int) {
        var isProbe = false
        if let circuit = job.capability.circuit {
            switch circuit.admit(now: scheduler.now()) {
            case .allow: break
            case .probe: isProbe = true
            case .refuse(let error):
                // Final: retrying against an open circuit is the hammering it exists to stop.
                return respond(job, outcome: .failure(error), retries: number)
            }
        }
        let callID = nextCallID.add(1, ordering: .relaxed).newValue
        var span: (any Span)?
        var trace = job.request.trace
        if let tracing, let parent = job.span {
            let attemptSpan = tracing.startAttempt(number: number, of: parent)
            trace = tracing.pluginTrace(for: attemptSpan, fallback: trace)
            span = attemptSpan
        }
        let attempt = Attempt(router: self, job: job, number: number, callID: callID, isProbe: isProbe, trace: trace, span: span)
        // Armed before invoking: a plugin that works inline (a SQLite read) must be
        // interruptible too, from the timer thread, while the caller is still inside invoke.
        attempt.arm(scheduler.schedule(after: job.request.options.timeout) { attempt.timedOut() })
        job.capability.invoke(
            callID: callID, operation: job.operation, payload: job.payload, timeoutMilliseconds: job.request.options.timeout,
            caller: job.request.caller, attempt)
    }

    /// A span a plugin measured under `parent` (see ``Attempt/recordSpan(_:plugin:logger:)``).
    func record(pluginSpan json: [UInt8], under parent: any Span, plugin: String, logger: Logger) {
        guard let tracing else { return }
        do throws(CSOPError) {
            tracing.record(try PluginSpan(json: json), under: parent, plugin: plugin)
        } catch {
            logger.warning("dropped a span the plugin recorded: \(error.message)")
        }
    }

    /// A timed-out attempt that had not begun committing: cancel it on its capability and
    /// answer (or retry) `TIMEOUT`.
    func abandon(_ attempt: Attempt) {
        let job = attempt.job
        job.capability.cancel(callID: attempt.callID)
        job.metrics?.timeouts.increment()
        let timeout = job.request.options.timeout
        let error = CSOPError(
            .timeout,
            "\(job.request.action) did not finish within \(Self.format(timeout)) ms (attempt \(attempt.number + 1) of \(job.request.options.retry + 1)) and was cancelled; raise options.timeout if it needs longer",
            retryable: true)
        settle(attempt, outcome: .failure(error))
    }

    func scheduleCommitDeadline(_ attempt: Attempt) -> any ScheduledTimer {
        scheduler.schedule(after: Self.commitGrace) { attempt.commitOverdue() }
    }

    func commitOverdueError(_ attempt: Attempt) -> CSOPError {
        let job = attempt.job
        return CSOPError(
            .timeout,
            "\(job.request.action) began committing within its \(Self.format(job.request.options.timeout)) ms timeout and has not finished \(Self.format(Self.commitGrace)) ms after it; its effect may or may not have happened: read the data back before you retry",
            retryable: false)
    }

    func settle(_ attempt: Attempt, outcome: Result<RawJSON, CSOPError>) {
        let job = attempt.job
        let number = attempt.number
        let retryable: Bool = if case .failure(let error) = outcome { error.retryable && !Self.isNeverRetried(error.code) } else { false }
        if let span = attempt.span { RequestTracing.end(span, outcome: outcome) }
        job.capability.circuit?.record(failed: retryable, probe: attempt.isProbe, now: scheduler.now())
        if retryable, number < job.request.options.retry, accepting.load(ordering: .acquiring) {
            let delay = backoff.delay(afterAttempt: number, random: random())
            job.metrics?.retries.increment()
            _ = scheduler.schedule(after: delay) { [self] in self.attempt(job, number: number + 1) }
            return
        }
        respond(job, outcome: outcome, retries: number)
    }

    /// Answers `job` with `outcome` (a retryable error whose code is never retried loses its
    /// retry flag) and lets its payload bytes go.
    private func respond(_ job: Job, outcome: Result<RawJSON, CSOPError>, retries: Int) {
        var outcome = outcome
        if case .failure(var error) = outcome, error.retryable, Self.isNeverRetried(error.code) {
            error.retryable = false
            outcome = .failure(error)
        }
        var response = Response(id: job.request.id, outcome: outcome, duration: scheduler.now() - job.start)
        response.generation = job.capability.generation
        job.metrics?.record(outcome, milliseconds: response.duration)
        if let span = job.span { RequestTracing.end(span, outcome: outcome, retries: retries) }
        inFlightBytes.subtract(job.payload.count, ordering: .relaxed)
        inFlight.subtract(1, ordering: .releasing)
        job.capability.leave()
        job.completion(response)
    }

    private static func format(_ milliseconds: Double) -> String {
        milliseconds == milliseconds.rounded() ? String(Int64(milliseconds)) : String(milliseconds)
    }
}

/// The capabilities a router serves, by domain: immutable, replaced whole by a reload.
final class CapabilityTable: Sendable {
    let byName: [String: any Capability]
    /// Each capability's operations' series, by capability object and operation index; empty
    /// when metrics are off (a separate map, so a request without metrics copies nothing more,
    /// keyed by identity so a request with them hashes no string twice).
    let metrics: [ObjectIdentifier: [OperationMetrics]]

    /// The first of each name wins.
    init(_ capabilities: [any Capability], metrics: HostMetrics?) {
        var byName: [String: any Capability] = [:]
        var series: [ObjectIdentifier: [OperationMetrics]] = [:]
        for capability in capabilities where byName[capability.name] == nil {
            byName[capability.name] = capability
            if let metrics {
                series[ObjectIdentifier(capability)] = capability.operations.map { metrics.operation("\(capability.name).\($0)") }
            }
        }
        self.byName = byName
        self.metrics = series
    }
}
