import CSOPCore
import Glibc
import Synchronization

/// A bounded FIFO of jobs that worker threads block on.
final class JobQueue: @unchecked Sendable {  // All state but `pending` is guarded by `lock`.
    private let lock = ConditionLock()
    private var ring: [ComputeJob?]
    private var head = 0
    private var count = 0
    private var closed = false
    private var waiting = 0
    /// `count`, readable without the lock, so a worker can spin briefly before sleeping.
    private let pending = Atomic<Int>(0)
    /// How long a worker that just finished a job keeps looking for the next one before it
    /// sleeps: a request/response client sends the next task within tens of microseconds,
    /// and catching it here saves a futex wake-up on both sides.
    static let spinMilliseconds = 0.1

    /// The most jobs that may wait at once.
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        ring = Array(repeating: nil, count: capacity)
    }

    /// Jobs waiting for a worker.
    var queued: Int { pending.load(ordering: .relaxed) }

    /// Appends a job, waking a worker.
    /// - Throws: `QUEUE_FULL` (retryable) when `capacity` jobs are already waiting;
    ///   `NOT_INITIALIZED` after ``close()``.
    func push(_ job: ComputeJob) throws(CSOPError) {
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
        ring[(head + count) % capacity] = job
        count += 1
        pending.store(count, ordering: .relaxed)
        let wake = waiting > 0
        lock.unlock()
        if wake { lock.signal() }
    }

    /// The oldest job, blocking while there is none; nil once closed and drained. Looks for
    /// work for a moment (yielding the CPU) before sleeping.
    func pop() -> ComputeJob? {
        if pending.load(ordering: .relaxed) == 0 {
            let until = monotonicMilliseconds() + Self.spinMilliseconds
            while pending.load(ordering: .relaxed) == 0, monotonicMilliseconds() < until { sched_yield() }
        }
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
        pending.store(count, ordering: .relaxed)
        return job
    }

    /// Stops accepting jobs; workers drain what is queued, then ``pop()`` returns nil.
    func close() {
        lock.withLock { closed = true }
        lock.broadcast()
    }
}
