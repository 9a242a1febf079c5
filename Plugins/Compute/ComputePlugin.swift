import CSOPCore
import CSOPPluginKit
import Dispatch

/// The `compute` capability: exact native tasks and sandboxed JavaScript on a pool of
/// worker threads, each with its own JavaScriptCore context group.
///
/// Operations:
/// - `execute {task, data, options?: {timeout}}` → `{result, logs?, logsTruncated?}`.
/// - `batch {tasks: [{task, data}], options?: {maxConcurrent, failFast, timeout}}` →
///   `{total, completed, failed, results: [{status, task, result | error, logs?}]}` in input order.
/// - `submit {task, data, options?: {priority, maxAttempts, runAt, idempotencyKey, timeout}}` →
///   `{id, created}`, `job {id}` → the job, `jobs {state?, limit?, cursor?}` → `{jobs, cursor?}`,
///   `watch {}` → `{subscription}` (`compute.job.done` events), `unwatch {subscription}`:
///   durable jobs in PostgreSQL that every host with the same `[config.jobs]` runs (``SharedJobs``).
/// - `register {name, fn}` (fn is a function body taking `data`; compiled once per worker) or
///   `register {name, wasm}` (a WebAssembly module in base64; validated once), `unregister {name}`,
///   `tasks`, `stats`.
///
/// Built-in tasks: `fibonacci {n ≤ 100000}`, `factorial {n ≤ 10000}` (decimal strings),
/// `isPrime {n}` (0…2^64−1; above 2^63−1 pass a decimal string), `hash_sha256 {message}`
/// (hex, message ≤ 16 MiB), `sum {numbers}` (≤ 1000000 numbers), and
/// `custom {fn, args}` (fn is the body of `function (data) { … }`, args its `data`), and
/// `wasm {module, export, args, input?, output?, fuel?}` (see ``WasmCall`` for the convention,
/// ``WasmRunner`` for the limits).
/// Quick built-ins answer inline on the calling thread; everything else runs on the pool.
///
/// Sandbox: only ECMAScript intrinsics plus a capturing `console`; the intrinsics are frozen,
/// the legacy RegExp statics reset after every task, each call gets a fresh function object,
/// and a task that adds globals gets its worker's context replaced afterwards, so nothing a
/// task does is visible to the next (registered functions included: they keep no state).
/// Everything a task runs (the function, its result's conversion to JSON, the promise
/// reactions it queued) runs in one call under its timeout, cancellation and memory cap.
///
/// Config keys (all optional): `workers` (1…256, default: cores), `maxQueue` (1…1000000,
/// default 1024), `maxQueueBytes` (1 MiB…1 TiB, default 256 MiB of function source and data
/// waiting for a worker), `timeout` (default per-task ms, 1…3600000, default 30000; execution
/// time only), `memoryLimitMB` (16…1048576, default 512: a script is stopped when its worker's
/// JavaScriptCore VM holds nearly this much — see ``JavaScriptCoreHeap``, which also says when
/// it counts process RSS growth instead; checks run every 10–100 ms while a script runs),
/// `maxConsoleBytes` (0…64 MiB, default 65536 UTF-16 units of console output per task),
/// `maxResultBytes` (64…1 GiB, default 16 MiB of JSON per answer: a task's result, or a
/// batch's results together), `maxRegisteredBytes` (1 KiB…16 GiB, default 64 MiB of
/// registered source in all).
///
/// Errors: `INVALID_PAYLOAD` (bad field or out-of-range input; compile errors; a task carrying
/// more than `maxQueueBytes` alone), `INVALID_TASK` (unknown task), `QUEUE_FULL` (retryable:
/// `maxQueue` tasks or `maxQueueBytes` wait already), `TIMEOUT` (retryable: the task's limit or the
/// router's ran out), `RESOURCE_EXHAUSTED` (memory cap, or a result past `maxResultBytes`),
/// `EXECUTION_FAILED` (JS threw: message and line; the result is not JSON, nests deeper than
/// 500 levels or holds NaN/Infinity; a sum overflows), `CANCELLED` (batch task not started
/// under failFast), `QUOTA_EXCEEDED` (more than 1000 registered tasks or `maxRegisteredBytes`
/// of source), `WORKER_CRASHED` (retryable: a worker's sandbox could not be set up).
///
/// Loading the plugin moves JavaScriptCore's thread suspend/resume signal off SIGUSR1 unless
/// `JSC_SIGNAL_FOR_GC` is set (see ``JavaScriptCoreSignals``).
final class ComputePlugin: CSOPPlugin {
    typealias Operation = ComputeService.Operation

    static let name = "compute"
    static let version = "1.0.0"

    let service: ComputeService
    /// `compute.submit`, `job` and `jobs`, when `[config.jobs]` is set.
    let jobs: SharedJobs?

    static func checkConfig(_ config: JSONValue) throws(CSOPError) {
        _ = try ComputeConfiguration(config: config)
    }

    init(config: JSONValue, host: PluginHost) throws(CSOPError) {
        let settings = try ComputeConfiguration(config: config)
        let service = ComputeService(settings: settings) { message in host.log(.error, message) }
        self.service = service
        jobs = settings.jobs.map { SharedJobs(configuration: $0, service: service, host: host) }
        host.log(
            .info,
            "compute: \(settings.workers) workers, queue \(settings.maxQueue) tasks and \(settings.maxQueueBytes) bytes, timeout \(Int(settings.timeout)) ms, memory cap \(settings.memoryLimitMB) MiB"
        )
        if case .unavailable(let reason) = JavaScriptCoreHeap.probe {
            host.log(.warning, "compute: the memory cap counts process RSS growth, not each script's own VM: \(reason)")
        }
        switch service.signalSetup {
        case .moved, .movedEarlier, .chosenByEnvironment: host.log(.info, "compute: \(service.signalSetup)")
        case .tooLate, .unavailable: host.log(.warning, "compute: \(service.signalSetup)")
        }
    }

    func invoke(_ operation: Operation, _ call: PluginCall) {
        if let jobs, SharedJobs.handles(operation) { return jobs.handle(operation, call) }
        let milliseconds = call.timeoutMilliseconds
        let deadline = milliseconds > 0 && milliseconds < 1e12 ? DispatchTime.now().uptimeNanoseconds + UInt64(milliseconds * 1e6) : .max
        // Traced: the job (queue wait and run) as a span of its own, named by its task.
        let start = call.isTraced ? WallClock.nanoseconds() : nil
        service.handle(operation, payload: call.payload, callID: call.id, tenant: call.caller?.tenant, deadline: deadline) { result in
            if let start {
                var attributes: JSONObject = ["compute.operation": .string(operation.rawValue)]
                if case .string(let task)? = call.payload["task"] { attributes["compute.task"] = .string(task) }
                let error: String? = if case .failure(let failure) = result { failure.code.rawValue } else { nil }
                call.recordSpan("compute.job", start: start, end: WallClock.nanoseconds(), attributes: attributes, error: error)
            }
            call.complete(rawJSON: result)
        }
    }

    func cancel(callID: UInt64) {
        service.cancel(callID: callID)
        jobs?.cancel(callID: callID)
    }

    func shutdown() {
        jobs?.shutdown()
        service.shutdown()
    }

    func writeMetrics(into buffer: inout [UInt8]) { service.writeMetrics(into: &buffer) }
}

/// The descriptor the library exports. The `csop_plugin_register` symbol itself lives in
/// Plugins/Compute/Export, so tests can link this module without a duplicate symbol.
public func computePluginDescriptor() -> UnsafeRawPointer { PluginExport.register(ComputePlugin.self) }
