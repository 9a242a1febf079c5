import CSOPCore
import CSOPHostShims
import CSOPPluginABI
import Glibc
import Logging
import Synchronization

/// A loaded plugin instance seen as a ``Capability``: turns router calls into `csop_call`s
/// and plugin completions back into results. Owns what it hands the plugin: the host API
/// table (through its context) and the operation-name strings, freed when it goes.
final class PluginCapability: LoadedPlugin, @unchecked Sendable {  // Immutable after init; the instance is thread-safe by contract.
    let name: String
    let version: String
    let operations: [String]
    let library: PluginLibrary
    let file: String
    let circuit: CircuitBreaker?
    /// Which instance of its domain this is in this host: 1 for the first, one more for each
    /// reload that replaced it.
    let generation: Int
    /// When it was created (UTC, ISO 8601).
    let loadedAt: String

    private let descriptor: UnsafePointer<csop_plugin_descriptor>
    private let instance: UnsafeMutableRawPointer
    private let context: PluginHostContext
    private let operationNames: [UnsafeMutablePointer<CChar>]
    private let operationLengths: [Int]
    /// Names this plugin in the call struct's `reserved` field, for a completion that
    /// arrives after the call was already completed (see ``CallRecords``).
    private let recordID: UInt32
    private let operationIndexes: [String: Int]
    private let running = Atomic<Int>(0)
    /// Requests routed here and not answered yet (``Capability/enter()``).
    private let users = Atomic<Int>(0)
    /// Set once `destroy` ran; held while `write_metrics` runs, so a scrape never meets a
    /// destroyed instance (a reload destroys one whenever it has drained).
    private let destroyed = Mutex<Bool>(false)
    /// Calls the router cancelled (timed out) that the plugin has not completed yet, by id;
    /// the count lets the completion path skip the lock while there are none.
    private let abandoned = Mutex<Set<UInt64>>([])
    private let abandonedCount = Atomic<Int>(0)

    init(
        name: String, version: String, operations: [String], library: PluginLibrary, file: String,
        descriptor: UnsafePointer<csop_plugin_descriptor>, instance: UnsafeMutableRawPointer, context: PluginHostContext,
        circuit: CircuitBreaker? = nil, generation: Int = 1
    ) {
        self.circuit = circuit
        self.generation = generation
        context.generation.store(generation, ordering: .relaxed)
        self.loadedAt = WallClock.iso8601()
        self.name = name
        self.version = version
        self.operations = operations
        self.library = library
        self.file = file
        self.descriptor = descriptor
        self.instance = instance
        self.context = context
        self.operationNames = operations.map { strdup($0)! }
        self.operationLengths = operations.map { $0.utf8.count }
        self.recordID = CallRecords.shared.register(plugin: name, logger: context.logger)
        var indexes: [String: Int] = [:]
        for (i, op) in operations.enumerated() { indexes[op] = i }
        self.operationIndexes = indexes
    }

    deinit {
        for name in operationNames { free(name) }
        // A plugin never destroyed (calls still running at shutdown) may still call the host
        // from its own threads: its API table must stay valid, so the context is kept.
        if !destroyed.withLock({ $0 }) { _ = Unmanaged.passRetained(context) }
    }

    func operationIndex(_ operation: String) -> Int? { operationIndexes[operation] }

    /// Calls that were invoked and not yet completed.
    var runningCount: Int { running.load(ordering: .acquiring) }

    // Sequentially consistent: see Router.resolveCapability.
    func enter() { users.add(1, ordering: .sequentiallyConsistent) }
    func leave() { users.subtract(1, ordering: .releasing) }

    /// True when no request uses it and no call of it runs: a reload that took it out of the
    /// router may destroy it.
    var isIdle: Bool { users.load(ordering: .sequentiallyConsistent) == 0 && running.load(ordering: .acquiring) == 0 }

    func invoke(
        callID: UInt64, operation: Int, payload: [UInt8], timeoutMilliseconds: Double, caller: Caller?, _ attempt: Attempt
    ) {
        invoke(
            callID: callID, operation: operation, payload: payload, timeoutMilliseconds: timeoutMilliseconds, caller: caller,
            trace: attempt.trace, traced: attempt.span != nil, pending: PendingCall(owner: self, attempt: attempt))
    }

    /// Calls the plugin; its completion goes to `sink`.
    /// - Parameter traced: whether the host records the plugin's spans (`csop_call.record_span` is set).
    func invoke(
        callID: UInt64, operation: Int, payload: [UInt8], timeoutMilliseconds: Double, caller: Caller?, trace: TraceContext?,
        traced: Bool, sink: any CallSink
    ) {
        invoke(
            callID: callID, operation: operation, payload: payload, timeoutMilliseconds: timeoutMilliseconds, caller: caller,
            trace: trace, traced: traced, pending: PendingCall(owner: self, sink: sink))
    }

    private func invoke(
        callID: UInt64, operation: Int, payload: [UInt8], timeoutMilliseconds: Double, caller: Caller?, trace: TraceContext?,
        traced: Bool, pending: PendingCall
    ) {
        let raw = UnsafeMutablePointer<csop_call>.allocate(capacity: 1)
        running.add(1, ordering: .relaxed)
        payload.withUnsafeBufferPointer { bytes in
            raw.initialize(
                to: csop_call(
                    struct_size: UInt32(MemoryLayout<csop_call>.size), reserved: recordID, call_id: callID,
                    operation: UnsafePointer(operationNames[operation]), operation_length: operationLengths[operation],
                    operation_index: UInt32(operation), reserved2: 0,
                    payload: bytes.baseAddress, payload_length: bytes.count,
                    timeout_ms: timeoutMilliseconds, complete: completeCall,
                    host_reserved: Unmanaged.passRetained(pending).toOpaque(), begin_commit: beginCommit,
                    tenant: nil, tenant_length: 0, subject: nil, subject_length: 0, actions: nil, actions_length: 0,
                    traceparent: nil, traceparent_length: 0, tracestate: nil, tracestate_length: 0, log: logCall,
                    record_span: traced ? recordSpanCall : nil))
            guard caller != nil || trace != nil else { return descriptor.pointee.invoke(instance, raw) }
            // Valid only during invoke (csop_plugin.h), like the payload: the plugin copies what it keeps.
            withCString(caller?.tenant) { tenant in
                withCString(caller?.subject) { subject in
                    withCString(caller?.actions.description) { actions in
                        withCString(trace?.traceparent) { traceparent in
                            withCString(trace?.state) { tracestate in
                                raw.pointee.tenant = tenant.pointer
                                raw.pointee.tenant_length = tenant.length
                                raw.pointee.subject = subject.pointer
                                raw.pointee.subject_length = subject.length
                                raw.pointee.actions = actions.pointer
                                raw.pointee.actions_length = actions.length
                                raw.pointee.traceparent = traceparent.pointer
                                raw.pointee.traceparent_length = traceparent.length
                                raw.pointee.tracestate = tracestate.pointer
                                raw.pointee.tracestate_length = tracestate.length
                                descriptor.pointee.invoke(instance, raw)
                            }
                        }
                    }
                }
            }
        }
    }

    func cancel(callID: UInt64) {
        abandoned.withLock { calls in
            if calls.insert(callID).inserted { abandonedCount.add(1, ordering: .releasing) }
        }
        descriptor.pointee.cancel?(instance, callID)
    }

    fileprivate func callFinished(_ callID: UInt64) {
        if abandonedCount.load(ordering: .acquiring) > 0 {
            abandoned.withLock { calls in
                if calls.remove(callID) != nil { abandonedCount.subtract(1, ordering: .releasing) }
            }
        }
        running.subtract(1, ordering: .releasing)
    }

    /// Calls that timed out and that the plugin has still not completed, oldest id first: a
    /// plugin that never completes a call shows here (`host.info`) and in the shutdown log.
    var abandonedCalls: [UInt64] { abandoned.withLock { $0.sorted() } }

    /// Destroys the instance; the caller has waited for running calls.
    func destroy() {
        let first = destroyed.withLock { destroyed in
            defer { destroyed = true }
            return !destroyed
        }
        if first { descriptor.pointee.destroy(instance) }
    }

    /// Appends the plugin's own metrics (`write_metrics`), keeping only its own series
    /// (``PluginMetricsText``); nothing once destroyed or when the plugin has none.
    func writeMetrics(into buffer: inout [UInt8]) {
        // CSOP_DESCRIPTOR_HAS_WRITE_METRICS: an older descriptor ends before the field.
        let end = MemoryLayout<csop_plugin_descriptor>.offset(of: \.write_metrics)! + MemoryLayout<UnsafeRawPointer>.size
        guard Int(descriptor.pointee.struct_size) >= end, let write = descriptor.pointee.write_metrics else { return }
        let text = destroyed.withLock { destroyed -> [UInt8] in
            guard !destroyed else { return [] }
            var text: [UInt8] = []
            withUnsafeMutablePointer(to: &text) { target in
                write(instance, target) { context, bytes, length in
                    guard let context, let bytes, length > 0 else { return }
                    let text = context.assumingMemoryBound(to: [UInt8].self)
                    guard text.pointee.count + length <= PluginMetricsText.maxBytes else { return }
                    text.pointee.append(contentsOf: UnsafeBufferPointer(start: bytes, count: length))
                }
            }
            return text
        }
        PluginMetricsText.append(text, plugin: name, to: &buffer)
    }

    var libraryPath: String { library.path }

    /// The plugin's logger (tagged with its name).
    var pluginLogger: Logger { context.logger }
}

/// One call in flight, reached through the call's `host_reserved`: the router's attempt
/// (called directly, on the hot path), or another sink (an isolated plugin's child).
private final class PendingCall {
    let owner: PluginCapability
    let attempt: Attempt?
    let sink: (any CallSink)?

    init(owner: PluginCapability, attempt: Attempt) {
        self.owner = owner
        self.attempt = attempt
        self.sink = nil
    }

    init(owner: PluginCapability, sink: any CallSink) {
        self.owner = owner
        self.attempt = nil
        self.sink = sink
    }

    func complete(_ result: Result<RawJSON, CSOPError>) {
        if let attempt { attempt.complete(result) } else { sink?.complete(result) }
    }

    func beginCommit() -> Bool {
        if let attempt { attempt.beginCommit() } else { sink?.beginCommit() ?? false }
    }

    func log(_ level: Logger.Level, _ message: String) {
        (attempt ?? sink)?.log(level, message, plugin: owner.pluginLogger)
    }

    func recordSpan(_ json: [UInt8]) {
        (attempt ?? sink)?.recordSpan(json, plugin: owner.name, logger: owner.pluginLogger)
    }
}

private let hostReservedOffset = MemoryLayout<csop_call>.offset(of: \csop_call.host_reserved)!

/// `call->host_reserved`: the pending call until the first completion takes it (nil after).
private func pendingSlot(_ call: UnsafePointer<csop_call>) -> UnsafeMutablePointer<UnsafeMutableRawPointer?> {
    (UnsafeMutableRawPointer(mutating: call) + hostReservedOffset).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
}

/// The pending call of a call not yet completed, or nil.
private func pending(_ call: UnsafePointer<csop_call>) -> PendingCall? {
    csop_load_pointer(pendingSlot(call)).map { Unmanaged<PendingCall>.fromOpaque($0).takeUnretainedValue() }
}

private func completeCall(call: UnsafePointer<csop_call>?, outcome: UnsafePointer<csop_outcome>?) {
    guard let call else { return }
    let record = UnsafeMutablePointer(mutating: call)
    // The first completion takes the pending call; any later one finds nothing and changes nothing.
    let taken = csop_exchange_pointer(pendingSlot(call), nil)
    guard let taken else {
        CallRecords.shared.reportSecondCompletion(record)
        return
    }
    let pending = Unmanaged<PendingCall>.fromOpaque(taken).takeRetainedValue()
    let result = decodeOutcome(outcome, plugin: pending.owner.name)
    pending.owner.callFinished(call.pointee.call_id)
    CallRecords.shared.retire(record)
    pending.complete(result)
}

/// `csop_call.begin_commit`: 1 while the router still wants the call (it will now wait for
/// the completion past the timeout), 0 once the call was answered. A call already completed
/// (a contract violation) gets 0: there is nothing left to commit for.
private func beginCommit(call: UnsafePointer<csop_call>?) -> Int32 {
    guard let call else { return 0 }
    return pending(call)?.beginCommit() == true ? 1 : 0
}

/// `csop_call.log`: the line goes to the plugin's logger with the request's id and trace id;
/// after the call was completed (a contract violation) it is logged without them.
private func logCall(call: UnsafePointer<csop_call>?, level: Int32, message: UnsafePointer<CChar>?, length: Int) {
    guard let call, let message else { return }
    let text = String(decoding: UnsafeRawBufferPointer(start: message, count: length), as: UTF8.self)
    let logLevel = PluginHostContext.logLevel(level)
    guard let pending = pending(call) else {
        CallRecords.shared.logger(of: call.pointee.reserved)?.log(level: logLevel, "\(text)")
        return
    }
    pending.log(logLevel, text)
}

/// `csop_call.record_span`: set only on calls the host traces. After the call was completed
/// (a contract violation) the span is dropped.
private func recordSpanCall(call: UnsafePointer<csop_call>?, json: UnsafePointer<UInt8>?, length: Int) {
    guard let call, let json, length > 0 else { return }
    pending(call)?.recordSpan(Array(UnsafeBufferPointer(start: json, count: length)))
}

/// `text` as a NUL-terminated C string with its length, valid during `body`; (nil, 0) for nil.
private func withCString<R>(_ text: String?, _ body: ((pointer: UnsafePointer<CChar>?, length: Int)) -> R) -> R {
    guard let text else { return body((nil, 0)) }
    return text.withCString { body(($0, strlen($0))) }
}

/// The least `csop_outcome.struct_size` the host reads: every field of ABI version 1.
private let minimumOutcomeSize = MemoryLayout<csop_outcome>.size

private func decodeOutcome(_ outcome: UnsafePointer<csop_outcome>?, plugin: String) -> Result<RawJSON, CSOPError> {
    guard let outcome else { return .failure(CSOPError(.pluginFault, "plugin \(plugin) completed a call without an outcome")) }
    guard Int(outcome.pointee.struct_size) >= minimumOutcomeSize else {
        return .failure(
            CSOPError(
                .pluginFault,
                "plugin \(plugin) completed with a csop_outcome of struct_size \(outcome.pointee.struct_size); the host needs at least \(minimumOutcomeSize) (set struct_size = sizeof(csop_outcome))"))
    }
    switch outcome.pointee.status {
    case Int32(CSOP_STATUS_OK):
        guard let data = outcome.pointee.data, outcome.pointee.data_length > 0 else { return .success(.null) }
        let bytes = Array(UnsafeBufferPointer(start: data, count: outcome.pointee.data_length))
        do throws(JSONParseError) {
            return .success(try RawJSON(validating: bytes))
        } catch {
            return .failure(CSOPError(.pluginFault, "plugin \(plugin) returned invalid JSON: \(error)"))
        }
    case Int32(CSOP_STATUS_ERROR):
        return .failure(CSOPError(abi: outcome.pointee.error, plugin: plugin))
    default:
        return .failure(CSOPError(.pluginFault, "plugin \(plugin) completed with unknown status \(outcome.pointee.status)"))
    }
}
