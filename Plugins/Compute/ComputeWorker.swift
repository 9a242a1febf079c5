import CSOPCore
import Dispatch
import Glibc

/// One worker thread with its own JavaScriptCore sandbox. Takes jobs from the shared queue
/// until it is closed; everything it owns is touched only on its thread.
final class ComputeWorker {
    private let index: Int
    private let queue: JobQueue
    private let stats: PoolStatistics
    private let settings: ComputeConfiguration
    private let log: @Sendable (String) -> Void
    private let watch: ExecutionWatch
    private var sandbox: JSSandbox?
    /// What the current sandbox's VM held when it was made; nil without a VM meter.
    private var freshHeapBytes: UInt64?
    /// Made at the first wasm task that sets `fuel`: WasmKit's interpreter, which counts it exactly.
    private lazy var wasm = WasmRunner()
    /// Made at the first other wasm task: JavaScriptCore's compiler, or why it cannot run here
    /// (then the interpreter runs every task).
    private lazy var jit = Result { () throws(CSOPError) in try WasmJIT() }
    private var reportedInterpreter = false

    init(index: Int, queue: JobQueue, stats: PoolStatistics, settings: ComputeConfiguration, log: @escaping @Sendable (String) -> Void) {
        self.index = index
        self.queue = queue
        self.stats = stats
        self.settings = settings
        self.log = log
        watch = ExecutionWatch(memoryLimitBytes: UInt64(settings.memoryLimitMB) << 20, stats: stats)
    }

    /// The thread body: prepares a sandbox, then serves jobs until the queue closes.
    func run() {
        stats.alive.add(1, ordering: .relaxed)
        defer { stats.alive.subtract(1, ordering: .relaxed) }
        _ = try? prepareSandbox()
        var finished = false
        while let job = queue.pop(finished: finished) {
            process(job)
            if sandbox == nil { _ = try? prepareSandbox() }
            finished = true
        }
        sandbox = nil
    }

    private func prepareSandbox() throws(CSOPError) -> JSSandbox {
        if let sandbox { return sandbox }
        do throws(CSOPError) {
            let made = try JSSandbox(watch: watch, maxConsoleChars: settings.maxConsoleBytes)
            sandbox = made
            freshHeapBytes = made.heapBytes()
            return made
        } catch {
            log("compute worker \(index): \(error.message)")
            throw error
        }
    }

    private func process(_ job: ComputeJob) {
        if job.isWithdrawn {
            stats.cancelled.add(1, ordering: .relaxed)
            job.finish(.failure(job.cancellationError))
            return
        }
        stats.busy.add(1, ordering: .relaxed)
        let result: Result<TaskOutput, CSOPError>
        switch job.work {
        case .builtin(let task):
            result = task.output()
        case .script(let source, let data):
            result = runScript(job, source: source, data: data)
        case .compile(let source):
            result = compileOnly(job, source: source)
        case .wasm(let call):
            result = runWasm(job, call)
        case .prepare(let registration):
            result = Result { () throws(CSOPError) in
                try registration.prepare(memoryLimitBytes: memoryLimitBytes)
                return TaskOutput(.null)
            }
        }
        stats.busy.subtract(1, ordering: .relaxed)
        switch result {
        case .success: stats.completed.add(1, ordering: .relaxed)
        case .failure: stats.failed.add(1, ordering: .relaxed)
        }
        job.finish(result)
    }

    private func runScript(_ job: ComputeJob, source: String, data: JSONValue?) -> Result<TaskOutput, CSOPError> {
        let sandbox: JSSandbox
        do throws(CSOPError) { sandbox = try prepareSandbox() } catch { return .failure(error) }
        watch.begin(job)
        let outcome = sandbox.run(source: source, data: data, maxResultBytes: settings.maxResultBytes, watch: watch)
        watch.end()
        let stopReason = watch.stopReason
        if stopReason != nil || sandbox.isPolluted || holdsGarbage {
            // A terminated VM may be left inconsistent, added globals would leak into the next
            // task, and garbage would count against its memory cap: start over with a fresh
            // context group.
            self.sandbox = nil
            stats.recycled.add(1, ordering: .relaxed)
        }
        switch outcome {
        case .success(let output):
            return .success(output)
        case .failure(.terminated):
            switch stopReason {
            case .cancelled?:
                stats.cancelled.add(1, ordering: .relaxed)
                return .failure(job.cancellationError)
            case .memory?:
                stats.memoryStops.add(1, ordering: .relaxed)
                let used = watch.memoryAtStop >> 20
                let what =
                    watch.countsProcessMemory
                    ? "the process grew by \(used) MiB while it ran (this JavaScriptCore's heap cannot be measured alone, so the cap counts process growth)"
                    : "its JavaScript heap held \(used) MiB"
                return .failure(
                    CSOPError(
                        .resourceExhausted,
                        "task \(job.taskName) was stopped near the memory cap of \(settings.memoryLimitMB) MiB (config memoryLimitMB): \(what); allocate less or raise memoryLimitMB"
                    ))
            case .timeout?, nil:
                stats.timedOut.add(1, ordering: .relaxed)
                // Retryable, as the router's TIMEOUT is: it ran out of time and may succeed with more.
                return .failure(
                    CSOPError(
                        .timeout,
                        "task \(job.taskName) ran longer than its timeout of \(Self.format(job.timeoutMilliseconds)) ms and was stopped; raise options.timeout or make it faster",
                        retryable: true))
            }
        case .failure(.compile(let message)):
            return .failure(.invalidPayload("the JavaScript of task \(job.taskName) does not compile: \(message)"))
        case .failure(.thrown(let message)):
            return .failure(memoryStop(message, "task \(job.taskName) ran out of memory") ?? .executionFailed("task \(job.taskName) threw \(message)"))
        case .failure(.rejected(let message)):
            return .failure(
                memoryStop(message, "task \(job.taskName) ran out of memory")
                    ?? .executionFailed("the Promise task \(job.taskName) returned was rejected: \(message)"))
        case .failure(.unsettled):
            return .failure(
                .executionFailed(
                    "the Promise task \(job.taskName) returned never settled: a task has no timers or I/O, so it can wait only for Promises it settles itself; resolve or reject each one it awaits"
                ))
        case .failure(.notSerializable(let message)):
            return .failure(
                memoryStop(message, "the result of task \(job.taskName) ran out of memory while it was converted to JSON")
                    ?? .executionFailed(
                        "the result of task \(job.taskName) is not JSON-serializable: \(message); return plain data (objects, arrays, strings, numbers, booleans, null)"))
        case .failure(.tooLarge):
            return .failure(resultTooLarge(job))
        case .failure(.tooDeep):
            return .failure(
                .executionFailed(
                    "the result of task \(job.taskName) nests arrays and objects deeper than \(JSSandbox.maxResultDepth) levels, more than an answer can carry (JSON in CSOP stops at \(JSONParser.maxDepth) levels); return flatter data"))
        }
    }

    /// `memoryLimitMB` in bytes: the cap on a wasm module's memories.
    private var memoryLimitBytes: Int { settings.memoryLimitMB << 20 }

    /// The most bytes of `input` or `inputBase64` a wasm call may carry and still get a slice
    /// in the interpreter first.
    static let maxSlicedInput = 64 << 10

    private func runWasm(_ job: ComputeJob, _ call: WasmCall) -> Result<TaskOutput, CSOPError> {
        let milliseconds = job.millisecondsLeft
        // The time counts from here, for the interpreter's slice and the compiled run together.
        let deadline = DispatchTime.now().uptimeNanoseconds &+ UInt64(min(milliseconds * 1e6, 0x1p62))
        // A call with fuel, or without the compiler, runs in the interpreter alone, on the fuel
        // its time buys (measured on the interpreter's first use, about 20 ms) or less.
        guard let compiler = compiler(for: call) else {
            let budget = WasmRunner.budget(milliseconds: milliseconds)
            let (_, outcome) = interpret(call, budget: min(budget, call.fuel ?? .max))
            return answer(job, outcome, millisecondsLeft: milliseconds, timeBudget: budget)
        }
        // A call with a large input is taken for a long one: copying the input twice would cost
        // more than the interpreter's slice saves.
        guard settings.wasmInterpreterSlice > 0, call.inputTextBytes <= Self.maxSlicedInput else {
            let outcome = compiler.run(call, resolved: nil, job: job, deadline: deadline, memoryLimitBytes: memoryLimitBytes, maxResultBytes: settings.maxResultBytes)
            return answer(job, outcome, millisecondsLeft: milliseconds, timeBudget: .max)
        }
        // Any other call first gets a slice of fuel in the interpreter: a small one ends there,
        // for about what the interpreter costs (instantiating a module in JavaScriptCore costs
        // more: its memory's address space is reserved, then collected); a longer one starts
        // again, compiled, its module already parsed and its input decoded. Starting again is
        // safe: a call's instance is its own and it has no imports, so the abandoned run left
        // nothing behind.
        let budget = WasmRunner.budget(milliseconds: milliseconds)
        let slice = min(settings.wasmInterpreterSlice, budget)
        let (resolved, sliced) = interpret(call, budget: slice)
        if case .failure(.outOfFuel) = sliced, slice < budget {
            let outcome = compiler.run(call, resolved: resolved, job: job, deadline: deadline, memoryLimitBytes: memoryLimitBytes, maxResultBytes: settings.maxResultBytes)
            return answer(job, outcome, millisecondsLeft: milliseconds, timeBudget: budget)
        }
        return answer(job, sliced, millisecondsLeft: milliseconds, timeBudget: budget)
    }

    /// The compiler, unless `call` sets `fuel` (which only the interpreter counts) or the
    /// compiler cannot run here (said once in the log).
    private func compiler(for call: WasmCall) -> WasmJIT? {
        guard call.fuel == nil else { return nil }
        switch jit {
        case .success(let compiler):
            return compiler
        case .failure(let error):
            if !reportedInterpreter {
                reportedInterpreter = true
                log("compute worker \(index): wasm tasks run in WasmKit's interpreter: \(error.message)")
            }
            return nil
        }
    }

    /// `call` in the interpreter with `budget` fuel, and its module and input as resolved for it
    /// (nil when they could not be).
    private func interpret(_ call: WasmCall, budget: UInt64) -> (WasmCall.Resolved?, Result<JSONValue, WasmFailure>) {
        let resolved: WasmCall.Resolved
        do throws(CSOPError) { resolved = try call.resolve() } catch { return (nil, .failure(.invalid(error))) }
        return (resolved, wasm.run(call, resolved, budget: budget, memoryLimitBytes: memoryLimitBytes, maxResultBytes: settings.maxResultBytes))
    }

    /// The task's answer for a wasm call's `outcome`.
    /// - Parameters:
    ///   - millisecondsLeft: the call's time when it started.
    ///   - timeBudget: the fuel that time buys in the interpreter (`.max` when it did not run),
    ///     so an out-of-fuel stop below it is the caller's own `fuel` running out.
    private func answer(_ job: ComputeJob, _ outcome: Result<JSONValue, WasmFailure>, millisecondsLeft milliseconds: Double, timeBudget: UInt64)
        -> Result<TaskOutput, CSOPError>
    {
        let limit =
            milliseconds < job.timeoutMilliseconds
            ? "the \(Self.format(milliseconds.rounded())) ms its call had left" : "its timeout of \(Self.format(job.timeoutMilliseconds)) ms"
        switch outcome {
        case .success(let value):
            let output = TaskOutput(value)
            return output.resultJSON.count <= settings.maxResultBytes ? .success(output) : .failure(resultTooLarge(job))
        case .failure(.invalid(let error)):
            return .failure(error)
        case .failure(.stopped(.cancelled)):
            stats.cancelled.add(1, ordering: .relaxed)
            return .failure(job.cancellationError)
        case .failure(.stopped(.timeout)):
            stats.timedOut.add(1, ordering: .relaxed)
            return .failure(
                CSOPError(.timeout, "wasm task \(job.taskName) ran longer than \(limit) and was stopped; raise options.timeout or make it faster", retryable: true))
        case .failure(.outOfFuel(let budget)) where budget < timeBudget:
            return .failure(.executionFailed("wasm task \(job.taskName) used up the fuel it was given (data.fuel: \(budget)); give it more fuel or make it do less"))
        case .failure(.outOfFuel(let budget)):
            stats.timedOut.add(1, ordering: .relaxed)
            return .failure(
                CSOPError(
                    .timeout,
                    "wasm task \(job.taskName) ran longer than \(limit) and was stopped (after \(budget) units of fuel, what this machine runs in that time); raise options.timeout or make it faster",
                    retryable: true))
        case .failure(.trap(let kind, let refused)):
            let memory = refused.map { " after memory.grow was refused at \($0 >> 20) MiB, over the cap of \(settings.memoryLimitMB) MiB (config memoryLimitMB)" } ?? ""
            return .failure(.executionFailed("wasm task \(job.taskName) trapped: \(kind)\(memory)"))
        case .failure(.initialMemory(let bytes)):
            stats.memoryStops.add(1, ordering: .relaxed)
            return .failure(
                CSOPError(
                    .resourceExhausted,
                    "the module of wasm task \(job.taskName) asks for \(bytes >> 20) MiB of memory at the start, more than the cap of \(settings.memoryLimitMB) MiB (config memoryLimitMB); declare less or raise memoryLimitMB"
                ))
        case .failure(.badOutput(let problem)):
            return .failure(.executionFailed("the output of wasm task \(job.taskName) cannot be read: \(problem)"))
        case .failure(.tooLarge):
            return .failure(resultTooLarge(job))
        }
    }

    /// `RESOURCE_EXHAUSTED` for a result past `maxResultBytes`.
    private func resultTooLarge(_ job: ComputeJob) -> CSOPError {
        CSOPError(
            .resourceExhausted,
            "the result of task \(job.taskName) is larger than \(settings.maxResultBytes) bytes of JSON (config maxResultBytes); return less data or raise maxResultBytes")
    }

    /// `RESOURCE_EXHAUSTED` ("`what`: `message`"), counted as a memory stop, when `message` is
    /// JavaScriptCore's out-of-memory error; nil for any other.
    private func memoryStop(_ message: String, _ what: String) -> CSOPError? {
        guard message.contains("Out of memory") else { return nil }
        stats.memoryStops.add(1, ordering: .relaxed)
        return CSOPError(.resourceExhausted, "\(what): \(message)")
    }

    /// Whether the VM holds more than an eighth of the memory cap beyond what it held fresh.
    /// The cap counts everything in the VM, garbage that a finished task left included, so a
    /// worker starts the next task in a fresh VM rather than charge it with that; only tasks
    /// that allocated that much pay for the new one.
    private var holdsGarbage: Bool {
        guard let fresh = freshHeapBytes, let now = sandbox?.heapBytes() else { return false }
        return now > fresh + (UInt64(settings.memoryLimitMB) << 17)
    }

    private func compileOnly(_ job: ComputeJob, source: String) -> Result<TaskOutput, CSOPError> {
        let sandbox: JSSandbox
        do throws(CSOPError) { sandbox = try prepareSandbox() } catch { return .failure(error) }
        switch sandbox.compile(source) {
        case .success: return .success(TaskOutput(.null))
        case .failure(let failure):
            guard case .compile(let message) = failure else { return .failure(.executionFailed("\(failure)")) }
            return .failure(.invalidPayload("payload.fn of task \(job.taskName) does not compile: \(message)"))
        }
    }

    private static func format(_ milliseconds: Double) -> String {
        milliseconds.rounded() == milliseconds ? String(Int64(milliseconds)) : String(milliseconds)
    }
}
