import CSOPCore
import CSOPPluginKit
import Synchronization

/// The compute domain without the C boundary: parses payloads, runs quick built-ins inline,
/// sends everything else to the ``WorkerPool`` and answers through `reply`, from any thread.
final class ComputeService: Sendable {
    /// The compute operations, in the order the descriptor lists them.
    enum Operation: String, PluginOperation {
        case execute, batch, register, unregister, tasks, stats
        /// Durable jobs (``SharedJobs``), answered by the plugin when `[config.jobs]` is set.
        case submit, job, jobs, watch, unwatch
    }

    /// Receives an operation's outcome: serialized JSON data, or an error.
    typealias Reply = @Sendable (Result<[UInt8], CSOPError>) -> Void

    // The fields each operation reads, made once: a set literal at the call would be built
    // and hashed on every task.
    static let executeFields: Set<String> = ["task", "data", "options"]
    static let executeOptions: Set<String> = ["timeout"]
    static let customFields: Set<String> = ["fn", "args"]
    static let batchFields: Set<String> = ["tasks", "options"]
    static let batchOptions: Set<String> = ["maxConcurrent", "failFast", "timeout"]
    static let taskFields: Set<String> = ["task", "data"]

    static let maxSourceBytes = 1 << 20
    static let maxBatchTasks = 10_000
    static let maxRegistered = 1_000
    static let maxNameLength = 64

    /// A registered function's name in its owner's scope: a tenant's functions are seen by
    /// that tenant only, the local owner's (`tenant` nil) by the owner only.
    struct RegisteredName: Hashable, Sendable {
        var tenant: String?
        var name: String
    }

    /// What a name was registered with: a JavaScript function body, or a WebAssembly module.
    enum Registered: Sendable {
        case script(String)
        case wasm(WasmModule)

        /// What it counts against `maxRegisteredBytes`: the source's UTF-8 or the binary's bytes.
        var byteCount: Int {
            switch self {
            case .script(let source): source.utf8.count
            case .wasm(let module): module.byteCount
            }
        }

        /// What ``byteCount`` counts, for messages.
        var unit: String {
            switch self {
            case .script: "bytes of source"
            case .wasm: "bytes of WebAssembly"
            }
        }
    }

    /// Registered functions and modules by scoped name, and their bytes together. The count
    /// and byte limits hold for all scopes together: they bound the plugin's memory.
    private struct Registry {
        var sources: [RegisteredName: Registered] = [:]
        var bytes = 0

        func names(of tenant: String?) -> [String] {
            sources.keys.filter { $0.tenant == tenant }.map(\.name).sorted()
        }
    }

    let settings: ComputeConfiguration
    let pool: WorkerPool
    /// What moving JavaScriptCore's signal off SIGUSR1 came to, for the log.
    let signalSetup: JavaScriptCoreSignals.Outcome
    private let registry = Mutex(Registry())
    private let cancellers = Cancellers()
    private let inlineCompleted = Atomic<Int>(0)
    private let metrics = ComputeMetrics()

    init(settings: ComputeConfiguration, log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.settings = settings
        // Before the pool's threads start JavaScriptCore, which fixes its signal when it starts.
        signalSetup = JavaScriptCoreSignals.setUp
        pool = WorkerPool(settings: settings, log: log)
    }

    /// Runs `operation`; `callID` names it for ``cancel(callID:)``.
    /// - Parameters:
    ///   - tenant: whose registered functions the call sees (its caller's tenant; nil for the
    ///     local owner). Built-in tasks are everyone's.
    ///   - deadline: when the host abandons the call (`DispatchTime` uptime nanoseconds), which
    ///     bounds the fuel of its wasm tasks: see ``ComputeJob/deadline``.
    func handle(
        _ operation: Operation, payload: JSONValue, callID: UInt64, tenant: String? = nil, deadline: UInt64 = .max, reply: @escaping Reply
    ) {
        do throws(CSOPError) {
            switch operation {
            case .execute: try execute(payload, callID: callID, tenant: tenant, deadline: deadline, reply: reply)
            case .batch: try batch(payload, callID: callID, tenant: tenant, deadline: deadline, reply: reply)
            case .register: try register(payload, callID: callID, tenant: tenant, reply: reply)
            case .unregister: reply(.success(try unregister(payload, tenant: tenant).serialized()))
            case .tasks: reply(.success(try tasks(payload, tenant: tenant).serialized()))
            case .stats: reply(.success(try stats(payload, tenant: tenant).serialized()))
            case .submit, .job, .jobs, .watch, .unwatch: throw SharedJobs.notConfigured
            }
        } catch {
            reply(.failure(error))
        }
    }

    /// Stops the work of an abandoned call: queued tasks never start, running scripts are terminated.
    func cancel(callID: UInt64) {
        cancellers.cancel(callID)
    }

    func shutdown() { pool.shutdown() }

    static let cancelled = CSOPError(.timeout, "the call timed out and was cancelled", retryable: true)
    static let cancelledBeforeStart = CSOPError(.timeout, "the call timed out and was cancelled before it started", retryable: true)

    private func execute(_ payload: JSONValue, callID: UInt64, tenant: String?, deadline: UInt64, reply: @escaping Reply) throws(CSOPError) {
        let fields = try Fields(payload, path: "payload", allowed: Self.executeFields)
        let name = try fields.requiredString("task", maxLength: Self.maxNameLength)
        let options = try fields.nested("options", allowed: Self.executeOptions)
        let timeout = try options.number("timeout", in: 1...ComputeConfiguration.maxTimeout) ?? settings.timeout
        let work = try resolve(name, data: fields["data"], path: "payload.data", tenant: tenant)
        if case .builtin(let task) = work, task.isQuick {
            let output = task.output()
            switch output {
            case .success: inlineCompleted.add(1, ordering: .relaxed)
            case .failure: pool.stats.failed.add(1, ordering: .relaxed)
            }
            reply(output.map(\.responseJSON))
            return
        }
        let job = ComputeJob(taskName: name, work: work, timeoutMilliseconds: timeout, deadline: deadline) { [self] result in
            cancellers.remove(callID)
            reply(result.map(\.responseJSON))
        }
        try submit(job, callID: callID)
    }

    /// Queues `job`, making it cancellable by `callID` first so a fast finish cannot race it.
    private func submit(_ job: ComputeJob, callID: UInt64) throws(CSOPError) {
        let pool = pool
        guard cancellers.register(callID, { pool.cancel(job, Self.cancelled) }) else { throw Self.cancelledBeforeStart }
        do throws(CSOPError) {
            try pool.submit(job)
        } catch {
            cancellers.remove(callID)
            throw error
        }
    }

    /// What `{task, data}` runs.
    /// - Throws: `INVALID_TASK` for an unknown name, `INVALID_PAYLOAD` for bad data.
    private func resolve(_ name: String, data: JSONValue?, path: String, tenant: String?) throws(CSOPError) -> ComputeJob.Work {
        if name == "custom" {
            let fields = try Fields(data, path: path, allowed: Self.customFields, allowNull: false)
            let source = try fields.requiredString("fn", maxLength: Self.maxSourceBytes)
            return .script(source: source, data: fields["args"])
        }
        if name == "wasm" { return .wasm(try WasmCall(adHoc: data, path: path)) }
        if let task = try BuiltinTask.parse(name: name, data: data, path: path) { return .builtin(task) }
        switch registry.withLock({ $0.sources[RegisteredName(tenant: tenant, name: name)] }) {
        case .script(let source)?: return .script(source: source, data: data)
        case .wasm(let module)?: return .wasm(try WasmCall(module: module, data: data, path: path))
        case nil: break
        }
        throw CSOPError(.invalidTask, "unknown task \"\(name)\"; use a built-in (\(Self.builtinNames.joined(separator: ", "))) or a name registered with compute.register (see compute.tasks)")
    }

    static let builtinNames = ["custom", "wasm"] + BuiltinTask.names

    private func batch(_ payload: JSONValue, callID: UInt64, tenant: String?, deadline: UInt64, reply: @escaping Reply) throws(CSOPError) {
        let fields = try Fields(payload, path: "payload", allowed: Self.batchFields)
        guard let tasks = try fields.array("tasks", maxCount: Self.maxBatchTasks) else {
            throw .invalidPayload("payload.tasks is required (an array of {task, data})")
        }
        let options = try fields.nested("options", allowed: Self.batchOptions)
        let maxConcurrent = try options.int("maxConcurrent", in: 1...Int64(Self.maxBatchTasks)).map(Int.init)
            ?? max(settings.workers * 2, 4)
        let failFast = try options.bool("failFast") ?? false
        let timeout = try options.number("timeout", in: 1...ComputeConfiguration.maxTimeout) ?? settings.timeout
        var entries: [BatchRun.Entry] = []
        entries.reserveCapacity(tasks.count)
        for (i, task) in tasks.enumerated() {
            let item = try Fields(task, path: "payload.tasks[\(i)]", allowed: Self.taskFields, allowNull: false)
            let name = try item.requiredString("task", maxLength: Self.maxNameLength)
            do throws(CSOPError) {
                entries.append(.job(name: name, work: try resolve(name, data: item["data"], path: "payload.tasks[\(i)].data", tenant: tenant)))
            } catch {
                entries.append(.rejected(name: name, error: error))
            }
        }
        let run = BatchRun(
            entries: entries, pool: pool, maxConcurrent: maxConcurrent, failFast: failFast, timeout: timeout, deadline: deadline,
            maxOutputBytes: settings.maxResultBytes
        ) {
            [self] bytes in
            cancellers.remove(callID)
            reply(.success(bytes))
        }
        guard cancellers.register(callID, { run.cancelAll() }) else { return reply(.failure(Self.cancelledBeforeStart)) }
        run.start()
    }

    private func register(_ payload: JSONValue, callID: UInt64, tenant: String?, reply: @escaping Reply) throws(CSOPError) {
        let fields = try Fields(payload, path: "payload", allowed: ["name", "fn", "wasm"])
        let name = try Self.validName(try fields.requiredString("name", maxLength: Self.maxNameLength))
        let key = RegisteredName(tenant: tenant, name: name)
        if let base64 = try fields.string("wasm") {
            guard !fields.has("fn") else { throw .invalidPayload("payload: give fn (JavaScript) or wasm (a module), not both") }
            try WasmModule.checkSize(base64: base64, path: "payload.wasm")
            // Checked again with the binary's exact size when it is added; this spares the work.
            let estimate = base64.utf8.count / 4 * 3
            if case .failure(let error) = registry.withLock({ admit(key, byteCount: estimate, unit: "bytes of WebAssembly", into: $0) }) {
                throw error
            }
            // Decoded, parsed and validated on a worker: work in proportion to the module
            // belongs on the pool, not on the thread that dispatched the call.
            let registration = WasmRegistration(base64: base64)
            let job = ComputeJob(taskName: name, work: .prepare(registration), timeoutMilliseconds: settings.timeout) { [self] result in
                cancellers.remove(callID)
                reply(result.flatMap { _ in
                    guard let module = registration.module else { return .failure(.executionFailed("the module was not prepared")) }
                    return add(.wasm(module), as: key)
                })
            }
            return try submit(job, callID: callID)
        }
        guard let source = try fields.string("fn", maxLength: Self.maxSourceBytes) else {
            throw .invalidPayload("payload.fn is required (a JavaScript function body), or payload.wasm (a WebAssembly module in base64)")
        }
        // Checked again when the compiled function is added, under the lock; this spares the compile.
        let entry = Registered.script(source)
        if case .failure(let error) = registry.withLock({ admit(key, byteCount: entry.byteCount, unit: entry.unit, into: $0) }) { throw error }
        let job = ComputeJob(taskName: name, work: .compile(source: source), timeoutMilliseconds: settings.timeout) {
            [self] result in
            cancellers.remove(callID)
            reply(result.flatMap { _ in add(.script(source), as: key) })
        }
        try submit(job, callID: callID)
    }

    /// Adds `entry` under `key` once it compiled, if the registry still has room.
    /// - Returns: the answer of `compute.register`.
    private func add(_ entry: Registered, as key: RegisteredName) -> Result<[UInt8], CSOPError> {
        registry.withLock { registry -> Result<Bool, CSOPError> in
            admit(key, byteCount: entry.byteCount, unit: entry.unit, into: registry).map { bytes in
                let replaced = registry.sources.updateValue(entry, forKey: key) != nil
                registry.bytes = bytes
                return replaced
            }
        }.map { replaced in JSONValue.object(["name": .string(key.name), "replaced": .bool(replaced)]).serialized() }
    }

    /// Whether `byteCount` bytes (of `unit`) may be registered under `key` beside what
    /// `registry` holds.
    /// - Returns: the registry's bytes once they are.
    /// Fails with `QUOTA_EXCEEDED` past ``maxRegistered`` entries or `maxRegisteredBytes`.
    private func admit(_ key: RegisteredName, byteCount: Int, unit: String, into registry: Registry) -> Result<Int, CSOPError> {
        let name = key.name
        let previous = registry.sources[key]
        if previous == nil, registry.sources.count >= Self.maxRegistered {
            return .failure(CSOPError(.quotaExceeded, "\(Self.maxRegistered) tasks are registered already; unregister some first"))
        }
        let bytes = registry.bytes - (previous?.byteCount ?? 0) + byteCount
        guard bytes <= settings.maxRegisteredBytes else {
            return .failure(
                CSOPError(
                    .quotaExceeded,
                    "registering \(name) (\(byteCount) \(unit)) would bring the registered functions to \(bytes) bytes, over the limit of \(settings.maxRegisteredBytes) (config maxRegisteredBytes); unregister some first or raise maxRegisteredBytes"
                ))
        }
        return .success(bytes)
    }

    /// Registered names look like identifiers and may not shadow a built-in.
    private static func validName(_ name: String) throws(CSOPError) -> String {
        let bytes = Array(name.utf8)
        let valid = bytes.enumerated().allSatisfy { i, byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "_"): true
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."): i > 0
            default: false
            }
        }
        guard valid else {
            throw .invalidPayload("payload.name must start with a letter or _ and contain only letters, digits, _, - and . (at most \(maxNameLength))")
        }
        guard !builtinNames.contains(name) else {
            throw .invalidPayload("payload.name \"\(name)\" is a built-in task; choose another name")
        }
        return name
    }

    private func unregister(_ payload: JSONValue, tenant: String?) throws(CSOPError) -> JSONValue {
        let fields = try Fields(payload, path: "payload", allowed: ["name"])
        let name = try fields.requiredString("name", maxLength: Self.maxNameLength)
        let removed = registry.withLock { registry in
            guard let entry = registry.sources.removeValue(forKey: RegisteredName(tenant: tenant, name: name)) else { return false }
            registry.bytes -= entry.byteCount
            return true
        }
        return ["name": .string(name), "removed": .bool(removed)]
    }

    private func tasks(_ payload: JSONValue, tenant: String?) throws(CSOPError) -> JSONValue {
        _ = try Fields(payload, path: "payload", allowed: [])
        let registered = registry.withLock { $0.names(of: tenant) }
        return ["builtin": .array(Self.builtinNames.map { .string($0) }), "registered": .array(registered.map { .string($0) })]
    }

    /// The plugin's metrics, from the same figures as `compute.stats` (all tenants).
    func writeMetrics(into buffer: inout [UInt8]) {
        metrics.write(
            into: &buffer, stats: pool.stats, workers: settings.workers, queued: pool.queued, queuedBytes: pool.queuedBytes,
            inlineCompleted: inlineCompleted.load(ordering: .relaxed), registered: registry.withLock { $0.sources.count })
    }

    /// The pool's figures are the plugin's; `registered` and `registeredBytes` count the
    /// caller's own functions only.
    private func stats(_ payload: JSONValue, tenant: String?) throws(CSOPError) -> JSONValue {
        _ = try Fields(payload, path: "payload", allowed: [])
        let s = pool.stats
        func int(_ value: Int) -> JSONValue { .int(Int64(value)) }
        return [
            "workers": int(settings.workers),
            "alive": int(s.alive.load(ordering: .relaxed)),
            "busy": int(s.busy.load(ordering: .relaxed)),
            "queued": int(pool.queued),
            "maxQueue": int(settings.maxQueue),
            "queuedBytes": int(pool.queuedBytes),
            "maxQueueBytes": int(settings.maxQueueBytes),
            "completed": int(s.completed.load(ordering: .relaxed) + inlineCompleted.load(ordering: .relaxed)),
            "failed": int(s.failed.load(ordering: .relaxed)),
            "timedOut": int(s.timedOut.load(ordering: .relaxed)),
            "recycled": int(s.recycled.load(ordering: .relaxed)),
            "memoryStops": int(s.memoryStops.load(ordering: .relaxed)),
            "cancelled": int(s.cancelled.load(ordering: .relaxed)),
            "registered": int(registry.withLock { $0.names(of: tenant).count }),
            "registeredBytes": int(
                registry.withLock { registry in registry.sources.reduce(0) { $0 + ($1.key.tenant == tenant ? $1.value.byteCount : 0) } }),
        ]
    }
}
