import Glibc

/// Looks for `done()` to turn true for up to `milliseconds` before the caller goes to sleep:
/// without pausing for the first `busyMilliseconds` (an answer that comes within microseconds
/// is seen at once), then yielding the CPU between looks (so a thread that shares the core and
/// must act first is not kept from it).
///
/// Only worth it where an answer usually comes within the budget and the threads that spin
/// are fewer than the cores: callers bound who may spin.
/// - Returns: whether `done()` turned true.
@inline(__always)
public func spinWait(milliseconds: Double, busyMilliseconds: Double = 0.02, until done: () -> Bool) -> Bool {
    if done() { return true }
    let start = monotonicMilliseconds()
    let busyUntil = start + min(busyMilliseconds, milliseconds)
    let until = start + milliseconds
    while true {
        for _ in 0..<32 where done() { return true }
        let now = monotonicMilliseconds()
        if now >= until { return done() }
        if now >= busyUntil { sched_yield() }
    }
}
