import Foundation
import Synchronization
import Histogram

/// The pool's parallel speedup and the machine's, from one run: the pool's batch of 100 heavy
/// tasks, the same 100 in a row on one bare context, and the same 100 shared by two bare
/// contexts on two threads, measured in turn, iteration by iteration, so all three see the
/// machine in the same state.
///
/// The two bare threads are the ceiling for a pool of two workers on two cores: on a shared
/// virtual machine two threads of pure CPU work rarely finish in half the time of one (a C loop
/// measured 1.25–2.17× over one thread on this machine from minute to minute).
struct HeavyComparison {
    /// The batch through `compute.batch`.
    var pool: LatencyStats
    /// The 100 tasks in a row on one bare context.
    var one: LatencyStats
    /// The 100 tasks on two bare contexts, on two threads at once, each taking the next task as it
    /// finishes one.
    var two: LatencyStats

    /// The machine's speedup for this work on two threads: `one` over `two`, p50s.
    var ceiling: Double { one.p50 / two.p50 }

    /// - Parameter batch: dispatches the pool's batch and waits for its answer.
    static func measure(_ context: BenchContext, iterations: Int, batch: () async throws -> Void) async throws -> HeavyComparison {
        let bare = [BareJavaScript(), BareJavaScript()]
        for each in bare { try each.prepareHeavy() }
        // Two threads of their own, as the pool's workers have, taking the next task as they
        // finish one (as the pool's take them from its queue); the calling thread only waits.
        let split = {
            let done = DispatchSemaphore(value: 0)
            let next = Atomic<Int>(0)
            for each in bare {
                Thread {
                    while next.add(1, ordering: .relaxed).oldValue < 100 { each.runHeavy(count: 1) }
                    done.signal()
                }.start()
            }
            done.wait()
            done.wait()
        }
        // Warm-up: every path compiled to its top tier first.
        try await batch()
        bare[0].runHeavy(count: 100)
        split()
        var pool = Histogram<UInt64>(highestTrackableValue: 3_600_000_000_000)
        var one = pool
        var two = pool
        for _ in 0..<iterations {
            var start = DispatchTime.now().uptimeNanoseconds
            try await batch()
            _ = pool.record(DispatchTime.now().uptimeNanoseconds - start)
            start = DispatchTime.now().uptimeNanoseconds
            bare[0].runHeavy(count: 100)
            _ = one.record(DispatchTime.now().uptimeNanoseconds - start)
            start = DispatchTime.now().uptimeNanoseconds
            split()
            _ = two.record(DispatchTime.now().uptimeNanoseconds - start)
        }
        return HeavyComparison(pool: BenchContext.stats(pool), one: BenchContext.stats(one), two: BenchContext.stats(two))
    }
}
