import CSOPCore
import Glibc

/// The compute plugin's `[config]` keys, validated.
struct ComputeConfiguration: Sendable {
    /// Worker threads, each with its own JavaScriptCore context group. Default: online cores.
    var workers: Int
    /// Tasks that may wait for a worker before new ones get `QUEUE_FULL`. Default 1024.
    var maxQueue: Int
    /// The most bytes of request (function source plus the JSON of its data, about) the tasks
    /// waiting for a worker may carry together; past it new ones get `QUEUE_FULL`, and a task
    /// carrying more alone gets `INVALID_PAYLOAD`. Default 256 MiB.
    var maxQueueBytes: Int
    /// Default per-task execution time limit in ms (queue time not counted). Default 30000.
    var timeout: Double
    /// The memory a running script's VM may hold before it is stopped (process RSS growth
    /// where JavaScriptCore's VM cannot be measured; see ``ExecutionWatch``). Default 512.
    var memoryLimitMB: Int
    /// Console output kept per task, in UTF-16 code units (bytes for ASCII). Default 65536.
    var maxConsoleBytes: Int
    /// The most UTF-8 bytes of JSON one answer carries: a task's result, or a batch's results
    /// (with their console output) together. Default 16 MiB.
    var maxResultBytes: Int
    /// The most UTF-8 bytes of source all registered functions hold together. Default 64 MiB.
    var maxRegisteredBytes: Int
    /// Durable jobs shared through PostgreSQL (`[config.jobs]`); nil: `compute.submit` is off.
    var jobs: JobsConfiguration?
    /// The fuel a wasm call without its own `fuel` first runs on in WasmKit's interpreter,
    /// before it starts again on JavaScriptCore's compiler (``ComputeWorker``). Not a config
    /// key; tests set 0 to run every such call compiled.
    var wasmInterpreterSlice: UInt64 = 100_000

    static let keys: Set<String> = [
        "workers", "maxQueue", "maxQueueBytes", "timeout", "memoryLimitMB", "maxConsoleBytes", "maxResultBytes", "maxRegisteredBytes",
        "jobs",
    ]
    static let maxTimeout = 3_600_000.0

    init(
        workers: Int? = nil, maxQueue: Int = 1024, maxQueueBytes: Int = 256 << 20, timeout: Double = 30_000, memoryLimitMB: Int = 512, maxConsoleBytes: Int = 65_536,
        maxResultBytes: Int = 16 << 20, maxRegisteredBytes: Int = 64 << 20
    ) {
        self.workers = workers ?? onlineCores
        self.maxQueue = maxQueue
        self.maxQueueBytes = maxQueueBytes
        self.timeout = timeout
        self.memoryLimitMB = memoryLimitMB
        self.maxConsoleBytes = maxConsoleBytes
        self.maxResultBytes = maxResultBytes
        self.maxRegisteredBytes = maxRegisteredBytes
    }

    /// - Throws: `INVALID_PAYLOAD` naming the bad `config.<key>` and its allowed range.
    init(config: JSONValue) throws(CSOPError) {
        let fields = try Fields(config, path: "config", allowed: Self.keys)
        self.init()
        if let value = try fields.int("workers", in: 1...256) { workers = Int(value) }
        if let value = try fields.int("maxQueue", in: 1...1_000_000) { maxQueue = Int(value) }
        if let value = try fields.int("maxQueueBytes", in: (1 << 20)...(1 << 40)) { maxQueueBytes = Int(value) }
        if let value = try fields.number("timeout", in: 1...Self.maxTimeout) { timeout = value }
        if let value = try fields.int("memoryLimitMB", in: 16...1_048_576) { memoryLimitMB = Int(value) }
        if let value = try fields.int("maxConsoleBytes", in: 0...(64 << 20)) { maxConsoleBytes = Int(value) }
        if let value = try fields.int("maxResultBytes", in: 64...(1 << 30)) { maxResultBytes = Int(value) }
        if let value = try fields.int("maxRegisteredBytes", in: 1024...(16 << 30)) { maxRegisteredBytes = Int(value) }
        jobs = try JobsConfiguration.read(fields, workers: workers)
    }
}
