import CSOPCore
import Glibc

/// N worker threads serving one FIFO queue bounded by count and bytes.
final class WorkerPool: Sendable {
    let settings: ComputeConfiguration
    let stats = PoolStatistics()
    private let queue: JobQueue
    private let threads: ThreadList

    /// Starts `settings.workers` threads with 8 MiB stacks (JavaScriptCore recursion needs room).
    init(settings: ComputeConfiguration, log: @escaping @Sendable (String) -> Void) {
        self.settings = settings
        queue = JobQueue(capacity: settings.maxQueue, byteCapacity: settings.maxQueueBytes)
        threads = ThreadList()
        for index in 0..<settings.workers {
            let worker = ComputeWorker(index: index, queue: queue, stats: stats, settings: settings, log: log)
            threads.start(worker)
        }
    }

    /// Queues a job for the next free worker.
    /// - Throws: `QUEUE_FULL` (retryable) when `maxQueue` jobs are waiting or the job would
    ///   take their bytes past `maxQueueBytes`; `INVALID_PAYLOAD` when the job alone carries
    ///   more than `maxQueueBytes`.
    func submit(_ job: ComputeJob) throws(CSOPError) {
        try queue.push(job)
    }

    /// Cancels `job` (see ``ComputeJob/cancel(_:)``). A job still waiting leaves the queue at
    /// once, releasing its bytes, and fails with `reason` on this thread; a running script is
    /// stopped by its worker's watchdog.
    func cancel(_ job: ComputeJob, _ reason: CSOPError) {
        job.cancel(reason)
        dequeue(job)
    }

    /// Withdraws `job` (see ``ComputeJob/withdraw(_:)``): a job still waiting leaves the queue at
    /// once and fails with `reason` on this thread; a running one finishes.
    func withdraw(_ job: ComputeJob, _ reason: CSOPError) {
        job.withdraw(reason)
        dequeue(job)
    }

    private func dequeue(_ job: ComputeJob) {
        guard queue.remove(job) else { return }
        stats.cancelled.add(1, ordering: .relaxed)
        job.finish(.failure(job.cancellationError))
    }

    var queued: Int { queue.queued }

    /// The ``ComputeJob/inputBytes`` of the jobs waiting for a worker.
    var queuedBytes: Int { queue.queuedBytes }

    /// Lets the workers finish queued jobs, then joins their threads.
    func shutdown() {
        queue.close()
        threads.joinAll()
    }
}

/// The pool's pthreads, joined once at shutdown.
final class ThreadList: @unchecked Sendable {  // Mutated only by the pool's init and shutdown.
    private var threads: [pthread_t] = []

    func start(_ worker: ComputeWorker) {
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        pthread_attr_setstacksize(&attributes, 8 << 20)
        var thread = pthread_t()
        let box = Unmanaged.passRetained(worker).toOpaque()
        let status = pthread_create(&thread, &attributes, { raw in
            let worker = Unmanaged<ComputeWorker>.fromOpaque(raw!).takeRetainedValue()
            worker.run()
            return nil
        }, box)
        pthread_attr_destroy(&attributes)
        if status == 0 {
            threads.append(thread)
        } else {
            Unmanaged<ComputeWorker>.fromOpaque(box).release()
        }
    }

    func joinAll() {
        for thread in threads { pthread_join(thread, nil) }
        threads.removeAll()
    }
}
