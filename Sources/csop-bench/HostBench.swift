import CSOPCore
import CSOPHost
import Foundation

/// Dispatch overhead of a no-op operation through a dlopen'ed plugin.
struct HostBench: BenchSuite {
    let name = "host"

    func run(_ context: BenchContext) async throws -> [BenchRow] {
        let host = try await context.makeHost([(library: "libcsop-diag.so", config: JSONObject())])
        let request = Request(id: "bench", action: "diag.noop")
        let iterations = context.iterations(200_000)

        let asyncStats = await context.measure(iterations: iterations, warmup: 2000) {
            _ = await host.dispatch(request)
        }
        let callbackStats = context.measure(iterations: iterations, warmup: 2000) {
            host.dispatch(request) { _ in }
        }
        let baseline = context.measure(iterations: iterations, warmup: 2000) {
            _ = request.payload.serialized()
        }
        let inProcessLoad = await context.throughput(host, request, count: context.iterations(200_000), window: 64)

        // The same dispatch with metrics on (as csop serve has them), against the host without,
        // in 10 alternating rounds: this machine switches between a fast and a slow mode
        // (about 2× apart) from one second to the next, and a cost of a tenth of a microsecond
        // is only visible between neighbours. The row is the round with the median difference.
        let measured = try await context.makeHost([(library: "libcsop-diag.so", config: JSONObject())], metrics: true)
        var rounds: [(on: LatencyStats, off: LatencyStats)] = []
        for _ in 0..<10 {
            let off = context.measure(iterations: max(iterations / 10, 20), warmup: 500) { host.dispatch(request) { _ in } }
            let on = context.measure(iterations: max(iterations / 10, 20), warmup: 500) { measured.dispatch(request) { _ in } }
            rounds.append((on, off))
        }
        rounds.sort { $0.on.p50 - $0.off.p50 < $1.on.p50 - $1.off.p50 }
        let (metricsStats, metricsOff) = rounds[rounds.count / 2]
        await measured.shutdown()
        await host.shutdown()

        // The same plugin in a child process (isolation = "process"), beside the in-process rows.
        let isolated = try await context.makeIsolatedHost(library: "libcsop-diag.so")
        let isolatedStats = await context.measure(iterations: context.iterations(50_000), warmup: 2000) {
            _ = await isolated.dispatch(request)
        }
        let isolatedLoad = await context.throughput(isolated, request, count: context.iterations(200_000), window: 64)
        await isolated.shutdown()

        let directory = try context.makePluginsDirectory([(library: "libcsop-diag.so", config: JSONObject())])
        let count = context.iterations(200_000)
        let line: (Int) -> [UInt8] = { Array("{\"id\":\"r\($0)\",\"action\":\"diag.noop\"}".utf8) }
        let run = try PipeDriver(
            executable: context.csopExecutable, arguments: ["run", "--plugins-dir", directory]
        ).run(count: count, window: 64, line: line)
        let cat = try PipeDriver(executable: "/bin/cat", arguments: []).run(count: count, window: 64, line: line)
        return [
            BenchRow(
                suite: name, name: "no-op dispatch, in-process (await)", stats: asyncStats,
                throughput: 1e6 / asyncStats.mean, baseline: "serialize the payload only", baselineStats: baseline,
                targets: [.maxP50(microseconds: 5)]),
            BenchRow(
                suite: name, name: "no-op dispatch, in-process (callback)", stats: callbackStats,
                throughput: 1e6 / callbackStats.mean, baseline: "serialize the payload only", baselineStats: baseline),
            BenchRow(
                suite: name, name: "no-op dispatch with metrics on (callback)", stats: metricsStats,
                throughput: 1e6 / metricsStats.mean, baseline: "metrics off (callback)", baselineStats: metricsOff,
                targets: [.maxAddedP50(microseconds: 0.3)], note: "the median of 10 rounds alternating with the host without"),
            BenchRow(
                suite: name, name: "no-op dispatch, isolated plugin (await)", stats: isolatedStats,
                throughput: 1e6 / isolatedStats.mean, baseline: "in-process (await)", baselineStats: asyncStats,
                targets: [.maxP50(microseconds: 25)]),
            BenchRow(
                suite: name, name: "no-op, isolated plugin, 64 in flight", throughput: isolatedLoad,
                baseline: "in-process, 64 in flight", baselineThroughput: inProcessLoad, targets: [.minThroughput(100_000)]),
            BenchRow(
                suite: name, name: "no-op via csop run, 64 in flight", stats: run.latency, throughput: run.throughput,
                baseline: "same lines echoed by cat", baselineStats: cat.latency, baselineThroughput: cat.throughput,
                targets: [.minThroughput(250_000)], note: run.errors > 0 ? "\(run.errors) error responses!" : nil),
        ]
    }

}
