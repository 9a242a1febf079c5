import CJavaScriptCore
import CSOPCore
import Synchronization

/// What a worker's JavaScriptCore watchdog checks while a script runs: the task's deadline,
/// its cancelled flag and the memory cap. Used only on its worker's thread.
///
/// The memory cap counts the worker's own VM (``JavaScriptCoreHeap``: its heap, array buffers
/// and string and typed-array storage), so what other requests, plugins or workers allocate
/// never stops a script. Where this JavaScriptCore's VM cannot be measured, it counts how much
/// the process's RSS has grown since the script started instead, which other allocations in
/// the process also move (``countsProcessMemory``).
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

    /// Measures the VM; nil when the cap counts process RSS growth.
    private let heap: JavaScriptCoreHeap?
    private let process: ProcessMemory?
    private let stats: PoolStatistics?
    /// Bytes at which a script is stopped: the cap minus what the fastest allocator could add
    /// before the next poll, so memory stays under the cap.
    private let memoryLimit: UInt64
    /// Monotonic milliseconds at which the running task times out.
    private var deadline = Double.infinity
    /// Process RSS when the running script started (without a VM meter).
    private var rssAtStart: UInt64 = 0
    /// Monotonic milliseconds of the last `rssAtStart` sample.
    private var lastSample = 0.0
    private var job: ComputeJob?
    private var group: JSContextGroupRef?
    private var armed = 0.0
    /// Set by the watchdog when it terminated the running script.
    private(set) var stopReason: StopReason?
    /// What the cap counted when it stopped the last script, in bytes.
    private(set) var memoryAtStop: UInt64 = 0

    /// - Parameter stats: counts each memory check of a running script in `memoryChecks`.
    init(memoryLimitBytes: UInt64, stats: PoolStatistics? = nil) {
        memoryLimit = memoryLimitBytes - min(memoryLimitBytes / 8, UInt64(Self.worstAllocationRate * Self.minimumPoll))
        firstPoll = min(max(Double(memoryLimitBytes) / Self.worstAllocationRate, Self.minimumPoll), Self.maximumPoll)
        let heap = JavaScriptCoreHeap.shared
        self.heap = heap
        process = heap == nil ? ProcessMemory() : nil
        self.stats = stats
    }

    /// Whether the memory cap counts the growth of the whole process's RSS, because this
    /// JavaScriptCore's VM cannot be measured.
    var countsProcessMemory: Bool { heap == nil }

    /// The bytes the installed VM holds now; nil without a VM meter or an installed VM.
    func heapBytes() -> UInt64? {
        guard let heap, let group else { return nil }
        return heap.bytes(group)
    }

    /// Arms the watch for one task; execution time starts now, not when it was queued.
    func begin(_ job: ComputeJob) {
        self.job = job
        stopReason = nil
        let now = monotonicMilliseconds()
        deadline = now + max(job.timeoutMilliseconds, 1)
        // Between back-to-back tasks RSS barely moves; re-reading it for every tiny task
        // would cost a syscall each, so a sample up to 5 ms old serves as the baseline.
        if let process, now - lastSample > 5 || rssAtStart == 0 {
            rssAtStart = process.residentBytes() ?? 0
            lastSample = now
        }
        let first = min(firstPoll, max(job.timeoutMilliseconds / 1000, 0.001))
        if first != armed { arm(first) }
    }

    func end() {
        job = nil
        deadline = .infinity
    }

    /// What the cap counts now: the VM's bytes, or the process's RSS growth since the script began.
    private func memoryInUse() -> UInt64 {
        if let heap, let group { return heap.bytes(group) }
        return process?.residentBytes().map { $0 > rssAtStart ? $0 - rssAtStart : 0 } ?? 0
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
        let used = memoryInUse()
        stats?.memoryChecks.add(1, ordering: .relaxed)
        if job.isCancelled {
            stopReason = .cancelled
        } else if now >= deadline {
            stopReason = .timeout
        } else if used > memoryLimit {
            stopReason = .memory
            memoryAtStop = used
        }
        if stopReason != nil { return true }
        let headroom = Double(memoryLimit - used) / Self.worstAllocationRate
        let untilDeadline = (deadline - now) / 1000
        arm(min(max(min(headroom, Self.maximumPoll), Self.minimumPoll), max(untilDeadline, 0.001)))
        return false
    }

    /// Installs the polling watchdog on `group`; `self` must outlive the group, and
    /// ``uninstall(from:)`` must be called before the group is released.
    func install(on group: JSContextGroupRef) {
        self.group = group
        arm(firstPoll)
    }

    /// Forgets `group`, which is about to be released.
    func uninstall(from group: JSContextGroupRef) {
        if self.group == group { self.group = nil }
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
