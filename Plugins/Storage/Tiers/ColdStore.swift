import CSOPCore
import CSOPPostgres
import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// The cold tier: value bytes in a PostgreSQL table, one row per saved version, named by a
/// random `ref` that the SQLite key index points at. The table is created on first use.
///
/// Writing a new row and then flipping the index means a crash between the two leaves at
/// worst an unreferenced row here (an orphan), never a lost or stale value.
final class ColdStore: Sendable {
    /// Why a cold-tier operation failed.
    enum Failure: Error {
        /// No connection could be made: the caller may fall back to the hot tier.
        case unreachable(String)
        case cancelled
        case failed(String)

        var error: CSOPError {
            switch self {
            case .unreachable(let message): CSOPError(.notConnected, message, retryable: true)
            case .cancelled: CSOPError(.timeout, "the cold-tier query was cancelled (timed out)", retryable: true)
            case .failed(let message): CSOPError(.executionFailed, message, retryable: true)
            }
        }
    }

    private struct State {
        var idle: [PostgresConnection] = []
        var running: [UInt64: [PostgresConnection]] = [:]
        var tableReady = false
        var nextConnectionID = 1
    }

    let table: String
    /// `host:port/database`, for messages (never the password).
    let endpoint: String
    private let url: PostgresURL
    private let configuration: PostgresConnection.Configuration
    private let state = Mutex(State())
    private let logger = Logger(label: "csop.storage.cold", factory: { _ in SwiftLogNoOpLogHandler() })
    private static let maxIdle = 4

    /// Parses the cold tier's URL, reading the TLS files it names (so `csop check` validates
    /// them too). - Throws: `INVALID_PAYLOAD` naming the config key (and the TLS option and file).
    static func parseURL(_ url: String) throws(CSOPError) -> PostgresURL {
        try PostgresURL(url, field: "config.postgresUrl (or CSOP_STORAGE_POSTGRES_URL)")
    }

    init(url: String, table: String) throws(CSOPError) {
        let url = try Self.parseURL(url)
        self.url = url
        self.configuration = url.connectionConfiguration()
        self.table = table
        self.endpoint = url.endpoint
    }

    /// Stores `bytes` as row `ref`, for the user's `key` of `tenant` (nil: the owner). Rows are
    /// read only by `ref`, which only the tenant's own index rows hold; `key` and `tenant` are
    /// there for repair and audits.
    func put(ref: String, key: String, tenant: String?, bytes: [UInt8], callID: UInt64) async throws(Failure) {
        try await withConnection(callID: callID) { connection in
            let value = ByteBuffer(bytes: bytes)
            _ = try await connection.queryUnlessClosed(
                "INSERT INTO \(unescaped: self.table) (ref, key, tenant, value) VALUES (\(ref), \(key), \(tenant), \(value))",
                logger: self.logger)
        }
    }

    /// Runs `SELECT 1`: whether the cold tier's database answers.
    func ping(callID: UInt64) async throws(Failure) {
        try await withConnection(callID: callID) { connection in
            _ = try await connection.queryUnlessClosed("SELECT 1", logger: self.logger)
        }
    }

    /// The bytes of row `ref`, or nil when it is gone.
    func get(ref: String, callID: UInt64) async throws(Failure) -> [UInt8]? {
        try await withConnection(callID: callID) { connection in
            let rows = try await connection.queryUnlessClosed("SELECT value FROM \(unescaped: self.table) WHERE ref = \(ref)", logger: self.logger)
            for try await row in rows {
                var buffer = try row.decode(ByteBuffer.self)
                return buffer.readBytes(length: buffer.readableBytes) ?? []
            }
            return nil
        }
    }

    /// Up to `limit` refs, in order after `cursor`, of rows made more than `olderThan` seconds
    /// ago (by the database's clock): the candidates of the orphan sweep.
    func refs(olderThan seconds: Double, after cursor: String, limit: Int, callID: UInt64) async throws(Failure) -> [String] {
        try await withConnection(callID: callID) { connection in
            let rows = try await connection.queryUnlessClosed(
                "SELECT ref FROM \(unescaped: self.table) WHERE created_at < now() - make_interval(secs => \(seconds)) AND ref > \(cursor) ORDER BY ref LIMIT \(limit)",
                logger: self.logger)
            var refs: [String] = []
            for try await row in rows { refs.append(try row.decode(String.self)) }
            return refs
        }
    }

    /// Moves the creation time of every row `seconds` into the past: for tests of the sweep.
    func backdateAll(seconds: Double) async throws(Failure) {
        try await withConnection(callID: 0) { connection in
            _ = try await connection.queryUnlessClosed(
                "UPDATE \(unescaped: self.table) SET created_at = created_at - make_interval(secs => \(seconds))", logger: self.logger)
        }
    }

    /// Deletes rows that the index no longer references.
    func delete(refs: [String], callID: UInt64) async throws(Failure) {
        guard !refs.isEmpty else { return }
        try await withConnection(callID: callID) { connection in
            _ = try await connection.queryUnlessClosed("DELETE FROM \(unescaped: self.table) WHERE ref = ANY(\(refs))", logger: self.logger)
        }
    }

    /// Every stored row for the user's `key` of `tenant` (nil: the owner), orphans included:
    /// for tests and repair.
    func rows(forKey key: String, tenant: String? = nil) async throws(Failure) -> [[UInt8]] {
        try await withConnection(callID: 0) { connection in
            let rows = try await connection.queryUnlessClosed(
                "SELECT value FROM \(unescaped: self.table) WHERE key = \(key) AND tenant IS NOT DISTINCT FROM \(tenant)", logger: self.logger)
            var values: [[UInt8]] = []
            for try await row in rows {
                var buffer = try row.decode(ByteBuffer.self)
                values.append(buffer.readBytes(length: buffer.readableBytes) ?? [])
            }
            return values
        }
    }

    /// Drops the cold table: for tests that made their own.
    func dropTable() async throws(Failure) {
        try await withConnection(callID: 0) { connection in
            _ = try await connection.queryUnlessClosed(PostgresQuery(unsafeSQL: "DROP TABLE IF EXISTS \(self.table)"), logger: self.logger)
        }
        state.withLock { $0.tableReady = false }
    }

    /// Stops the cold work of `callID` by closing its connection, which fails its query.
    func cancel(callID: UInt64) {
        let connections = state.withLock { $0.running[callID] ?? [] }
        for connection in connections { connection.closeInBackground() }
    }

    deinit { shutdown() }


    /// Closes idle connections.
    func shutdown() {
        let idle = state.withLock { state -> [PostgresConnection] in
            defer { state.idle.removeAll() }
            return state.idle
        }
        for connection in idle { connection.closeInBackground() }
    }

    private func withConnection<T: Sendable>(
        callID: UInt64, _ body: @Sendable (PostgresConnection) async throws -> T
    ) async throws(Failure) -> T {
        if Task.isCancelled { throw .cancelled }
        let connection = try await checkOut(callID: callID)
        do {
            try await ensureTable(connection)
            let result = try await body(connection)
            checkIn(connection, callID: callID, reuse: true)
            return result
        } catch {
            checkIn(connection, callID: callID, reuse: false)
            if Task.isCancelled || connection.isClosed { throw .cancelled }
            throw .failed("cold-tier query on \(endpoint) failed: \(PostgresURL.describe(error))")
        }
    }

    private func checkOut(callID: UInt64) async throws(Failure) -> PostgresConnection {
        let (pooled, id) = state.withLock { state -> (PostgresConnection?, Int) in
            state.nextConnectionID += 1
            return (state.idle.popLast(), state.nextConnectionID)
        }
        let connection: PostgresConnection
        if let pooled, !pooled.isClosed {
            connection = pooled
        } else {
            do {
                connection = try await PostgresConnection.connect(configuration: configuration, id: id, logger: logger)
            } catch {
                if Task.isCancelled { throw .cancelled }
                // A TLS failure says so, with the sslmode used: retrying will not fix a wrong CA.
                throw .unreachable("the cold tier (PostgreSQL at \(endpoint)) is unreachable: \(url.describe(connectionError: error))")
            }
        }
        state.withLock { $0.running[callID, default: []].append(connection) }
        return connection
    }

    private func checkIn(_ connection: PostgresConnection, callID: UInt64, reuse: Bool) {
        let keep = state.withLock { state -> Bool in
            state.running[callID]?.removeAll { $0 === connection }
            if state.running[callID]?.isEmpty == true { state.running[callID] = nil }
            guard reuse, !connection.isClosed, state.idle.count < Self.maxIdle else { return false }
            state.idle.append(connection)
            return true
        }
        if !keep { connection.closeInBackground() }
    }

    private func ensureTable(_ connection: PostgresConnection) async throws {
        if state.withLock({ $0.tableReady }) { return }
        // `tenant` (NULL for the owner) came after the first release: a table made before it gains the column.
        let sql = """
            CREATE TABLE IF NOT EXISTS \(table) (
                ref TEXT PRIMARY KEY, key TEXT NOT NULL, value BYTEA NOT NULL,
                created_at TIMESTAMPTZ NOT NULL DEFAULT now(), tenant TEXT)
            """
        do {
            try await connection.queryUnlessClosed(PostgresQuery(unsafeSQL: sql), logger: logger)
        } catch {
            // Two first uses at once can race on the catalog; the loser finds the table there.
            try await connection.queryUnlessClosed(PostgresQuery(unsafeSQL: "SELECT 1 FROM \(table) LIMIT 0"), logger: logger)
        }
        do {
            try await connection.queryUnlessClosed(
                PostgresQuery(unsafeSQL: "ALTER TABLE \(table) ADD COLUMN IF NOT EXISTS tenant TEXT"), logger: logger)
        } catch {
            // Two first uses at once can race here too; the loser finds the column there.
            try await connection.queryUnlessClosed(PostgresQuery(unsafeSQL: "SELECT tenant FROM \(table) LIMIT 0"), logger: logger)
        }
        state.withLock { $0.tableReady = true }
    }
}
