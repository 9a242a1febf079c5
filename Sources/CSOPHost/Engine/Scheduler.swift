/// A clock with timers; the router takes one so tests can run time by hand.
public protocol Scheduler: Sendable {
    /// Monotonic milliseconds.
    func now() -> Double

    /// Runs `work` once after `milliseconds`, on a thread of the scheduler's choosing,
    /// unless the returned timer is cancelled first.
    func schedule(after milliseconds: Double, _ work: @escaping @Sendable () -> Void) -> any ScheduledTimer
}

/// A pending timer.
public protocol ScheduledTimer: Sendable {
    /// Stops the timer if it has not fired; harmless afterwards.
    func cancel()
}
