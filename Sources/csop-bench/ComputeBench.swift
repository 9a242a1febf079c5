import CJavaScriptCore
import CSOPCore
import CSOPHost
import Foundation
import Synchronization

/// Compute rows: a tiny custom function's round trip, exact fibonacci alone and in batches,
/// the pool's parallel speedup over one bare JavaScriptCore context, and WebAssembly
/// (``WasmBench``).
struct ComputeBench: BenchSuite {
    let name = "compute"

    static let heavySource = "let s=0; for (let i=0;i<2e6;i++) s+=i; return s"

    func run(_ context: BenchContext) async throws -> [BenchRow] {
        let host = try await context.makeHost([
            (library: "libcsop-compute.so", config: JSONObject()),
            (library: "libcsop-diag.so", config: JSONObject()),
        ])
        let addRequest = Request(
            id: "add", action: "compute.execute",
            payload: ["task": "custom", "data": ["fn": "return data.a + data.b", "args": ["a": 1, "b": 2]]])
        let fibRequest = Request(id: "fib", action: "compute.execute", payload: ["task": "fibonacci", "data": ["n": 1000]])
        let fibTasks = JSONValue.array(Array(repeating: ["task": "fibonacci", "data": ["n": 1000]], count: 100))
        let fibBatch = Request(id: "fibs", action: "compute.batch", payload: ["tasks": fibTasks])
        let heavyTasks = JSONValue.array(
            Array(repeating: ["task": "custom", "data": ["fn": .string(Self.heavySource)]], count: 100))
        let heavyBatch = Request(id: "heavy", action: "compute.batch", payload: ["tasks": heavyTasks])
        let noop = Request(id: "noop", action: "diag.noop")
        try await Self.check(host.dispatch(addRequest), "custom a+b")
        try await Self.check(host.dispatch(fibBatch), "batch of fibonacci")

        let iterations = context.iterations(50_000)
        let add = try await context.measure(iterations: iterations, warmup: 2000) {
            try Self.check(await host.dispatch(addRequest), "custom a+b")
        }
        let bareAdd = try BareJavaScript().measureAdd(context, iterations: iterations)
        let inFlight = await context.throughput(host, addRequest, count: context.iterations(200_000), window: 64)
        let fib = try await context.measure(iterations: iterations, warmup: 2000) {
            try Self.check(await host.dispatch(fibRequest), "fibonacci")
        }
        let noopStats = await context.measure(iterations: iterations, warmup: 2000) { _ = await host.dispatch(noop) }
        let batchIterations = context.iterations(2000)
        let fibs = try await context.measure(iterations: batchIterations, warmup: 50) {
            try Self.check(await host.dispatch(fibBatch), "batch of fibonacci")
        }
        let oneByOne = try await context.measure(iterations: context.iterations(200), warmup: 10) {
            for _ in 0..<100 { try Self.check(await host.dispatch(fibRequest), "fibonacci") }
        }
        let heavyIterations = context.quick ? 3 : 15
        let heavy = try await HeavyComparison.measure(context, iterations: heavyIterations) {
            try Self.check(await host.dispatch(heavyBatch), "heavy batch")
        }
        let wasmRows = try await WasmBench().rows(context, host: host, suite: name)
        await host.shutdown()
        // After the pool's threads are gone, so the two pools never share the cores.
        let node: Result<NodePool.Figures, BenchError>
        switch NodePool.locate() {
        case .success(let pool):
            do { node = .success(try await pool.measure(quick: context.quick)) } catch {
                node = .failure(error as? BenchError ?? BenchError(message: "node could not be run: \(error)"))
            }
        case .failure(let error): node = .failure(error)
        }
        let nodeFigures = try? node.get()
        var nodeMissing: String?
        if case .failure(let error) = node { nodeMissing = "Node peer not measured (\(error.message)): the figure is the published one" }
        let nodeHeavy = nodeFigures.map { "Node's pool: \(BenchFormat.number($0.heavyBare / $0.heavyPool))× over its one thread" } ?? nodeMissing

        return wasmRows + [
            BenchRow(
                suite: name, name: "execute custom `return data.a + data.b`", stats: add, throughput: 1e6 / add.mean,
                baseline: "same compiled function called on a bare JSC context", baselineStats: bareAdd,
                targets: [.maxP50(microseconds: 15)], note: nodeMissing,
                peer: nodeFigures.map { PeerFigure(peer: $0.peer, p50: $0.roundTripP50) }),
            BenchRow(
                suite: name, name: "custom a+b, 64 in flight", throughput: inFlight,
                baseline: "one at a time (1/mean)", baselineThroughput: 1e6 / add.mean,
                targets: [.minThroughput(400_000), .minPeerAdvantage(2)], note: nodeMissing,
                peer: nodeFigures.map { PeerFigure(peer: $0.peer, throughput: $0.inFlight) }),
            BenchRow(
                suite: name, name: "execute fibonacci(1000)", stats: fib, baseline: "diag.noop dispatch",
                baselineStats: noopStats),
            BenchRow(
                suite: name, name: "batch of 100 fibonacci(1000)", stats: fibs, baseline: "100 executes one by one",
                baselineStats: oneByOne, targets: [.maxP50(microseconds: 3000)]),
            BenchRow(
                suite: name, name: "batch of 100 CPU-heavy JS tasks", stats: heavy.pool,
                baseline: "same 100 on one bare JSC context", baselineStats: heavy.one,
                targets: [.minSpeedup(1.95)],
                note: [Self.ceilingNote(heavy), nodeHeavy].compactMap { $0 }.joined(separator: "; "),
                peer: nodeFigures.map { PeerFigure(peer: $0.peer, p50: $0.heavyPool) }),
        ]
    }

    /// What the machine allowed in the same run: two bare contexts on two threads, and how much of
    /// their speedup the pool reached.
    private static func ceilingNote(_ heavy: HeavyComparison) -> String {
        let pool = heavy.one.p50 / heavy.pool.p50
        return "the same 100 shared by two bare contexts on two threads: \(BenchFormat.number(heavy.ceiling))× over one (p50 \(BenchFormat.microseconds(heavy.two.p50)) µs), the machine's ceiling in this run; the pool reached \(Int((pool / heavy.ceiling * 100).rounded()))% of it"
    }

    private static func check(_ response: Response, _ what: String) throws {
        if let error = response.error { throw BenchError(message: "compute bench: \(what) failed: \(error)") }
    }
}
