import CSOPCore
import Synchronization

/// One task on its way through the pool. Completed exactly once, by whoever finishes it.
final class ComputeJob: Sendable {
    enum Work: Sendable {
        case builtin(BuiltinTask)
        /// A function body run as `function (data) { … }`.
        case script(source: String, data: JSONValue?)
    }

    /// The task name the caller used, echoed in batch results.
    let taskName: String
    let work: Work
    /// Execution time allowed, counted from when a worker starts the task.
    let timeoutMilliseconds: Double
    private let cancelled = Atomic<Bool>(false)
    private let cancelReason = Mutex<CSOPError?>(nil)
    private let done = Atomic<Bool>(false)
    private let completion: @Sendable (Result<TaskOutput, CSOPError>) -> Void

    init(
        taskName: String, work: Work, timeoutMilliseconds: Double,
        completion: @escaping @Sendable (Result<TaskOutput, CSOPError>) -> Void
    ) {
        self.taskName = taskName
        self.work = work
        self.timeoutMilliseconds = timeoutMilliseconds
        self.completion = completion
    }

    var isCancelled: Bool { cancelled.load(ordering: .relaxed) }

    /// Asks the task to stop: a queued task never starts, a running script is terminated.
    /// - Parameter reason: the error the task then fails with.
    func cancel(_ reason: CSOPError? = nil) {
        if let reason { cancelReason.withLock { $0 = $0 ?? reason } }
        cancelled.store(true, ordering: .releasing)
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
