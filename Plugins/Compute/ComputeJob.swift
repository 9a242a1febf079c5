import CSOPCore
import Dispatch
import Synchronization

/// One task on its way through the pool. Completed exactly once, by whoever finishes it.
final class ComputeJob: Sendable {
    enum Work: Sendable {
        case builtin(BuiltinTask)
        /// A function body run as `function (data) { … }`.
        case script(source: String, data: JSONValue?)
        /// Only compiles a function body (for `compute.register`).
        case compile(source: String)
        /// Calls a WebAssembly export.
        case wasm(WasmCall)
        /// Decodes, parses and validates a module for `compute.register`, into the registration.
        case prepare(WasmRegistration)

        /// About how many bytes of request the task carries: its function's UTF-8 source plus
        /// the JSON of its data (``JSONValue/approximateJSONBytes``). What a queued task counts
        /// against `maxQueueBytes`.
        var inputBytes: Int {
            switch self {
            case .builtin(let task): task.inputBytes
            case .script(let source, let data): source.utf8.count + (data?.approximateJSONBytes ?? 0)
            case .compile(let source): source.utf8.count
            case .wasm(let call): call.inputBytes
            case .prepare(let registration): registration.base64.utf8.count
            }
        }
    }

    /// The task name the caller used, echoed in batch results.
    let taskName: String
    let work: Work
    /// Execution time allowed, counted from when a worker starts the task.
    let timeoutMilliseconds: Double
    /// When the call that carries the task times out (`DispatchTime` uptime nanoseconds;
    /// `.max` for none). A script is stopped by the router's cancel then; a wasm call, which
    /// cannot be interrupted, is given no more fuel than this leaves (``millisecondsLeft``).
    let deadline: UInt64
    /// ``Work/inputBytes``, taken once.
    let inputBytes: Int
    /// 0 live, 1 withdrawn (must not start), 2 cancelled (must not start, stop if running).
    private let state = Atomic<Int>(0)
    private let cancelReason = Mutex<CSOPError?>(nil)
    private let done = Atomic<Bool>(false)
    private let completion: @Sendable (Result<TaskOutput, CSOPError>) -> Void

    init(
        taskName: String, work: Work, timeoutMilliseconds: Double, deadline: UInt64 = .max,
        completion: @escaping @Sendable (Result<TaskOutput, CSOPError>) -> Void
    ) {
        self.taskName = taskName
        self.work = work
        self.timeoutMilliseconds = timeoutMilliseconds
        self.deadline = deadline
        inputBytes = work.inputBytes
        self.completion = completion
    }

    /// The execution time a task that starts now has: its timeout, or less when the call's
    /// deadline comes sooner.
    var millisecondsLeft: Double {
        guard deadline != .max else { return timeoutMilliseconds }
        let now = DispatchTime.now().uptimeNanoseconds
        return min(timeoutMilliseconds, deadline > now ? Double(deadline - now) / 1e6 : 0)
    }

    /// Whether a running script must be stopped.
    var isCancelled: Bool { state.load(ordering: .relaxed) == 2 }

    /// Whether the task must not start.
    var isWithdrawn: Bool { state.load(ordering: .relaxed) != 0 }

    /// Asks the task to stop: a queued task never starts, a running script is terminated.
    /// - Parameter reason: the error the task then fails with.
    func cancel(_ reason: CSOPError) {
        cancelReason.withLock { $0 = $0 ?? reason }
        state.store(2, ordering: .releasing)
    }

    /// Keeps the task from starting, but lets it finish if it already runs.
    func withdraw(_ reason: CSOPError) {
        cancelReason.withLock { $0 = $0 ?? reason }
        _ = state.compareExchange(expected: 0, desired: 1, ordering: .acquiringAndReleasing)
    }

    /// What a cancelled task fails with.
    var cancellationError: CSOPError {
        cancelReason.withLock { $0 } ?? CSOPError(.cancelled, "task \(taskName) was cancelled before it finished")
    }

    func finish(_ result: Result<TaskOutput, CSOPError>) {
        guard !done.exchange(true, ordering: .acquiringAndReleasing) else { return }
        completion(result)
    }
}
