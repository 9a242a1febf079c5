public import CSOPCore
import CSOPPluginABI
import Synchronization

/// One operation request from the host. Complete it exactly once, from any thread; later
/// completions are ignored.
public final class PluginCall: Sendable {
    /// Unique per host; ``CSOPPlugin/cancel(callID:)`` names calls by it.
    public let id: UInt64
    /// The operation's name, e.g. `"save"`.
    public let operation: String
    /// Index of ``operation`` in the plugin's operation list.
    public let operationIndex: Int
    /// The request payload (always an object).
    public let payload: JSONValue
    /// Milliseconds the host gives this attempt.
    public let timeoutMilliseconds: Double
    /// Who the request runs for: nil for the local owner (everything allowed, no tenant), and
    /// nil when the host is older than the caller fields (its `csop_call` is too small).
    /// Keep each ``Caller/tenant``'s data apart; the host has already checked that its
    /// actions allow this call.
    public let caller: Caller?
    /// The W3C trace context the call runs in (`csop_call.traceparent`): start the plugin's own
    /// spans (a query, a job) as its children so they join the caller's trace. Nil when the
    /// request came without one and the host does not trace, or the host is older.
    public let trace: TraceContext?

    // The csop_call is owned by the host and valid until completed.
    private nonisolated(unsafe) let raw: UnsafePointer<csop_call>
    private let completed = Atomic<Bool>(false)

    init(raw: UnsafePointer<csop_call>, payload: JSONValue, caller: Caller?) {
        self.raw = raw
        self.id = raw.pointee.call_id
        self.operation = String(cString: raw.pointee.operation)
        self.operationIndex = Int(raw.pointee.operation_index)
        self.payload = payload
        self.timeoutMilliseconds = raw.pointee.timeout_ms
        self.caller = caller
        self.trace = Self.trace(of: raw)
    }

    /// The trace fields of `raw` (csop_plugin.h, `CSOP_CALL_HAS_TRACE`), when present and valid.
    static func trace(of raw: UnsafePointer<csop_call>) -> TraceContext? {
        guard Int(raw.pointee.struct_size) >= CallLayout.traceEnd, let traceparent = raw.pointee.traceparent else { return nil }
        let state = raw.pointee.tracestate.map { String(cString: $0) }
        return try? TraceContext(traceparent: String(cString: traceparent), tracestate: state)
    }

    /// The caller the host put in `raw` (csop_plugin.h, `CSOP_CALL_HAS_CALLER`): nil for the
    /// owner or an older host's smaller struct.
    /// - Throws: `UNAUTHENTICATED` when the fields are there but do not make a valid caller
    ///   (a subject or tenant missing, too long or with control characters, bad patterns):
    ///   such a call must fail, never run as the owner.
    static func caller(of raw: UnsafePointer<csop_call>) throws(CSOPError) -> Caller? {
        guard Int(raw.pointee.struct_size) >= CallLayout.callerEnd, let tenantBytes = raw.pointee.tenant else { return nil }
        func text(_ pointer: UnsafePointer<CChar>?, _ length: Int) -> String? {
            guard let pointer else { return nil }
            return pointer.withMemoryRebound(to: UInt8.self, capacity: length) {
                String(validating: UnsafeBufferPointer(start: $0, count: length), as: UTF8.self)
            }
        }
        guard let tenant = text(tenantBytes, raw.pointee.tenant_length),
            let subject = text(raw.pointee.subject, raw.pointee.subject_length),
            let patterns = text(raw.pointee.actions, raw.pointee.actions_length)
        else {
            throw CSOPError(.unauthenticated, "the host passed a caller whose tenant, subject or actions are missing or not UTF-8")
        }
        let actions: ActionPatterns
        do throws(CSOPError) {
            actions = try ActionPatterns(parsing: patterns)
        } catch {
            throw CSOPError(.unauthenticated, "the host passed a caller with unusable actions: \(error.message)")
        }
        let caller = Caller(subject: subject, tenant: tenant, actions: actions)
        try caller.validate()
        return caller
    }

    /// Writes a log line about this call through the host's logger, tagged with the request's
    /// id and trace id (`requestId` and `traceId` in `--log-format json`). Call it before
    /// completing the call. A host older than `csop_call.log` gets the line untagged through
    /// `host` (the plugin's ``PluginHost``) when one is given.
    public func log(_ level: PluginHost.LogLevel, _ message: String, host: PluginHost? = nil) {
        guard Int(raw.pointee.struct_size) >= CallLayout.logEnd, let log = raw.pointee.log else {
            host?.log(level, message)
            return
        }
        var text = message
        text.withUTF8 { bytes in
            bytes.withMemoryRebound(to: CChar.self) { log(raw, level.rawValue, $0.baseAddress, $0.count) }
        }
    }

    /// Whether the host records this call's spans (``recordSpan(_:start:end:attributes:error:)``):
    /// measure nothing when it does not.
    public var isTraced: Bool {
        return Int(raw.pointee.struct_size) >= CallLayout.recordSpanEnd && raw.pointee.record_span != nil
    }

    /// Records a span the plugin measured while serving this call (a query, a job, a
    /// publish), as a child of the host's span for the call. Times are nanoseconds since the
    /// Unix epoch (``WallClock/nanoseconds()``). Nothing happens when ``isTraced`` is false.
    /// Call it before completing the call.
    public func recordSpan(
        _ name: String, start: UInt64, end: UInt64, attributes: JSONObject = JSONObject(), error: String? = nil
    ) {
        guard isTraced, let record = raw.pointee.record_span else { return }
        var span: JSONObject = ["name": .string(name), "start": .int(Int64(start)), "end": .int(Int64(max(start, end)))]
        if !attributes.isEmpty { span["attributes"] = .object(attributes) }
        if let error { span["error"] = .string(error) }
        let json = JSONValue.object(span).serialized()
        json.withUnsafeBufferPointer { record(raw, $0.baseAddress, $0.count) }
    }

    /// Whether the call was already completed.
    public var isCompleted: Bool { completed.load(ordering: .acquiring) }

    /// Marks the point of no return: call it right before an effect that cannot be undone (a
    /// COMMIT, a NOTIFY), at most once, before completing the call.
    ///
    /// - Returns: true when the call is still wanted: the host no longer abandons it at its
    ///   timeout and answers with this call's outcome, so make the effect, then complete.
    ///   False when the host has already answered the call (it timed out): do not make the
    ///   effect (roll back), and complete with any error, which the host discards. A host
    ///   older than this entry point always gets true (its timeout may still answer first).
    public func beginCommit() -> Bool {
        guard !isCompleted else { return false }
        let size = Int(raw.pointee.struct_size)
        guard size >= CallLayout.beginCommitEnd,
            let begin = raw.pointee.begin_commit
        else { return true }
        return begin(raw) != 0
    }

    /// Completes with a result value.
    public func succeed(_ value: JSONValue) {
        succeed(rawJSON: value.serialized())
    }

    /// Completes with a result that is already serialized JSON (one JSON value).
    public func succeed(rawJSON bytes: [UInt8]) {
        guard claim() else { return }
        bytes.withUnsafeBufferPointer { buffer in
            var outcome = csop_outcome()
            outcome.struct_size = UInt32(MemoryLayout<csop_outcome>.size)
            outcome.status = Int32(CSOP_STATUS_OK)
            outcome.data = buffer.baseAddress
            outcome.data_length = buffer.count
            raw.pointee.complete(raw, &outcome)
        }
    }

    /// Completes with a reply.
    public func succeed(_ reply: PluginReply) {
        switch reply {
        case .value(let value): succeed(value)
        case .raw(let bytes): succeed(rawJSON: bytes)
        }
    }

    /// Completes with an error.
    public func fail(_ error: CSOPError) {
        guard claim() else { return }
        error.withABIError { error in
            var outcome = csop_outcome()
            outcome.struct_size = UInt32(MemoryLayout<csop_outcome>.size)
            outcome.status = Int32(CSOP_STATUS_ERROR)
            outcome.error = error
            raw.pointee.complete(raw, &outcome)
        }
    }

    /// Completes with a value or an error.
    public func complete(_ result: Result<JSONValue, CSOPError>) {
        switch result {
        case .success(let value): succeed(value)
        case .failure(let error): fail(error)
        }
    }

    /// Completes with serialized JSON or an error.
    public func complete(rawJSON result: Result<[UInt8], CSOPError>) {
        switch result {
        case .success(let bytes): succeed(rawJSON: bytes)
        case .failure(let error): fail(error)
        }
    }

    private func claim() -> Bool {
        !completed.exchange(true, ordering: .acquiringAndReleasing)
    }
}

/// Where each later field of `csop_call` ends: a call whose `struct_size` reaches it carries the
/// field (csop_plugin.h's `CSOP_CALL_HAS_*`). Computed once: a key path's offset is not free.
enum CallLayout {
    static let beginCommitEnd = MemoryLayout<csop_call>.offset(of: \csop_call.begin_commit)! + MemoryLayout<csop_begin_commit_fn>.size
    static let callerEnd = MemoryLayout<csop_call>.offset(of: \csop_call.actions_length)! + MemoryLayout<Int>.size
    static let traceEnd = MemoryLayout<csop_call>.offset(of: \csop_call.tracestate_length)! + MemoryLayout<Int>.size
    static let logEnd = MemoryLayout<csop_call>.offset(of: \csop_call.log)! + MemoryLayout<UnsafeRawPointer>.size
    static let recordSpanEnd = MemoryLayout<csop_call>.offset(of: \csop_call.record_span)! + MemoryLayout<UnsafeRawPointer>.size
}
