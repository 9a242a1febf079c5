import CSOPCore
import Synchronization

/// Counters the pool keeps for `compute.stats`. Updated from worker threads.
final class PoolStatistics: Sendable {
    let busy = Atomic<Int>(0)
    let alive = Atomic<Int>(0)
    let completed = Atomic<Int>(0)
    let failed = Atomic<Int>(0)
    let timedOut = Atomic<Int>(0)
    let recycled = Atomic<Int>(0)
    let memoryStops = Atomic<Int>(0)
    let cancelled = Atomic<Int>(0)
    /// Times a watchdog measured a running script's memory (not in `compute.stats`; tests
    /// wait on it to know a check happened).
    let memoryChecks = Atomic<Int>(0)
}
