import CSOPCore
import CSOPHost
import CSOPPostgres
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// Shared-jobs rows (`compute.submit` through PostgreSQL on loopback): jobs/s with one and with
/// two `csop run` runner processes, submitted from this process (a host with `run = false`) and
/// counted by the `compute.job.done` events it hears; and, one job at a time, the wait from
/// submit to start (`startedAt − createdAt`, both PostgreSQL's clock) and submit → done event.
/// Baselines: the same task through `compute.execute` in process.
struct JobsBench: BenchSuite {
    let name = "jobs"

    static let task: JSONValue = ["task": "sum", "data": ["numbers": [1, 2, 3]]]

    func run(_ context: BenchContext) async throws -> [BenchRow] {
        let environment = ProcessInfo.processInfo.environment
        let url = environment["CSOP_COMPUTE_JOBS_URL"] ?? environment["CSOP_TEST_POSTGRES_URL"]
            ?? "postgres://csop:csop@127.0.0.1:5432/csop_test"
        let table = "csop_bench_jobs_\(UInt32.random(in: 0 ... .max))"
        let jobs: JSONObject = ["postgresUrl": .string(url), "table": .string(table), "pollInterval": 200]
        var submitterJobs = jobs
        submitterJobs["run"] = false
        let submitter = try await context.makeHost([(library: "libcsop-compute.so", config: ["workers": 1, "jobs": .object(submitterJobs)])])
        let done = DoneCounter()
        let listener = submitter.addEventListener { event in
            if event.value["event"] == "compute.job.done" { done.count(event.value["data"]?["id"]?.stringValue) }
        }
        defer { submitter.removeEventListener(listener) }
        let watched = await submitter.dispatch(Request(action: "compute.watch", payload: [:], options: RequestOptions(timeout: 60_000)))
        guard watched.isOK else { throw BenchError(message: "compute.watch failed: \(watched)") }
        let runnersDirectory = try context.makePluginsDirectory([(library: "libcsop-compute.so", config: ["jobs": .object(jobs)])])

        // Baseline: the task through compute.execute, in process.
        let execute = Request(action: "compute.execute", payload: Self.task)
        let local = await context.throughput(submitter, execute, count: context.iterations(100_000), window: 64)
        let localLatency = await context.measure(iterations: context.iterations(5000), warmup: 200) { _ = await submitter.dispatch(execute) }

        var rows: [BenchRow] = []
        let one = try RunnerProcesses(executable: context.csopExecutable, pluginsDirectory: runnersDirectory, count: 1)
        let latencyCount = context.iterations(1000)
        var submitToDone: [UInt64] = []
        var ids: [String] = []
        for _ in 0..<latencyCount {
            let start = DispatchTime.now().uptimeNanoseconds
            let answer = await submitter.dispatch(Request(action: "compute.submit", payload: Self.task, options: RequestOptions(timeout: 60_000)))
            guard let id = answer.data?["id"]?.stringValue else { throw BenchError(message: "compute.submit failed: \(answer)") }
            guard let end = await done.wait(for: id, seconds: 30) else { throw BenchError(message: "job \(id) never ended") }
            submitToDone.append(end - start)
            ids.append(id)
        }
        var waits: [UInt64] = []
        for id in ids {
            let job = await submitter.dispatch(Request(action: "compute.job", payload: ["id": .string(id)]))
            if let created = job.data?["createdAt"]?.doubleValue, let started = job.data?["startedAt"]?.doubleValue {
                waits.append(UInt64(max(0, started - created) * 1e6))
            }
        }
        rows.append(
            BenchRow(
                suite: name, name: "job submit → started (claim wait, one at a time)", stats: BenchContext.stats(nanoseconds: waits),
                baseline: "compute.execute of the task in process", baselineStats: localLatency,
                note: "PostgreSQL's own clock: created_at → started_at"))
        rows.append(
            BenchRow(
                suite: name, name: "job submit → compute.job.done event", stats: BenchContext.stats(nanoseconds: submitToDone),
                baseline: "compute.execute of the task in process", baselineStats: localLatency))

        for processes in [1, 2] {
            let runners = processes == 1 ? one : try RunnerProcesses(executable: context.csopExecutable, pluginsDirectory: runnersDirectory, count: 2)
            let total = context.iterations(20_000)
            done.reset()
            let submit = Request(action: "compute.submit", payload: Self.task, options: RequestOptions(timeout: 120_000))
            let start = DispatchTime.now().uptimeNanoseconds
            let submitted = await context.throughput(submitter, submit, count: total, window: 256)
            let finished = await done.waitForCount(total, seconds: 300)
            let elapsed = Double((finished ?? DispatchTime.now().uptimeNanoseconds) - start) / 1e9
            rows.append(
                BenchRow(
                    suite: name, name: "jobs/s, \(processes) runner process\(processes == 1 ? "" : "es") (\(total) jobs, 256 submits in flight)",
                    throughput: Double(done.total) / elapsed, baseline: "compute.execute/s in process, 64 in flight", baselineThroughput: local,
                    targets: [.minThroughput(2000)],
                    note: finished == nil ? "only \(done.total) of \(total) ended!" : "submits alone: \(Int(submitted))/s"))
            runners.stop()
        }
        await submitter.shutdown()
        try await Self.drop(table, url: url)
        return rows
    }

    /// Drops the bench's jobs table: a run leaves nothing behind in the database.
    private static func drop(_ table: String, url: String) async throws {
        let postgres = try PostgresURL(url, field: "CSOP_COMPUTE_JOBS_URL")
        let logger = Logger(label: "csop.bench", factory: { _ in SwiftLogNoOpLogHandler() })
        let connection = try await PostgresConnection.connect(configuration: postgres.connectionConfiguration(), id: 1, logger: logger)
        try await connection.query(PostgresQuery(unsafeSQL: "DROP TABLE IF EXISTS \(table)"), logger: logger)
        try await connection.close()
    }
}

/// Counts `compute.job.done` events and notes when each id's arrived.
private final class DoneCounter: Sendable {
    private struct State {
        var total = 0
        var last: UInt64 = 0
        var arrivals: [String: UInt64] = [:]
    }
    private let state = Mutex(State())

    func count(_ id: String?) {
        let now = DispatchTime.now().uptimeNanoseconds
        state.withLock { state in
            state.total += 1
            state.last = now
            if let id, state.arrivals.count < 100_000 { state.arrivals[id] = now }
        }
    }

    func reset() { state.withLock { $0 = State() } }

    var total: Int { state.withLock { $0.total } }

    /// When job `id`'s event arrived, waiting up to `seconds` for it.
    func wait(for id: String, seconds: Double) async -> UInt64? {
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
        while DispatchTime.now().uptimeNanoseconds < deadline {
            if let arrival = state.withLock({ $0.arrivals[id] }) { return arrival }
            await Task.yield()
        }
        return nil
    }

    /// When the `count`th event arrived, waiting up to `seconds`; nil if it never did.
    func waitForCount(_ count: Int, seconds: Double) async -> UInt64? {
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
        while DispatchTime.now().uptimeNanoseconds < deadline {
            let (total, last) = state.withLock { ($0.total, $0.last) }
            if total >= count { return last }
            try? await Task.sleep(for: .milliseconds(1))
        }
        return nil
    }
}

/// `csop run` processes that run jobs; they read nothing but wait on their stdin.
private final class RunnerProcesses: Sendable {
    private let processes: [Process]
    private let inputs: [FileHandle]

    init(executable: String, pluginsDirectory: String, count: Int) throws {
        var processes: [Process] = []
        var inputs: [FileHandle] = []
        for _ in 0..<count {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = ["run", "--plugins-dir", pluginsDirectory, "--no-watch-plugins"]
            let input = Pipe()
            process.standardInput = input
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            processes.append(process)
            inputs.append(input.fileHandleForWriting)
        }
        self.processes = processes
        self.inputs = inputs
    }

    func stop() {
        for input in inputs { try? input.close() }
        for process in processes { process.waitUntilExit() }
    }
}
