import Glibc
import Synchronization

/// The real ``Scheduler``: one thread sleeping on a deadline heap.
///
/// Timers fire on that thread, so their work must be short (resume a caller, enqueue a
/// retry). Cancelled timers are dropped lazily and swept when they outnumber live ones.
public final class TimerThread: Scheduler, Sendable {
    public static let shared = TimerThread()

    private final class Entry: ScheduledTimer, @unchecked Sendable {  // `cancelled` and `work` are guarded by the owner's lock.
        let deadline: Double
        let sequence: UInt64
        /// Dropped when the entry is cancelled or fires, so what it captured (a call's whole
        /// request) is freed then, not when the entry leaves the heap.
        var work: (@Sendable () -> Void)?
        /// Strong, not weak: a started timer thread lives as long as the process (its thread
        /// holds it), and a weak reference would allocate a side table for every timer.
        let owner: TimerThread
        var cancelled = false

        init(deadline: Double, sequence: UInt64, work: @escaping @Sendable () -> Void, owner: TimerThread) {
            self.deadline = deadline
            self.sequence = sequence
            self.work = work
            self.owner = owner
        }

        func cancel() { owner.cancel(self) }

        func precedes(_ other: Entry) -> Bool {
            deadline < other.deadline || (deadline == other.deadline && sequence < other.sequence)
        }
    }

    private struct State {
        var heap: [Entry] = []
        var sequence: UInt64 = 0
        var cancelledCount = 0
        var sleepingUntil: Double? = nil
        var started = false
    }

    private let lock = ConditionLock()
    private nonisolated(unsafe) var state = State()  // Guarded by `lock`.

    public init() {}

    public func now() -> Double { monotonicMilliseconds() }

    public func schedule(after milliseconds: Double, _ work: @escaping @Sendable () -> Void) -> any ScheduledTimer {
        let deadline = now() + max(0, milliseconds)
        return lock.withLock {
            if !state.started {
                state.started = true
                startThread()
            }
            state.sequence += 1
            let entry = Entry(deadline: deadline, sequence: state.sequence, work: work, owner: self)
            push(entry)
            if let sleeping = state.sleepingUntil, deadline < sleeping { lock.signal() }
            return entry
        }
    }

    private func cancel(_ entry: Entry) {
        let work = lock.withLock { () -> (@Sendable () -> Void)? in
            guard !entry.cancelled else { return nil }
            entry.cancelled = true
            state.cancelledCount += 1
            if state.cancelledCount > 256 && state.cancelledCount * 2 > state.heap.count { compact() }
            let work = entry.work
            entry.work = nil
            return work
        }
        _ = work  // Released here, outside the lock.
    }

    private func startThread() {
        let box = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        pthread_create(&thread, nil, { raw in
            let timer = Unmanaged<TimerThread>.fromOpaque(raw!).takeRetainedValue()
            timer.loop()
            return nil
        }, box)
        pthread_detach(thread)
    }

    private func loop() {
        lock.lock()
        while true {
            guard let first = state.heap.first else {
                state.sleepingUntil = .infinity
                lock.wait()
                continue
            }
            if first.cancelled {
                popFirst()
                state.cancelledCount -= 1
                continue
            }
            let current = now()
            if first.deadline > current {
                state.sleepingUntil = first.deadline
                lock.wait(untilMilliseconds: first.deadline)
                continue
            }
            popFirst()
            first.cancelled = true
            let work = first.work
            first.work = nil
            state.sleepingUntil = nil
            lock.unlock()
            work?()
            lock.lock()
        }
    }

    private func compact() {
        state.heap.removeAll { $0.cancelled }
        state.cancelledCount = 0
        state.heap.sort { $0.precedes($1) }
    }

    private func push(_ entry: Entry) {
        state.heap.append(entry)
        var child = state.heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard state.heap[child].precedes(state.heap[parent]) else { break }
            state.heap.swapAt(child, parent)
            child = parent
        }
    }

    private func popFirst() {
        let last = state.heap.removeLast()
        guard !state.heap.isEmpty else { return }
        state.heap[0] = last
        var parent = 0
        let count = state.heap.count
        while true {
            let left = 2 * parent + 1
            guard left < count else { break }
            var best = left
            if left + 1 < count, state.heap[left + 1].precedes(state.heap[left]) { best = left + 1 }
            guard state.heap[best].precedes(state.heap[parent]) else { break }
            state.heap.swapAt(best, parent)
            parent = best
        }
    }
}
