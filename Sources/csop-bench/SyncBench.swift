import CSOPCore
import CSOPHost
import Foundation
import Synchronization

/// Sync rows: local broadcast → subscriber latency in one host; cluster broadcast from this
/// process → a subscriber in a `csop run` child over loopback PostgreSQL; and sustained
/// cluster throughput into that child. Baselines: a no-op dispatch, and the local rows.
struct SyncBench: BenchSuite {
    let name = "sync"

    func run(_ context: BenchContext) async throws -> [BenchRow] {
        let localHost = try await context.makeHost([
            (library: "libcsop-sync.so", config: JSONObject()), (library: "libcsop-diag.so", config: JSONObject()),
        ])
        _ = await localHost.dispatch(Request(action: "sync.subscribe", payload: ["channel": "bench"]))
        let arrivals = Atomic<UInt64>(0)
        let listener = localHost.addEventListener { _ in arrivals.store(DispatchTime.now().uptimeNanoseconds, ordering: .releasing) }
        let broadcast = Request(action: "sync.broadcast", payload: ["channel": "bench", "event": "tick", "data": ["n": 1]])
        let iterations = context.iterations(100_000)
        let local = Self.sample(iterations) {
            arrivals.store(0, ordering: .relaxed)
            let start = DispatchTime.now().uptimeNanoseconds
            localHost.dispatch(broadcast) { _ in }
            var arrived = arrivals.load(ordering: .acquiring)
            while arrived == 0 { arrived = arrivals.load(ordering: .acquiring) }
            return arrived - start
        }
        let noop = Request(action: "diag.noop")
        let baseline = Self.sample(iterations) {
            let done = Atomic<UInt64>(0)
            let start = DispatchTime.now().uptimeNanoseconds
            localHost.dispatch(noop) { _ in done.store(DispatchTime.now().uptimeNanoseconds, ordering: .releasing) }
            var finished = done.load(ordering: .acquiring)
            while finished == 0 { finished = done.load(ordering: .acquiring) }
            return finished - start
        }
        localHost.removeEventListener(listener)
        await localHost.shutdown()
        var rows = [
            BenchRow(
                suite: name, name: "local broadcast → subscriber event", stats: local, baseline: "no-op dispatch → completion",
                baselineStats: baseline, targets: [.maxP50(microseconds: 5)])
        ]
        // Without history (NOTIFY carries the messages), then with it (each message stored and
        // numbered, receivers read it back): the price of messages that survive a disconnect.
        var plain: (latency: LatencyStats, throughput: Double)?
        for history in [false, true] {
            do {
                let measured = try await cluster(context, localStats: local, without: history ? plain : nil)
                rows += measured.rows
                if !history { plain = (measured.latency, measured.throughput) }
            } catch {
                rows.append(BenchRow(suite: name, name: "cluster rows\(history ? ", history on" : "")", note: "skipped: \(error)"))
            }
        }
        return rows
    }

    private static func sample(_ count: Int, _ body: () -> UInt64) -> LatencyStats {
        for _ in 0..<min(1000, count) { _ = body() }
        return BenchContext.stats(nanoseconds: (0..<count).map { _ in body() })
    }

    /// - Parameter without: the rows without history, measured just before: given, this
    ///   measures with history and compares with them.
    private func cluster(
        _ context: BenchContext, localStats: LatencyStats, without plain: (latency: LatencyStats, throughput: Double)?
    ) async throws -> (rows: [BenchRow], latency: LatencyStats, throughput: Double) {
        let history = plain != nil
        let environment = ProcessInfo.processInfo.environment
        let url = environment["CSOP_SYNC_POSTGRES_URL"] ?? environment["CSOP_TEST_POSTGRES_URL"]
            ?? "postgres://csop:csop@127.0.0.1:5432/csop_test"
        let config: JSONObject = [
            "postgresUrl": .string(url), "clusterChannel": .string("csop_bench_\(UInt32.random(in: 0 ... .max))"),
            "history": history ? ["size": 10_000] : ["size": 0],
        ]
        let suffix = history ? ", history on" : ""
        let child = try ChildSubscriber(
            executable: context.csopExecutable,
            pluginsDirectory: try context.makePluginsDirectory([(library: "libcsop-sync.so", config: config)]))
        defer { child.stop() }
        guard child.waitForLines(1) else { throw BenchError(message: "csop run did not answer sync.subscribe") }
        let host = try await context.makeHost([(library: "libcsop-sync.so", config: config)])
        defer { Task { await host.shutdown() } }

        let latencyCount = context.iterations(5000)
        var samples: [UInt64] = []
        var errors = 0
        for i in 0..<latencyCount {
            let start = DispatchTime.now().uptimeNanoseconds
            let response = await host.dispatch(
                Request(action: "sync.broadcast", payload: ["channel": "bench", "event": "lat", "data": .int(Int64(i))]))
            if !response.isOK { errors += 1 }
            guard child.waitForLines(i + 2), let arrival = child.arrival(i) else { break }
            samples.append(arrival - start)
        }
        let latency = BenchContext.stats(nanoseconds: samples)

        let total = context.iterations(100_000)
        let base = latencyCount + 1
        let inFlight = Atomic<Int>(0)
        let start = DispatchTime.now().uptimeNanoseconds
        for i in 0..<total {
            while inFlight.load(ordering: .relaxed) >= 2048 { await Task.yield() }
            inFlight.add(1, ordering: .relaxed)
            host.dispatch(
                Request(action: "sync.broadcast", payload: ["channel": "bench", "event": "tp", "data": .int(Int64(base + i))])
            ) { response in
                inFlight.subtract(1, ordering: .relaxed)
                if !response.isOK { child.countError() }
            }
        }
        let complete = child.waitForLines(base + total, seconds: 120)
        let elapsed = Double((child.lastArrival ?? start) - start) / 1e9
        let throughput = Double(child.lineCount - base) / elapsed
        errors += child.errors
        let rows = [
            BenchRow(
                suite: name, name: "cluster broadcast → subscriber in another process\(suffix)", stats: latency,
                baseline: plain == nil ? "local broadcast → subscriber" : "cluster, no history",
                baselineStats: plain?.latency ?? localStats,
                targets: [.maxP50(microseconds: 2000)],
                note: errors > 0 ? "\(errors) failed broadcasts!" : "includes the child's stdout pipe"),
            BenchRow(
                suite: name, name: "cluster throughput into another process\(suffix)", throughput: throughput,
                baseline: plain == nil ? "local broadcasts/s (1 / local mean)" : "cluster, no history",
                baselineThroughput: plain?.throughput ?? 1e6 / localStats.mean,
                targets: [.minThroughput(10_000)],
                note: complete ? nil : "only \(child.lineCount - base) of \(total) delivered!"),
        ]
        return (rows, latency, throughput)
    }
}

/// A `csop run` child subscribed to channel `bench`: records when each event line
/// (data = its index) arrives.
private final class ChildSubscriber: @unchecked Sendable {  // Mutable state is guarded by `lock`.
    private let process = Process()
    private let input = Pipe()
    private let lock = NSCondition()
    private var arrivals: [Int: UInt64] = [:]
    private(set) var lineCount = 0
    private(set) var lastArrival: UInt64?
    private(set) var errors = 0

    init(executable: String, pluginsDirectory: String) throws {
        let output = Pipe()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["run", "--plugins-dir", pluginsDirectory]
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let fd = output.fileHandleForReading.fileDescriptor
        Thread { [self] in readLoop(fd) }.start()
        input.fileHandleForWriting.write(Data("{\"id\":\"s\",\"action\":\"sync.subscribe\",\"payload\":{\"channel\":\"bench\"}}\n".utf8))
    }

    private func readLoop(_ fd: Int32) {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var pending: [UInt8] = []
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n <= 0 { break }
            let now = DispatchTime.now().uptimeNanoseconds
            pending += buffer[0..<n]
            var start = 0
            var lines: [(Int?, Bool)] = []
            while let newline = pending[start...].firstIndex(of: 0x0A) {
                let value = try? JSONValue(parsing: Array(pending[start..<newline]))
                start = newline + 1
                let isError = value?["status"]?.stringValue == "error"
                lines.append((value?["type"]?.stringValue == "event" ? value?["data"]?.int64Value.map(Int.init) : nil, isError))
            }
            pending.removeFirst(start)
            lock.lock()
            for (index, isError) in lines {
                lineCount += 1
                if isError { errors += 1 }
                if let index { arrivals[index] = now }
            }
            lastArrival = now
            lock.broadcast()
            lock.unlock()
        }
    }

    func arrival(_ index: Int) -> UInt64? {
        lock.lock()
        defer { lock.unlock() }
        return arrivals[index]
    }

    func countError() {
        lock.lock()
        errors += 1
        lock.unlock()
    }

    /// Waits until `count` lines arrived; false after `seconds`.
    func waitForLines(_ count: Int, seconds: Double = 10) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        lock.lock()
        defer { lock.unlock() }
        while lineCount < count {
            if !lock.wait(until: deadline) { return lineCount >= count }
        }
        return true
    }

    func stop() {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }
}
