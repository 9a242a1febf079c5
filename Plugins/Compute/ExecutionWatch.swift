import CJavaScriptCore
import Synchronization

/// What a worker's JavaScriptCore watchdog checks while a script runs: the task's deadline,
/// its cancelled flag and the memory cap. Used only on its worker's thread.
final class ExecutionWatch {
    /// Why a script was stopped from outside.
    enum StopReason: Sendable { case timeout, cancelled, memory }

    /// Seconds between watchdog polls while a script runs.
    static let pollInterval = 0.01

    private let memory = ProcessMemory()
    private let memoryLimit: UInt64
    private var deadline: UInt64 = .max
    private var rssAtStart: UInt64 = 0
    private var job: ComputeJob?
    /// Set by the watchdog when it terminated the running script.
    private(set) var stopReason: StopReason?

    init(memoryLimitBytes: UInt64) { memoryLimit = memoryLimitBytes }

    /// Arms the watch for one task; execution time starts now, not when it was queued.
    func begin(_ job: ComputeJob) {
        self.job = job
        stopReason = nil
        deadline = MonotonicClock.now() &+ UInt64(max(job.timeoutMilliseconds, 1) * 1_000_000)
        rssAtStart = memory.residentBytes() ?? 0
    }

    func end() { job = nil }

    /// Decides whether to terminate; called from the watchdog on the script's thread.
    fileprivate func shouldStop() -> Bool {
        if let job, job.isCancelled {
            stopReason = .cancelled
        } else if MonotonicClock.now() >= deadline {
            stopReason = .timeout
        } else if let rss = memory.residentBytes(), rss > rssAtStart, rss - rssAtStart > memoryLimit {
            stopReason = .memory
        }
        return stopReason != nil
    }

    /// Installs the polling watchdog on `group`; `self` must outlive the group.
    func install(on group: JSContextGroupRef) {
        JSContextGroupSetExecutionTimeLimit(group, Self.pollInterval, watchdogFired, Unmanaged.passUnretained(self).toOpaque())
    }
}

/// JavaScriptCore calls this once per armed limit; re-arming it here turns it into a poll.
private func watchdogFired(_ context: JSContextRef?, _ info: UnsafeMutableRawPointer?) -> Bool {
    guard let info, let context else { return true }
    let watch = Unmanaged<ExecutionWatch>.fromOpaque(info).takeUnretainedValue()
    if watch.shouldStop() { return true }
    JSContextGroupSetExecutionTimeLimit(JSContextGetGroup(context), ExecutionWatch.pollInterval, watchdogFired, info)
    return false
}
