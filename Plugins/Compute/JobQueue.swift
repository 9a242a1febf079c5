import CSOPCore
import Glibc
import Synchronization

/// A FIFO of jobs that worker threads block on, bounded by count and by the bytes of request
/// its jobs carry (``ComputeJob/inputBytes``).
final class JobQueue: @unchecked Sendable {  // All state but `pending` and `pendingBytes` is guarded by `lock`.
    private let lock = ConditionLock()
    private var ring: [ComputeJob?]
    private var head = 0
    private var count = 0
    private var bytes = 0
    private var closed = false
    private var waiting = 0
    /// `count`, readable without the lock, so a worker can spin briefly before sleeping.
    private let pending = Atomic<Int>(0)
    /// `bytes`, readable without the lock, for `compute.stats`.
    private let pendingBytes = Atomic<Int>(0)
    /// How long a worker that just finished a job keeps looking for the next one before it
    /// sleeps: a request/response client sends the next task within tens of microseconds,
    /// and catching it here saves a futex wake-up on both sides.
    static let spinMilliseconds = 0.1
    /// Workers looking for work without sleeping, and workers running a job: together at most
    /// ``spinBudget``, so the threads that want a core never outnumber the cores. Spinners
    /// yield between looks, but a core shared by a spinner and the thread that must act next
    /// (the worker running a job, or the caller waiting for its answer) costs that thread a
    /// context switch each time the spinner yields: more than the wake-up spinning saves.
    private let spinning = Atomic<Int>(0)
    private let running = Atomic<Int>(0)
    /// The cores less one, left to the threads that submit jobs and wait for their answers.
    private let spinBudget = max(1, onlineCores - 1)

    /// The most jobs that may wait at once.
    let capacity: Int
    /// The most ``ComputeJob/inputBytes`` the waiting jobs may carry together.
    let byteCapacity: Int

    init(capacity: Int, byteCapacity: Int) {
        self.capacity = capacity
        self.byteCapacity = byteCapacity
        ring = Array(repeating: nil, count: capacity)
    }

    /// Jobs waiting for a worker.
    var queued: Int { pending.load(ordering: .relaxed) }

    /// The ``ComputeJob/inputBytes`` of the jobs waiting for a worker.
    var queuedBytes: Int { pendingBytes.load(ordering: .relaxed) }

    /// Appends a job, waking a worker.
    /// - Throws: `QUEUE_FULL` (retryable) when `capacity` jobs are already waiting, or when the
    ///   job's bytes would take the waiting ones past `byteCapacity`; `INVALID_PAYLOAD` (not
    ///   retryable) when the job alone carries more than `byteCapacity`; `NOT_INITIALIZED`
    ///   after ``close()``.
    func push(_ job: ComputeJob) throws(CSOPError) {
        guard job.inputBytes <= byteCapacity else {
            throw .invalidPayload(
                "task \(job.taskName) carries about \(job.inputBytes) bytes of function source and data, more than the compute queue may hold at all (\(byteCapacity) bytes, config maxQueueBytes); send less data per task or raise maxQueueBytes")
        }
        lock.lock()
        if closed {
            lock.unlock()
            throw CSOPError(.notInitialized, "the compute pool is shutting down")
        }
        if count == capacity {
            lock.unlock()
            throw CSOPError(
                .queueFull, "the compute queue is full (\(capacity) tasks waiting, config maxQueue); retry later",
                retryable: true)
        }
        if bytes + job.inputBytes > byteCapacity {
            let held = bytes
            lock.unlock()
            throw CSOPError(
                .queueFull,
                "the compute queue is full: its waiting tasks carry \(held) bytes, and this one's \(job.inputBytes) would pass the budget of \(byteCapacity) bytes (config maxQueueBytes); retry later",
                retryable: true)
        }
        ring[(head + count) % capacity] = job
        count += 1
        bytes += job.inputBytes
        pending.store(count, ordering: .relaxed)
        pendingBytes.store(bytes, ordering: .relaxed)
        // A spinning worker takes the job without a wake-up (it takes the lock, and sees the
        // job, after it stops counting itself as spinning); wake a sleeper only for the jobs
        // the spinners cannot take.
        let wake = waiting > 0 && count > spinning.load(ordering: .relaxed)
        lock.unlock()
        if wake { lock.signal() }
    }

    /// The oldest job, blocking while there is none; nil once closed and drained. Looks for
    /// work for a moment (yielding the CPU) before sleeping, when the spin budget allows.
    /// - Parameter finished: whether the calling worker comes back from running a job (the
    ///   job ``pop(finished:)`` last gave it).
    func pop(finished: Bool) -> ComputeJob? {
        if finished { running.subtract(1, ordering: .relaxed) }
        if pending.load(ordering: .relaxed) == 0 {
            if spinning.add(1, ordering: .relaxed).newValue + running.load(ordering: .relaxed) <= spinBudget {
                _ = spinWait(milliseconds: Self.spinMilliseconds) { pending.load(ordering: .relaxed) != 0 }
            }
            spinning.subtract(1, ordering: .relaxed)
        }
        let job = take()
        if job != nil { running.add(1, ordering: .relaxed) }
        return job
    }

    private func take() -> ComputeJob? {
        lock.lock()
        defer { lock.unlock() }
        while count == 0 {
            if closed { return nil }
            waiting += 1
            lock.wait()
            waiting -= 1
        }
        let job = ring[head]
        ring[head] = nil
        head = (head + 1) % capacity
        count -= 1
        bytes -= job?.inputBytes ?? 0
        pending.store(count, ordering: .relaxed)
        pendingBytes.store(bytes, ordering: .relaxed)
        return job
    }

    /// Takes `job` out of the queue if it is still waiting, releasing its bytes.
    /// - Returns: whether it was waiting (false once a worker took it). O(queued jobs).
    func remove(_ job: ComputeJob) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard let position = (0..<count).first(where: { ring[(head + $0) % capacity] === job }) else { return false }
        for i in position..<(count - 1) {
            ring[(head + i) % capacity] = ring[(head + i + 1) % capacity]
        }
        ring[(head + count - 1) % capacity] = nil
        count -= 1
        bytes -= job.inputBytes
        pending.store(count, ordering: .relaxed)
        pendingBytes.store(bytes, ordering: .relaxed)
        return true
    }

    /// Stops accepting jobs; workers drain what is queued, then ``pop()`` returns nil.
    func close() {
        lock.withLock { closed = true }
        lock.broadcast()
    }
}
