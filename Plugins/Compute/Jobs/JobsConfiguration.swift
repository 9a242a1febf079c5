import CSOPCore
import CSOPPostgres
import Foundation

/// The compute plugin's `[config.jobs]` table: durable jobs in PostgreSQL, shared by every
/// host that names the same database and table.
///
/// Keys: `postgresUrl` (or `CSOP_COMPUTE_JOBS_URL`; the same URL forms and TLS options as
/// storage's cold tier), `table` (default `csop_jobs`), `run` (default true: this host claims
/// and runs jobs; false: it only submits and reads them), `concurrency` (jobs this host runs at
/// once, counting those claimed and waiting for a worker, 1…4096, default 32 × workers: a host claims again once half of it is free; for long jobs set it near `workers`, so jobs wait where any host can take them), `lease` (ms a claimed job stays this host's
/// without a heartbeat, 1000…3600000, default 30000; heartbeats come every third of it),
/// `pollInterval` (ms between looks for jobs whose `runAt` came or whose lease expired,
/// 50…60000, default 1000; a submit wakes runners at once through LISTEN/NOTIFY),
/// `retryDelay` (ms before the first retry of a failed attempt, doubling up to 5 minutes,
/// 0…3600000, default 1000).
struct JobsConfiguration: Sendable {
    var postgres: PostgresURL
    var table = "csop_jobs"
    var run = true
    var concurrency: Int
    var lease = 30_000
    var pollInterval = 1_000
    var retryDelay = 1_000

    static let keys: Set<String> = ["postgresUrl", "table", "run", "concurrency", "lease", "pollInterval", "retryDelay"]

    /// The `jobs` table of `config`, or nil when there is none (and no `CSOP_COMPUTE_JOBS_URL`).
    /// - Throws: `INVALID_PAYLOAD` naming the bad `config.jobs.<key>`.
    static func read(
        _ config: Fields, workers: Int, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(CSOPError) -> JobsConfiguration? {
        let fromEnvironment = environment["CSOP_COMPUTE_JOBS_URL"].flatMap { $0.isEmpty ? nil : $0 }
        guard config["jobs"] != nil || fromEnvironment != nil else { return nil }
        let fields = try config.nested("jobs", allowed: keys)
        guard let url = try fields.string("postgresUrl") ?? fromEnvironment else {
            throw .invalidPayload("config.jobs needs postgresUrl (a postgres:// URL), or CSOP_COMPUTE_JOBS_URL in the environment")
        }
        var jobs = JobsConfiguration(
            postgres: try PostgresURL(url, field: "config.jobs.postgresUrl (or CSOP_COMPUTE_JOBS_URL)"), concurrency: min(32 * workers, 4096))
        if let table = try fields.string("table", maxLength: 48) {
            guard let first = table.utf8.first, first == UInt8(ascii: "_") || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(first),
                table.utf8.allSatisfy({ $0 == UInt8(ascii: "_") || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) })
            else {
                throw .invalidPayload("config.jobs.table must be lowercase letters, digits and underscores, starting with a letter or underscore")
            }
            jobs.table = table
        }
        if let run = try fields.bool("run") { jobs.run = run }
        if let value = try fields.int("concurrency", in: 1...4096) { jobs.concurrency = Int(value) }
        if let value = try fields.int("lease", in: 1_000...3_600_000) { jobs.lease = Int(value) }
        if let value = try fields.int("pollInterval", in: 50...60_000) { jobs.pollInterval = Int(value) }
        if let value = try fields.int("retryDelay", in: 0...3_600_000) { jobs.retryDelay = Int(value) }
        return jobs
    }

    /// The NOTIFY channel that wakes runners (a job was submitted or became due).
    var wakeChannel: String { table }
    /// The NOTIFY channel that tells every host a job ended.
    var doneChannel: String { "\(table)_done" }
}
