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
    /// The statement connections, each made once by the first statement that needs it (the
    /// others wait for it) and made again after it was lost.
    private let connections: Mutex<[Task<PostgresConnection, any Error>?]>
    private let connectionCount: Int
    private let next = Atomic<Int>(0)
    private let schemaReady = Atomic<Bool>(false)
    private let schema = Mutex<Task<Void, any Error>?>(nil)
    private let nextConnectionID = Atomic<Int>(100)

    init(configuration: JobsConfiguration, owner: String, connections: Int = 3) {
        self.configuration = configuration
        self.owner = owner
        self.connections = Mutex(Array(repeating: nil, count: connections))
        self.connectionCount = connections
    }

    private var table: String { configuration.table }

    // MARK: Operations

    /// Stores a job; answers its id and whether it is new (false: `idempotencyKey` named an
    /// existing job of the same tenant, whose id is answered).
    func submit(
        tenant: String?, task: String, data: String, timeout: Double?, priority: Int, maxAttempts: Int, runAt: Int64?,
        idempotencyKey: String?
    ) async throws(CSOPError) -> (id: Int64, created: Bool) {
        let tenantKey = tenant ?? ""
        let inserted: Int64? = try await run { [table, configuration] connection in
            let rows = try await connection.queryUnlessClosed(
                """
                WITH ins AS (
                    INSERT INTO \(unescaped: table) (tenant, task, data, timeout, priority, max_attempts, run_at, idempotency_key)
                    VALUES (\(tenantKey), \(task), \(data), \(timeout), \(priority), \(maxAttempts),
                            COALESCE(to_timestamp(\(runAt)::float8 / 1000), now()), \(idempotencyKey))
                    ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                    RETURNING id)
                SELECT id, pg_notify(\(configuration.wakeChannel), '')::text FROM ins
                """, logger: self.logger)
            for try await (id, _) in rows.decode((Int64, String).self) { return id }
            return nil
        }
        if let inserted { return (inserted, true) }
        guard let idempotencyKey else { throw CSOPError(.executionFailed, "the job was not stored (no row came back)", retryable: true) }
        let existing: Int64? = try await run { [table] connection in
            let rows = try await connection.queryUnlessClosed(
                "SELECT id FROM \(unescaped: table) WHERE tenant = \(tenantKey) AND idempotency_key = \(idempotencyKey)", logger: self.logger)
            for try await id in rows.decode(Int64.self) { return id }
            return nil
        }
        guard let existing else {
            throw CSOPError(.executionFailed, "a job with this idempotencyKey was being stored at the same time; try again", retryable: true)
        }
        return (existing, false)
    }

    /// One job of `tenant`, as `compute.job` answers it; nil when there is none.
    func job(id: Int64, tenant: String?) async throws(CSOPError) -> JSONValue? {
        try await list(tenant: tenant, id: id, state: nil, after: nil, limit: 1).first
    }

    /// Jobs of `tenant` in id order after `after`, optionally in one state.
    func list(tenant: String?, id: Int64? = nil, state: String?, after: Int64?, limit: Int) async throws(CSOPError) -> [JSONValue] {
        let tenantKey = tenant ?? ""
        return try await run { [table] connection in
            let rows = try await connection.queryUnlessClosed(
                """
                SELECT id, state, task, priority, attempts, max_attempts,
                       (extract(epoch FROM run_at) * 1000)::int8, (extract(epoch FROM created_at) * 1000)::int8,
                       (extract(epoch FROM started_at) * 1000)::int8, (extract(epoch FROM finished_at) * 1000)::int8,
                       result, error, idempotency_key
                FROM \(unescaped: table)
                WHERE tenant = \(tenantKey) AND (\(id)::int8 IS NULL OR id = \(id))
                  AND (\(state)::text IS NULL OR state = \(state)) AND id > COALESCE(\(after)::int8, 0)
                ORDER BY id LIMIT \(limit)
                """, logger: self.logger)
            var jobs: [JSONValue] = []
            for try await row in rows.decode(
                (Int64, String, String, Int32, Int32, Int32, Int64, Int64, Int64?, Int64?, String?, String?, String?).self)
            {
                var job: JSONObject = [
                    "id": .string(String(row.0)), "state": .string(row.1), "task": .string(row.2), "priority": .int(Int64(row.3)),
                    "attempts": .int(Int64(row.4)), "maxAttempts": .int(Int64(row.5)), "runAt": .int(row.6), "createdAt": .int(row.7),
                ]
                if let started = row.8 { job["startedAt"] = .int(started) }
                if let finished = row.9 { job["finishedAt"] = .int(finished) }
                if let result = row.10 { job["result"] = (try? JSONValue(parsing: result)) ?? .string(result) }
                if let error = row.11 { job["error"] = (try? JSONValue(parsing: error)) ?? .string(error) }
                if let key = row.12 { job["idempotencyKey"] = .string(key) }
                jobs.append(.object(job))
            }
            return jobs
        }
    }

    /// Claims up to `limit` due jobs for this host: highest priority first, then oldest `runAt`.
    /// Jobs other hosts are claiming at the same moment are skipped, never waited for.
    func claim(limit: Int) async throws(CSOPError) -> [Claimed] {
        try await run { [table, owner, configuration] connection in
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

    /// Records how this host's attempt at job `id` ended. False when the job is no longer this
    /// host's (its lease expired and another host took it): nothing was written.
    func finish(id: Int64, _ outcome: Outcome) async throws(CSOPError) -> Bool {
        let (result, error, final, delay): (String?, String?, Bool, Int) =
            switch outcome {
            case .succeeded(let result): (String(decoding: result, as: UTF8.self), nil, true, 0)
            case .failed(let failure, let final, let delay):
                (nil, String(decoding: JSONValue.object(["code": .string(failure.code.rawValue), "message": .string(failure.message)]).serialized(), as: UTF8.self), final, delay)
            }
        let succeeded = result != nil
        return try await run { [table, owner, configuration] connection in
            let rows = try await connection.queryUnlessClosed(
                """
                WITH done AS (
                    UPDATE \(unescaped: table) SET
                        state = CASE WHEN \(succeeded) THEN 'succeeded'
                                     WHEN \(final) OR attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
                        result = \(result), error = \(error), lease_owner = NULL, lease_until = NULL,
                        run_at = CASE WHEN \(succeeded) OR \(final) OR attempts >= max_attempts THEN run_at
                                      ELSE now() + \(delay)::float8 * interval '1 millisecond' END,
                        finished_at = CASE WHEN \(succeeded) OR \(final) OR attempts >= max_attempts THEN now() END
                    WHERE id = \(id) AND state = 'running' AND lease_owner = \(owner)
                    RETURNING id, tenant, state)
                SELECT state, CASE WHEN state = 'queued' THEN '' ELSE pg_notify(\(configuration.doneChannel),
                    json_build_object('id', id::text, 'state', state, 'tenant', tenant)::text)::text END FROM done
                """, logger: self.logger)
            for try await _ in rows.decode((String, String?).self) { return true }
            return false
        }
    }

    /// Extends this host's leases on `ids`; answers the ids it still holds (a job missing from
    /// the answer was taken over after its lease expired: its run here should stop).
    func renew(ids: [Int64]) async throws(CSOPError) -> Set<Int64> {
        guard !ids.isEmpty else { return [] }
        return try await run { [table, owner, configuration] connection in
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
        try await run { [table, owner, configuration] connection in
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
        try await run { [table, configuration] connection in
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
        let made = connections.withLock { connections in
            defer { connections = Array(repeating: nil, count: connectionCount) }
            return connections.compactMap { $0 }
        }
        for task in made {
            Task { try? await task.value.closeInBackground() }
        }
    }

    // MARK: Connections

    /// Opens a connection to the jobs database (also the runner's LISTEN connection).
    func connect() async throws(CSOPError) -> PostgresConnection {
        do {
            var config = configuration.postgres.connectionConfiguration()
            config.options.additionalStartupParameters = [("application_name", "csop-compute-jobs-\(owner)")]
            return try await PostgresConnection.connect(
                configuration: config, id: nextConnectionID.add(1, ordering: .relaxed).newValue, logger: logger)
        } catch {
            throw CSOPError(
                .notConnected,
                "the jobs database (PostgreSQL at \(configuration.postgres.endpoint)) is unreachable: \(configuration.postgres.describe(connectionError: error))",
                retryable: true)
        }
    }

    /// Runs `body` on one of the connections (round robin), connecting it first when needed.
    /// A lost connection is `NOT_CONNECTED`, a failed statement `EXECUTION_FAILED` with the
    /// server's message (never the statement or its values); both retryable.
    private func run<T: Sendable>(_ body: @Sendable (PostgresConnection) async throws -> T) async throws(CSOPError) -> T {
        let slot = next.add(1, ordering: .relaxed).newValue % connectionCount
        var connection: PostgresConnection?
        var failure = CSOPError(
            .notConnected, "the connection to the jobs database (\(configuration.postgres.endpoint)) was lost; try again", retryable: true)
        for _ in 0..<2 {
            let making = connections.withLock { connections in
                if let making = connections[slot] { return making }
                let making = Task { () async throws -> PostgresConnection in try await self.connect() }
                connections[slot] = making
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
                if connections[slot] == making { connections[slot] = nil }
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
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
