import CSQLite

/// A failed SQLite call: the primary result code, SQLite's message and the database path.
struct SQLiteError: Error, CustomStringConvertible {
    var code: Int32
    var message: String
    var path: String

    var primaryCode: Int32 { code & 0xFF }
    var isInterrupt: Bool { primaryCode == SQLITE_INTERRUPT }
    var isBusy: Bool { primaryCode == SQLITE_BUSY || primaryCode == SQLITE_LOCKED }
    var isFull: Bool { primaryCode == SQLITE_FULL }
    var isCorrupt: Bool { primaryCode == SQLITE_CORRUPT || primaryCode == SQLITE_NOTADB }

    var description: String { "SQLite error \(code) on \(path): \(message)" }
}
