import CSOPCore
import CoreMetrics

/// The compute plugin's series, set from the pool's live figures when the host is scraped:
/// nothing is added to a task's path.
final class ComputeMetrics: Sendable {
    private let registry = MetricsRegistry()
    private let workers: CoreMetrics.Gauge
    private let alive: CoreMetrics.Gauge
    private let busy: CoreMetrics.Gauge
    private let queued: CoreMetrics.Gauge
    private let queuedBytes: CoreMetrics.Gauge
    private let registered: CoreMetrics.Gauge
    private let completed: MirroredCounter
    private let failed: MirroredCounter
    private let timedOut: MirroredCounter
    private let cancelled: MirroredCounter
    private let recycled: MirroredCounter
    private let memoryStops: MirroredCounter

    init() {
        workers = registry.gauge("csop_compute_workers", "Worker threads the pool is configured with.")
        alive = registry.gauge("csop_compute_workers_alive", "Workers running now (a recycled one is replaced).")
        busy = registry.gauge("csop_compute_workers_busy", "Workers running a task now.")
        queued = registry.gauge("csop_compute_queue_depth", "Tasks waiting for a worker.")
        queuedBytes = registry.gauge("csop_compute_queue_bytes", "Payload bytes of the tasks waiting for a worker.")
        registered = registry.gauge("csop_compute_functions_registered", "Functions registered (compute.register), all tenants.")
        completed = registry.mirroredCounter("csop_compute_tasks_completed_total", "Tasks that succeeded (on the pool or inline).")
        failed = registry.mirroredCounter("csop_compute_tasks_failed_total", "Tasks that failed (an exception, a trap, a bad result).")
        timedOut = registry.mirroredCounter("csop_compute_tasks_timed_out_total", "Tasks stopped by their timeout.")
        cancelled = registry.mirroredCounter("csop_compute_tasks_cancelled_total", "Tasks stopped because the host cancelled them.")
        recycled = registry.mirroredCounter("csop_compute_workers_recycled_total", "Workers replaced after a stopped script or memory stop.")
        memoryStops = registry.mirroredCounter("csop_compute_memory_stops_total", "Scripts stopped for passing the memory cap.")
    }

    /// Sets every series from the pool's figures and appends them.
    func write(
        into buffer: inout [UInt8], stats: PoolStatistics, workers configured: Int, queued depth: Int, queuedBytes bytes: Int,
        inlineCompleted: Int, registered functions: Int
    ) {
        workers.record(configured)
        alive.record(stats.alive.load(ordering: .relaxed))
        busy.record(stats.busy.load(ordering: .relaxed))
        queued.record(depth)
        queuedBytes.record(bytes)
        registered.record(functions)
        completed.update(to: stats.completed.load(ordering: .relaxed) + inlineCompleted)
        failed.update(to: stats.failed.load(ordering: .relaxed))
        timedOut.update(to: stats.timedOut.load(ordering: .relaxed))
        cancelled.update(to: stats.cancelled.load(ordering: .relaxed))
        recycled.update(to: stats.recycled.load(ordering: .relaxed))
        memoryStops.update(to: stats.memoryStops.load(ordering: .relaxed))
        registry.emit(into: &buffer)
    }
}
