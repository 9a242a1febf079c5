import CSOPCore
import CSOPPostgres
import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// The jobs table in PostgreSQL, and every statement that reads or changes it.
///
/// A job is one row; its `state` moves `queued` → `running` (claimed: `attempts` + 1, a lease
/// held by one host) → `succeeded` | `failed`, or back to `queued` (a failed attempt with
/// attempts left, or a lease that expired). Every change to a running job is guarded by
/// `lease_owner`, so a host whose lease expired cannot overwrite what the host that took the
/// job over writes: a row ends `succeeded` at most once. Statements run on a few connections,
/// each reconnected on first use after it was lost.
///
/// Submits commit durably (`synchronous_commit` as the server says: an answered job survives a
/// PostgreSQL crash) and are batched, so a burst costs one WAL flush per batch. Everything a
/// runner writes — claims, lease renewals, results — goes over connections with
/// `synchronous_commit = off`: a PostgreSQL crash may forget the last fraction of a second of
/// them, and the jobs concerned then run again (at least once still holds).
final class JobStore: Sendable {
    /// A claimed job, for the runner.
    struct Claimed: Sendable {
        var id: Int64
        var tenant: String?
        var task: String
        var data: String
        var timeout: Double?
        var attempt: Int
        var maxAttempts: Int
    }

    /// How an attempt ended.
    enum Outcome: Sendable {
        case succeeded(result: [UInt8])
        /// `final`: no further attempt, whatever `max_attempts` says (an error no retry can fix).
        case failed(CSOPError, final: Bool, retryDelay: Int)
    }

    let configuration: JobsConfiguration
    /// This host's name in `lease_owner`.
    let owner: String
    private let logger = Logger(label: "csop.compute.jobs", factory: { _ in SwiftLogNoOpLogHandler() })
    /// Which connections a statement runs on.
    enum Durability: Sendable {
        /// Submits: committed to disk before they are answered.
        case durable
        /// What runners write, and reads: `synchronous_commit = off`.
        case fast
    }

    /// Per ``Durability``, the statement connections, each made once by the first statement that
    /// needs it (the others wait for it) and made again after it was lost.
    private let connections: Mutex<[[Task<PostgresConnection, any Error>?]]>
    private let connectionCount: Int
    private let submits = StatementBatcher<Submission, Int64?>(maxBatch: 1000)
    private let finishes = StatementBatcher<Finished, Bool>(maxBatch: 1000)
    private let next = Atomic<Int>(0)
    private let schemaReady = Atomic<Bool>(false)
    private let schema = Mutex<Task<Void, any Error>?>(nil)
    private let nextConnectionID = Atomic<Int>(100)

    init(configuration: JobsConfiguration, owner: String, connections: Int = 2) {
        self.configuration = configuration
        self.owner = owner
        self.connections = Mutex(Array(repeating: Array(repeating: nil, count: connections), count: 2))
        self.connectionCount = connections
    }

    private var table: String { configuration.table }

    // MARK: Operations

    /// A job to store.
    struct Submission: Sendable {
        var tenant: String?
        var task: String
        var data: String
        var timeout: Double?
        var priority: Int
        var maxAttempts: Int
        /// Milliseconds since 1970; nil: now.
        var runAt: Int64?
        var idempotencyKey: String?
    }

    /// Stores a job; answers its id and whether it is new (false: `idempotencyKey` named an
    /// existing job of the same tenant, whose id is answered). Submits that come together are
    /// stored by one statement.
    func submit(_ job: Submission) async throws(CSOPError) -> (id: Int64, created: Bool) {
        if let inserted = try await submits.run(job, { items throws(CSOPError) in try await self.insert(items) }) {
            return (inserted, true)
        }
        guard let key = job.idempotencyKey else { throw CSOPError(.executionFailed, "the job was not stored (no row came back)", retryable: true) }
        let tenant = job.tenant ?? ""
        let existing: Int64? = try await run(.durable) { [table] connection in
            let rows = try await connection.queryUnlessClosed(
                "SELECT id FROM \(unescaped: table) WHERE tenant = \(tenant) AND idempotency_key = \(key)", logger: self.logger)
            for try await id in rows.decode(Int64.self) { return id }
            return nil
        }
        guard let existing else {
            throw CSOPError(.executionFailed, "a job with this idempotencyKey was being stored at the same time; try again", retryable: true)
        }
        return (existing, false)
    }

    /// Inserts `jobs` in one statement; answers each one's new id, or nil where its
    /// idempotency key was taken.
    private func insert(_ jobs: [Submission]) async throws(CSOPError) -> [Int64?] {
        // Arrays without NULLs: "" for no tenant or key, -1 for no timeout or runAt.
        let tenants = jobs.map { $0.tenant ?? "" }
        let tasks = jobs.map(\.task)
        let data = jobs.map(\.data)
        let timeouts = jobs.map { $0.timeout ?? -1 }
        let priorities = jobs.map { Int32($0.priority) }
        let attempts = jobs.map { Int32($0.maxAttempts) }
        let runAts = jobs.map { $0.runAt.map(Double.init) ?? -1 }
        let keys = jobs.map { $0.idempotencyKey ?? "" }
        let order = (0..<jobs.count).map(Int32.init)
        return try await run(.durable) { [table, configuration] connection in
            let rows = try await connection.queryUnlessClosed(
                """
                WITH input AS MATERIALIZED (
                    SELECT t.*, nextval(pg_get_serial_sequence(\(table), 'id')) AS id
                    FROM unnest(\(tenants)::text[], \(tasks)::text[], \(data)::text[], \(timeouts)::float8[], \(priorities)::int4[],
                                \(attempts)::int4[], \(runAts)::float8[], \(keys)::text[], \(order)::int4[])
                         AS t(tenant, task, data, timeout, priority, max_attempts, run_at, idempotency_key, ord)),
                ins AS (
                    INSERT INTO \(unescaped: table) (id, tenant, task, data, timeout, priority, max_attempts, run_at, idempotency_key)
                    SELECT id, tenant, task, data, NULLIF(timeout, -1), priority, max_attempts,
                           CASE WHEN run_at < 0 THEN now() ELSE to_timestamp(run_at / 1000) END, NULLIF(idempotency_key, '')
                    FROM input ORDER BY ord
                    ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                    RETURNING id)
                SELECT input.id, ins.id IS NOT NULL, (SELECT pg_notify(\(configuration.wakeChannel), '')::text)
                FROM input LEFT JOIN ins ON ins.id = input.id ORDER BY input.ord
                """, logger: self.logger)
            var ids: [Int64?] = []
            for try await (id, inserted, _) in rows.decode((Int64, Bool, String).self) { ids.append(inserted ? id : nil) }
            return ids
        }
    }

    /// One job of `tenant`, as `compute.job` answers it; nil when there is none.
    func job(id: Int64, tenant: String?) async throws(CSOPError) -> JSONValue? {
        try await list(tenant: tenant, id: id, state: nil, after: nil, limit: 1).first
    }

    /// Jobs of `tenant` in id order after `after`, optionally in one state.
    func list(tenant: String?, id: Int64? = nil, state: String?, after: Int64?, limit: Int) async throws(CSOPError) -> [JSONValue] {
        let tenantKey = tenant ?? ""
        return try await run(.fast) { [table] connection in
            let rows = try await connection.queryUnlessClosed(
                """
                SELECT id, state, task, priority, attempts, max_attempts,
                       extract(epoch FROM run_at)::float8 * 1000, extract(epoch FROM created_at)::float8 * 1000,
                       extract(epoch FROM started_at)::float8 * 1000, extract(epoch FROM finished_at)::float8 * 1000,
                       result, error, idempotency_key, lease_owner
                FROM \(unescaped: table)
                WHERE tenant = \(tenantKey) AND (\(id)::int8 IS NULL OR id = \(id))
                  AND (\(state)::text IS NULL OR state = \(state)) AND id > COALESCE(\(after)::int8, 0)
                ORDER BY id LIMIT \(limit)
                """, logger: self.logger)
            var jobs: [JSONValue] = []
            for try await row in rows.decode(
                (Int64, String, String, Int32, Int32, Int32, Double, Double, Double?, Double?, String?, String?, String?, String?).self)
            {
                var job: JSONObject = [
                    "id": .string(String(row.0)), "state": .string(row.1), "task": .string(row.2), "priority": .int(Int64(row.3)),
                    "attempts": .int(Int64(row.4)), "maxAttempts": .int(Int64(row.5)), "runAt": .double(row.6), "createdAt": .double(row.7),
                ]
                if let started = row.8 { job["startedAt"] = .double(started) }
                if let finished = row.9 { job["finishedAt"] = .double(finished) }
                if let result = row.10 { job["result"] = (try? JSONValue(parsing: result)) ?? .string(result) }
                if let error = row.11 { job["error"] = (try? JSONValue(parsing: error)) ?? .string(error) }
                if let key = row.12 { job["idempotencyKey"] = .string(key) }
                if let runner = row.13 { job["runner"] = .string(runner) }
                jobs.append(.object(job))
            }
            return jobs
        }
    }

    /// Claims up to `limit` due jobs for this host: highest priority first, then oldest `runAt`.
    /// Jobs other hosts are claiming at the same moment are skipped, never waited for.
    func claim(limit: Int) async throws(CSOPError) -> [Claimed] {
        try await run(.fast) { [table, owner, configuration] connection in
            let rows = try await connection.queryUnlessClosed(
                """
                UPDATE \(unescaped: table) SET state = 'running', attempts = attempts + 1, lease_owner = \(owner),
                    lease_until = now() + \(configuration.lease)::float8 * interval '1 millisecond', started_at = now()
                WHERE id IN (
                    SELECT id FROM \(unescaped: table) WHERE state = 'queued' AND run_at <= now()
                    ORDER BY priority DESC, run_at, id LIMIT \(limit) FOR UPDATE SKIP LOCKED)
                RETURNING id, tenant, task, data, timeout, attempts, max_attempts
                """, logger: self.logger)
            var claimed: [Claimed] = []
            for try await row in rows.decode((Int64, String, String, String, Double?, Int32, Int32).self) {
                claimed.append(
                    Claimed(
                        id: row.0, tenant: row.1.isEmpty ? nil : row.1, task: row.2, data: row.3, timeout: row.4,
                        attempt: Int(row.5), maxAttempts: Int(row.6)))
            }
            return claimed
        }
    }

    /// How one attempt ended, to record.
    struct Finished: Sendable {
        var id: Int64
        var outcome: Outcome
    }

    /// Records how this host's attempt at job `id` ended, and tells every host when the job
    /// ended for good. False when the job is no longer this host's (its lease expired and
    /// another host took it): nothing was written. Ends that come together are recorded by
    /// one statement.
    func finish(id: Int64, _ outcome: Outcome) async throws(CSOPError) -> Bool {
        try await finishes.run(Finished(id: id, outcome: outcome), { items throws(CSOPError) in try await self.record(items) })
    }

    private func record(_ ends: [Finished]) async throws(CSOPError) -> [Bool] {
        var ids: [Int64] = []
        var succeeded: [Bool] = []
        var results: [String] = []
        var errors: [String] = []
        var finals: [Bool] = []
        var delays: [Double] = []
        for end in ends {
            ids.append(end.id)
            switch end.outcome {
            case .succeeded(let result):
                succeeded.append(true)
                results.append(String(decoding: result, as: UTF8.self))
                errors.append("")
                finals.append(true)
                delays.append(0)
            case .failed(let failure, let final, let delay):
                succeeded.append(false)
                results.append("")
                errors.append(
                    String(decoding: JSONValue.object(["code": .string(failure.code.rawValue), "message": .string(failure.message)]).serialized(), as: UTF8.self))
                finals.append(final)
                delays.append(Double(delay))
            }
        }
        let recorded: [(written: Bool, ended: JSONValue?)] = try await run(.fast) {
            [table, owner, ids, succeeded, results, errors, finals, delays] connection in
            let rows = try await connection.queryUnlessClosed(
                """
                WITH input AS (
                    SELECT * FROM unnest(\(ids)::int8[], \(succeeded)::bool[], \(results)::text[], \(errors)::text[],
                                         \(finals)::bool[], \(delays)::float8[]) WITH ORDINALITY
                        AS t(id, succeeded, result, error, final, delay, ord)),
                done AS (
                    UPDATE \(unescaped: table) AS j SET
                        state = CASE WHEN i.succeeded THEN 'succeeded' WHEN i.final OR j.attempts >= j.max_attempts THEN 'failed'
                                     ELSE 'queued' END,
                        result = NULLIF(i.result, ''), error = NULLIF(i.error, ''), lease_owner = NULL, lease_until = NULL,
                        run_at = CASE WHEN i.succeeded OR i.final OR j.attempts >= j.max_attempts THEN j.run_at
                                      ELSE now() + i.delay * interval '1 millisecond' END,
                        finished_at = CASE WHEN i.succeeded OR i.final OR j.attempts >= j.max_attempts THEN now() END
                    FROM input i
                    WHERE j.id = i.id AND j.state = 'running' AND j.lease_owner = \(owner)
                    RETURNING j.id, j.tenant, j.state)
                SELECT done.id IS NOT NULL, done.tenant, done.state FROM input LEFT JOIN done ON done.id = input.id ORDER BY input.ord
                """, logger: self.logger)
            var recorded: [(Bool, JSONValue?)] = []
            var index = 0
            for try await (written, tenant, state) in rows.decode((Bool, String?, String?).self) {
                var ended: JSONValue?
                if written, let state, state != "queued" {
                    var job: JSONObject = ["id": .string(String(ids[index])), "state": .string(state)]
                    if let tenant, !tenant.isEmpty { job["tenant"] = .string(tenant) }
                    ended = .object(job)
                }
                recorded.append((written, ended))
                index += 1
            }
            return recorded
        }
        // Not awaited: the runner's next claim need not wait for it. An announcement that fails
        // is lost (the events are best effort; the row is what counts).
        let ended = recorded.compactMap(\.ended)
        if !ended.isEmpty { Task { try? await self.announce(ended) } }
        return recorded.map(\.written)
    }

    /// NOTIFYs the done channel: JSON arrays of `{id, state, tenant?}`, each under NOTIFY's
    /// 8000-byte limit.
    private func announce(_ ended: [JSONValue]) async throws(CSOPError) {
        guard !ended.isEmpty else { return }
        var payloads: [String] = []
        var current: [UInt8] = []
        for job in ended {
            let bytes = job.serialized()
            if !current.isEmpty && current.count + bytes.count + 2 > 7900 {
                payloads.append(String(decoding: current + [UInt8(ascii: "]")], as: UTF8.self))
                current = []
            }
            current += current.isEmpty ? [UInt8(ascii: "[")] : [UInt8(ascii: ",")]
            current += bytes
        }
        payloads.append(String(decoding: current + [UInt8(ascii: "]")], as: UTF8.self))
        try await run(.fast) { [configuration, payloads] connection in
            let rows = try await connection.queryUnlessClosed(
                "SELECT count(pg_notify(\(configuration.doneChannel), p)) FROM unnest(\(payloads)::text[]) AS p", logger: self.logger)
            for try await _ in rows {}
        }
    }

    /// Extends this host's leases on `ids`; answers the ids it still holds (a job missing from
    /// the answer was taken over after its lease expired: its run here should stop).
    func renew(ids: [Int64]) async throws(CSOPError) -> Set<Int64> {
        guard !ids.isEmpty else { return [] }
        return try await run(.fast) { [table, owner, configuration] connection in
            let rows = try await connection.queryUnlessClosed(
                """
                UPDATE \(unescaped: table) SET lease_until = now() + \(configuration.lease)::float8 * interval '1 millisecond'
                WHERE id = ANY(\(ids)) AND state = 'running' AND lease_owner = \(owner) RETURNING id
                """, logger: self.logger)
            var held = Set<Int64>()
            for try await id in rows.decode(Int64.self) { held.insert(id) }
            return held
        }
    }

    /// Gives this host's running jobs `ids` back at shutdown: `queued` again at once, the
    /// attempt not counted, and runners woken.
    func giveBack(ids: [Int64]) async throws(CSOPError) -> Int {
        try await run(.fast) { [table, owner, configuration] connection in
            let rows = try await connection.queryUnlessClosed(
                """
                WITH back AS (
                    UPDATE \(unescaped: table) SET state = 'queued', attempts = attempts - 1, lease_owner = NULL,
                        lease_until = NULL, run_at = now()
                    WHERE id = ANY(\(ids)) AND state = 'running' AND lease_owner = \(owner) RETURNING id)
                SELECT count(*), max(pg_notify(\(configuration.wakeChannel), '')::text) FROM back
                """, logger: self.logger)
            for try await (count, _) in rows.decode((Int64, String?).self) { return Int(count) }
            return 0
        }
    }

    /// Jobs whose host stopped renewing their lease (it died, or lost PostgreSQL for longer than
    /// the lease): back to `queued` for any host to run again, or `failed` when that was the last
    /// attempt. Answers how many were released.
    func releaseExpired() async throws(CSOPError) -> Int {
        try await run(.fast) { [table, configuration] connection in
            let rows = try await connection.queryUnlessClosed(
                """
                WITH expired AS (
                    UPDATE \(unescaped: table) SET
                        state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
                        error = json_build_object('code', 'WORKER_CRASHED', 'message',
                            'the host running the job (' || lease_owner || ') stopped renewing its lease')::text,
                        lease_owner = NULL, lease_until = NULL, run_at = now(),
                        finished_at = CASE WHEN attempts >= max_attempts THEN now() END
                    WHERE id IN (SELECT id FROM \(unescaped: table) WHERE state = 'running' AND lease_until < now()
                                 FOR UPDATE SKIP LOCKED)
                    RETURNING id, tenant, state)
                SELECT state, CASE WHEN state = 'queued' THEN pg_notify(\(configuration.wakeChannel), '')::text
                    ELSE pg_notify(\(configuration.doneChannel), json_build_object('id', id::text, 'state', state, 'tenant', tenant)::text)::text
                    END FROM expired
                """, logger: self.logger)
            var count = 0
            for try await _ in rows.decode((String, String?).self) { count += 1 }
            return count
        }
    }

    /// Closes the connections.
    func shutdown() {
        submits.stop()
        finishes.stop()
        let made = connections.withLock { connections in
            defer { connections = Array(repeating: Array(repeating: nil, count: connectionCount), count: 2) }
            return connections.joined().compactMap { $0 }
        }
        for task in made {
            Task { try? await task.value.closeInBackground() }
        }
    }

    // MARK: Connections

    /// Opens a connection to the jobs database (also the runner's LISTEN connection).
    func connect(_ durability: Durability = .durable) async throws(CSOPError) -> PostgresConnection {
        do {
            var config = configuration.postgres.connectionConfiguration()
            config.options.additionalStartupParameters = [("application_name", "csop-compute-jobs-\(owner)")]
            if durability == .fast { config.options.additionalStartupParameters.append(("synchronous_commit", "off")) }
            return try await PostgresConnection.connect(
                configuration: config, id: nextConnectionID.add(1, ordering: .relaxed).newValue, logger: logger)
        } catch {
            throw CSOPError(
                .notConnected,
                "the jobs database (PostgreSQL at \(configuration.postgres.endpoint)) is unreachable: \(configuration.postgres.describe(connectionError: error))",
                retryable: true)
        }
    }

    /// Runs `body` on one of the `durability` connections (round robin), connecting it first when needed.
    /// A lost connection is `NOT_CONNECTED`, a failed statement `EXECUTION_FAILED` with the
    /// server's message (never the statement or its values); both retryable.
    private func run<T: Sendable>(
        _ durability: Durability, _ body: @Sendable (PostgresConnection) async throws -> T
    ) async throws(CSOPError) -> T {
        let kind = durability == .durable ? 0 : 1
        let slot = next.add(1, ordering: .relaxed).newValue % connectionCount
        var connection: PostgresConnection?
        var failure = CSOPError(
            .notConnected, "the connection to the jobs database (\(configuration.postgres.endpoint)) was lost; try again", retryable: true)
        for _ in 0..<2 {
            let making = connections.withLock { connections in
                if let making = connections[kind][slot] { return making }
                let making = Task { () async throws -> PostgresConnection in try await self.connect(durability) }
                connections[kind][slot] = making
                return making
            }
            do {
                let made = try await making.value
                if !made.isClosed {
                    connection = made
                    break
                }
            } catch {
                if let error = error as? CSOPError { failure = error }
            }
            // Failed, or lost since: the next try makes a new one.
            connections.withLock { connections in
                if connections[kind][slot] == making { connections[kind][slot] = nil }
            }
        }
        guard let connection else { throw failure }
        let chosen = connection
        do {
            try await ensureSchema(chosen)
            return try await body(chosen)
        } catch {
            if chosen.isClosed {
                throw CSOPError(.notConnected, "the connection to the jobs database (\(configuration.postgres.endpoint)) was lost; try again", retryable: true)
            }
            throw CSOPError(.executionFailed, "the jobs database failed: \(PostgresURL.describe(error))", retryable: true)
        }
    }

    /// Creates the table and its indexes once (statements that come meanwhile wait for it).
    private func ensureSchema(_ connection: PostgresConnection) async throws {
        if schemaReady.load(ordering: .acquiring) { return }
        let creating = schema.withLock { schema in
            if let creating = schema { return creating }
            let creating = Task { try await self.createSchema(connection) }
            schema = creating
            return creating
        }
        do {
            try await creating.value
            schemaReady.store(true, ordering: .releasing)
        } catch {
            schema.withLock { if $0 == creating { $0 = nil } }
            throw error
        }
    }

    private func createSchema(_ connection: PostgresConnection) async throws {
        let statements = [
            """
            CREATE TABLE IF NOT EXISTS \(table) (
                id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                tenant text NOT NULL DEFAULT '', task text NOT NULL, data text NOT NULL, timeout float8,
                priority integer NOT NULL DEFAULT 0, state text NOT NULL DEFAULT 'queued',
                attempts integer NOT NULL DEFAULT 0, max_attempts integer NOT NULL DEFAULT 3,
                run_at timestamptz NOT NULL DEFAULT now(), idempotency_key text,
                lease_owner text, lease_until timestamptz, result text, error text,
                created_at timestamptz NOT NULL DEFAULT now(), started_at timestamptz, finished_at timestamptz)
            """,
            "CREATE UNIQUE INDEX IF NOT EXISTS \(table)_idempotency ON \(table) (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL",
            "CREATE INDEX IF NOT EXISTS \(table)_due ON \(table) (priority DESC, run_at, id) WHERE state = 'queued'",
            "CREATE INDEX IF NOT EXISTS \(table)_leases ON \(table) (lease_until) WHERE state = 'running'",
            "CREATE INDEX IF NOT EXISTS \(table)_tenant ON \(table) (tenant, id)",
        ]
        for statement in statements {
            // Two hosts creating the table at once can collide on the catalog; the loser retries.
            for attempt in 1...3 {
                do {
                    try await connection.queryUnlessClosed(PostgresQuery(unsafeSQL: statement), logger: logger)
                    break
                } catch {
                    if attempt == 3 || connection.isClosed { throw error }
                    try await Task.sleep(for: .milliseconds(50 * attempt))
                }
            }
        }
    }
}
