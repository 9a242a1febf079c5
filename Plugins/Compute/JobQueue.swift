import CSOPCore
import Glibc
import Synchronization

/// A bounded FIFO of jobs that worker threads block on. Owns its pthread mutex and
/// condition variable.
final class JobQueue: @unchecked Sendable {  // All state is guarded by `mutex`.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
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
    static let spinNanoseconds: UInt64 = 100_000

    /// The most jobs that may wait at once.
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        ring = Array(repeating: nil, count: capacity)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    /// Jobs waiting for a worker.
    var queued: Int {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return count
    }

    /// Appends a job, waking a worker.
    /// - Throws: `QUEUE_FULL` (retryable) when `capacity` jobs are already waiting;
    ///   `NOT_INITIALIZED` after ``close()``.
    func push(_ job: ComputeJob) throws(CSOPError) {
        pthread_mutex_lock(mutex)
        if closed {
            pthread_mutex_unlock(mutex)
            throw CSOPError(.notInitialized, "the compute pool is shutting down")
        }
        if count == capacity {
            pthread_mutex_unlock(mutex)
            throw CSOPError(
                .queueFull, "the compute queue is full (\(capacity) tasks waiting, config maxQueue); retry later",
                retryable: true)
        }
        ring[(head + count) % capacity] = job
        count += 1
        pending.store(count, ordering: .relaxed)
        let wake = waiting > 0
        pthread_mutex_unlock(mutex)
        if wake { pthread_cond_signal(condition) }
    }

    /// The oldest job, blocking while there is none; nil once closed and drained.
    /// - Parameter spin: look for work for a moment (yielding the CPU) before sleeping.
    func pop(spin: Bool = false) -> ComputeJob? {
        if spin, pending.load(ordering: .relaxed) == 0 {
            let until = MonotonicClock.now() &+ Self.spinNanoseconds
            while pending.load(ordering: .relaxed) == 0, MonotonicClock.now() < until { sched_yield() }
        }
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while count == 0 {
            if closed { return nil }
            waiting += 1
            pthread_cond_wait(condition, mutex)
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
        pthread_mutex_lock(mutex)
        closed = true
        pthread_mutex_unlock(mutex)
        pthread_cond_broadcast(condition)
    }
}
