import CJavaScriptCore
import CSOPCore
import Synchronization

/// What a worker's JavaScriptCore watchdog checks while a script runs: the task's deadline,
/// its cancelled flag and the memory cap. Used only on its worker's thread.
final class ExecutionWatch {
    /// Why a script was stopped from outside.
    enum StopReason: Sendable { case timeout, cancelled, memory }

    /// Seconds before the first poll: as long as the memory cap allows (up to 100 ms). Each
    /// firing makes JavaScriptCore drop the running script's optimized code, so polling every
    /// 10 ms costs ~20% of CPU-bound throughput, 50 ms ~3%.
    let firstPoll: Double
    /// Bounds of later polls, chosen from the memory headroom left.
    static let minimumPoll = 0.01
    static let maximumPoll = 0.1
    /// The fastest allocation rate assumed when spacing polls (a memory bomb reaches ~1.5 GB/s).
    static let worstAllocationRate = 4.0 * 1024 * 1024 * 1024

    private let memory = ProcessMemory()
    /// Growth at which a script is stopped: the cap minus what the fastest allocator could add
    /// before the next poll, so the process stays under the cap.
    private let memoryLimit: UInt64
    /// Monotonic milliseconds at which the running task times out.
    private var deadline = Double.infinity
    private var rssAtStart: UInt64 = 0
    /// Monotonic milliseconds of the last `rssAtStart` sample.
    private var lastSample = 0.0
    private var job: ComputeJob?
    private var group: JSContextGroupRef?
    private var armed = 0.0
    /// Set by the watchdog when it terminated the running script.
    private(set) var stopReason: StopReason?

    init(memoryLimitBytes: UInt64) {
        memoryLimit = memoryLimitBytes - min(memoryLimitBytes / 8, UInt64(Self.worstAllocationRate * Self.minimumPoll))
        firstPoll = min(max(Double(memoryLimitBytes) / Self.worstAllocationRate, Self.minimumPoll), Self.maximumPoll)
    }

    /// Arms the watch for one task; execution time starts now, not when it was queued.
    func begin(_ job: ComputeJob) {
        self.job = job
        stopReason = nil
        let now = monotonicMilliseconds()
        deadline = now + max(job.timeoutMilliseconds, 1)
        // Between back-to-back tasks RSS barely moves; re-reading it for every tiny task
        // would cost a syscall each, so a sample up to 5 ms old serves as the baseline.
        if now - lastSample > 5 || rssAtStart == 0 {
            rssAtStart = memory.residentBytes() ?? 0
            lastSample = now
        }
        let first = min(firstPoll, max(job.timeoutMilliseconds / 1000, 0.001))
        if first != armed { arm(first) }
    }

    func end() {
        job = nil
        deadline = .infinity
    }

    /// Decides whether to terminate, or when to look again; called from the watchdog on the
    /// script's thread.
    fileprivate func poll() -> Bool {
        guard let job else {
            // Sandbox set-up or bookkeeping between tasks: nothing to enforce.
            arm(Self.maximumPoll)
            return false
        }
        let now = monotonicMilliseconds()
        let growth = memory.residentBytes().map { $0 > rssAtStart ? $0 - rssAtStart : 0 } ?? 0
        if job.isCancelled {
            stopReason = .cancelled
        } else if now >= deadline {
            stopReason = .timeout
        } else if growth > memoryLimit {
            stopReason = .memory
        }
        if stopReason != nil { return true }
        let headroom = Double(memoryLimit - growth) / Self.worstAllocationRate
        let untilDeadline = (deadline - now) / 1000
        arm(min(max(min(headroom, Self.maximumPoll), Self.minimumPoll), max(untilDeadline, 0.001)))
        return false
    }

    /// Installs the polling watchdog on `group`; `self` must outlive the group.
    func install(on group: JSContextGroupRef) {
        self.group = group
        arm(firstPoll)
    }

    private func arm(_ seconds: Double) {
        guard let group else { return }
        armed = seconds
        JSContextGroupSetExecutionTimeLimit(group, seconds, watchdogFired, Unmanaged.passUnretained(self).toOpaque())
    }
}

/// JavaScriptCore calls this once per armed limit; re-arming it in `poll` turns it into a poll.
private func watchdogFired(_ context: JSContextRef?, _ info: UnsafeMutableRawPointer?) -> Bool {
    guard let info else { return true }
    return Unmanaged<ExecutionWatch>.fromOpaque(info).takeUnretainedValue().poll()
}
