import CSQLite
import Synchronization

/// One `sqlite3*` handle with its prepared statements. Not thread-safe: whoever checked the
/// connection out (the writer lock or the read pool) is its only user. Only ``interrupt(callID:)``
/// and ``runningCallID`` may be touched from other threads.
final class SQLiteConnection: @unchecked Sendable {  // Used by one thread at a time; see above.
    let handle: OpaquePointer
    let path: String
    private var statements: [SQLiteStatement?]
    /// The call whose work runs on this connection now (0 when idle), for cancellation.
    let runningCallID = Atomic<UInt64>(0)

    /// Opens (and with `create`, creates) the database at `path`.
    init(path: String, readOnly: Bool, create: Bool, busyTimeoutMilliseconds: Int32) throws(SQLiteError) {
        var flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI
        flags |= readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE
        if create && !readOnly { flags |= SQLITE_OPEN_CREATE }
        var db: OpaquePointer?
        let code = sqlite3_open_v2(path, &db, flags, nil)
        guard code == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(code))
            sqlite3_close_v2(db)
            throw SQLiteError(code: code, message: message, path: path)
        }
        self.handle = db
        self.path = path
        self.statements = Array(repeating: nil, count: StorageSQL.allCases.count)
        sqlite3_extended_result_codes(db, 1)
        sqlite3_busy_timeout(db, busyTimeoutMilliseconds)
    }

    deinit {
        statements.removeAll()
        sqlite3_close_v2(handle)
    }

    var lastErrorMessage: String { String(cString: sqlite3_errmsg(handle)) }

    /// Runs SQL text with no parameters (pragmas, DDL, transaction control).
    func execute(_ sql: String) throws(SQLiteError) {
        var message: UnsafeMutablePointer<CChar>?
        let code = sqlite3_exec(handle, sql, nil, nil, &message)
        if code != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? lastErrorMessage
            sqlite3_free(message)
            throw SQLiteError(code: code, message: text, path: path)
        }
    }

    /// The first column of the first row of `sql` as text (for pragmas), nil when no row.
    func scalarText(_ sql: String) throws(SQLiteError) -> String? {
        let statement = try SQLiteStatement(connection: self, sql: sql)
        return try statement.step() ? statement.text(0) : nil
    }

    /// The cached prepared statement for `query`, prepared on first use.
    func statement(_ query: StorageSQL) throws(SQLiteError) -> SQLiteStatement {
        if let statement = statements[query.rawValue] { return statement }
        let statement = try SQLiteStatement(connection: self, sql: query.sql)
        statements[query.rawValue] = statement
        return statement
    }

    /// Interrupts the running statement if it belongs to `callID`.
    func interrupt(callID: UInt64) -> Bool {
        guard callID != 0, runningCallID.load(ordering: .acquiring) == callID else { return false }
        sqlite3_interrupt(handle)
        return true
    }

    var isAutocommit: Bool { sqlite3_get_autocommit(handle) != 0 }
}
