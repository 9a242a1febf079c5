import CSQLite
import Glibc
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
    /// How long the running work may wait for another connection's lock, in milliseconds: 0
    /// fails at once with SQLITE_BUSY (work on a caller's thread, which must never block).
    let busyWaitMilliseconds = Atomic<Int>(0)
    /// Set by ``interrupt(callID:)``: the busy handler stops waiting. Cleared by ``begin(callID:waitMilliseconds:)``.
    private let interrupted = Atomic<Bool>(false)

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
        busyWaitMilliseconds.store(Int(busyTimeoutMilliseconds), ordering: .relaxed)
        // Unretained: the handler lives as long as the handle, which this object closes in deinit.
        sqlite3_busy_handler(db, sqliteBusyHandler, Unmanaged.passUnretained(self).toOpaque())
    }

    /// Marks the start of `callID`'s work on this connection and how long it may wait for a lock.
    func begin(callID: UInt64, waitMilliseconds: Int) {
        interrupted.store(false, ordering: .relaxed)
        busyWaitMilliseconds.store(waitMilliseconds, ordering: .relaxed)
        runningCallID.store(callID, ordering: .releasing)
    }

    /// Marks the end of the running call's work.
    func end() {
        runningCallID.store(0, ordering: .releasing)
    }

    /// The busy handler's decision: wait a little more (true) or give up with SQLITE_BUSY.
    /// It waits in short slices, so an interrupt ends the wait within a few milliseconds.
    fileprivate func waitWhenBusy(attempt: Int32) -> Bool {
        let budget = busyWaitMilliseconds.load(ordering: .relaxed)
        guard budget > 0, !interrupted.load(ordering: .acquiring) else { return false }
        // 1, 2, 4, then 5 ms slices: the total waited so far is about 5 × attempt.
        let slice = attempt < 3 ? 1 << attempt : 5
        let waited = attempt < 3 ? (1 << attempt) - 1 : 7 + 5 * (Int(attempt) - 3)
        guard waited < budget else { return false }
        usleep(UInt32(slice) * 1000)
        return !interrupted.load(ordering: .acquiring)
    }

    deinit {
        statements.removeAll()
        sqlite3_close_v2(handle)
    }

    var lastErrorMessage: String { String(cString: sqlite3_errmsg(handle)) }

    /// Rows the last INSERT, UPDATE or DELETE on this connection changed.
    var changes: Int32 { sqlite3_changes(handle) }

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

    /// Interrupts the running statement, or its wait for a lock, if it belongs to `callID`.
    func interrupt(callID: UInt64) -> Bool {
        guard callID != 0, runningCallID.load(ordering: .acquiring) == callID else { return false }
        interrupted.store(true, ordering: .releasing)
        sqlite3_interrupt(handle)
        return true
    }

    var isAutocommit: Bool { sqlite3_get_autocommit(handle) != 0 }
}

/// SQLite's busy handler for every connection: asks the connection whether to keep waiting.
private func sqliteBusyHandler(context: UnsafeMutableRawPointer?, attempt: Int32) -> Int32 {
    guard let context else { return 0 }
    return Unmanaged<SQLiteConnection>.fromOpaque(context).takeUnretainedValue().waitWhenBusy(attempt: attempt) ? 1 : 0
}
