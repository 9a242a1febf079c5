import CSOPCore
import CSOPHost
import CSQLite
import Foundation

/// Storage rows: the plugin through in-process dispatch against the same work done straight
/// on the SQLite C API (WAL, synchronous=NORMAL, prepared statements) in the same run.
struct StorageBench: BenchSuite {
    let name = "storage"

    func run(_ context: BenchContext) async throws -> [BenchRow] {
        let postgresURL = ProcessInfo.processInfo.environment["CSOP_STORAGE_POSTGRES_URL"]
            ?? ProcessInfo.processInfo.environment["CSOP_TEST_POSTGRES_URL"] ?? "postgres://csop:csop@127.0.0.1:5432/csop_test"
        let table = "csop_bench_cold_\(UInt32.random(in: 0 ... .max))"
        let host = try await context.makeHost([
            (library: "libcsop-storage.so", config: [
                "path": .string("\(context.workDirectory)/storage.sqlite"), "postgresUrl": .string(postgresURL),
                "postgresTable": .string(table),
            ])
        ])
        let raw = try RawSQLite(path: "\(context.workDirectory)/raw.sqlite")
        let value = String(repeating: "x", count: 1022)  // 1,024 bytes of JSON
        let valueBytes = Array(JSONValue.string(value).serialized())
        let keys = (0..<1000).map { String(format: "bench:%04d", $0) }
        let iterations = context.iterations(20_000)
        var rows: [BenchRow] = []

        let saves = keys.map { Request(id: "s", action: "storage.save", payload: ["key": .string($0), "data": .string(value)]) }
        var i = 0
        let save = await context.measure(iterations: iterations, warmup: 1000) {
            i += 1
            _ = await host.dispatch(saves[i % saves.count])
        }
        i = 0
        let rawSave = try context.measure(iterations: iterations, warmup: 1000) {
            i += 1
            try raw.insert(keys[i % keys.count], valueBytes)
        }
        rows.append(
            BenchRow(
                suite: name, name: "save 1 KB", stats: save, baseline: "raw SQLite INSERT OR REPLACE", baselineStats: rawSave,
                targets: [.maxP50(microseconds: 25), .maxRatio(2)]))

        let gets = keys.map { Request(id: "g", action: "storage.get", payload: ["key": .string($0)]) }
        i = 0
        let get = await context.measure(iterations: iterations, warmup: 1000) {
            i += 1
            _ = await host.dispatch(gets[i % gets.count])
        }
        i = 0
        let rawGet = try context.measure(iterations: iterations, warmup: 1000) {
            i += 1
            _ = try raw.select(keys[i % keys.count])
        }
        rows.append(
            BenchRow(
                suite: name, name: "get 1 KB", stats: get, baseline: "raw SQLite SELECT", baselineStats: rawGet,
                targets: [.maxP50(microseconds: 10), .maxRatio(2)]))

        let listRequest = Request(id: "l", action: "storage.list", payload: ["prefix": "bench:", "limit": 1000])
        let list = await context.measure(iterations: context.iterations(2000), warmup: 50) {
            _ = await host.dispatch(listRequest)
        }
        let rawList = try context.measure(iterations: context.iterations(2000), warmup: 50) { _ = try raw.listKeys(limit: 1000) }
        rows.append(
            BenchRow(suite: name, name: "list 1,000 keys", stats: list, baseline: "raw SQLite SELECT key … LIMIT 1000", baselineStats: rawList))

        var batch = 0
        let many = await context.measure(iterations: context.iterations(200), warmup: 5) {
            batch += 1
            let items = JSONValue.array(keys.map { ["key": .string("many\(batch % 3):\($0)"), "data": .string(value)] })
            _ = await host.dispatch(Request(id: "m", action: "storage.saveMany", payload: ["items": items]))
        }
        batch = 0
        let rawMany = try context.measure(iterations: context.iterations(200), warmup: 5) {
            batch += 1
            try raw.insertMany(keys.map { "many\(batch % 3):\($0)" }, valueBytes)
        }
        rows.append(
            BenchRow(
                suite: name, name: "saveMany 1,000 × 1 KB (incl. building the request)", stats: many,
                baseline: "raw SQLite, 1,000 inserts in one transaction", baselineStats: rawMany))

        let big = String(repeating: "c", count: 10 * 1024 * 1024)
        let bigBytes = Array(JSONValue.string(big).serialized())
        let bigSave = Request(id: "b", action: "storage.save", payload: ["key": "big", "data": .string(big)])
        let first = await host.dispatch(bigSave)
        if first.data?["location"]?.stringValue == "cloud" {
            let coldSave = await context.measure(iterations: context.iterations(40), warmup: 2) { _ = await host.dispatch(bigSave) }
            let coldGet = await context.measure(iterations: context.iterations(40), warmup: 2) {
                _ = await host.dispatch(Request(id: "bg", action: "storage.get", payload: ["key": "big"]))
            }
            let rawBigSave = try context.measure(iterations: context.iterations(40), warmup: 2) { try raw.insert("big", bigBytes) }
            let rawBigGet = try context.measure(iterations: context.iterations(40), warmup: 2) { _ = try raw.select("big") }
            rows.append(
                BenchRow(suite: name, name: "save 10 MB (cold tier)", stats: coldSave, baseline: "raw SQLite insert of 10 MB", baselineStats: rawBigSave))
            rows.append(
                BenchRow(suite: name, name: "get 10 MB (cold tier)", stats: coldGet, baseline: "raw SQLite select of 10 MB", baselineStats: rawBigGet))
            _ = await host.dispatch(Request(id: "d", action: "storage.delete", payload: ["key": "big"]))
        } else {
            rows.append(BenchRow(suite: name, name: "save/get 10 MB (cold tier)", note: "skipped: PostgreSQL at the configured URL is unreachable"))
        }
        await host.shutdown()
        return rows
    }
}

/// The baseline: the same work straight on the SQLite C API.
private final class RawSQLite {
    private let db: OpaquePointer
    private let insertStatement: OpaquePointer
    private let selectStatement: OpaquePointer
    private let listStatement: OpaquePointer

    init(path: String) throws {
        var handle: OpaquePointer?
        guard sqlite3_open_v2(path, &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil) == SQLITE_OK,
            let handle
        else { throw BenchError(message: "cannot open \(path)") }
        db = handle
        for sql in [
            "PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL",
            "CREATE TABLE IF NOT EXISTS kv (key TEXT NOT NULL PRIMARY KEY, value BLOB)",
        ] where sqlite3_exec(db, sql, nil, nil, nil) != SQLITE_OK {
            throw BenchError(message: "raw SQLite setup failed: \(String(cString: sqlite3_errmsg(db)))")
        }
        func prepare(_ sql: String) throws -> OpaquePointer {
            var statement: OpaquePointer?
            guard sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil) == SQLITE_OK, let statement else {
                throw BenchError(message: "raw SQLite prepare failed: \(String(cString: sqlite3_errmsg(handle)))")
            }
            return statement
        }
        insertStatement = try prepare("INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)")
        selectStatement = try prepare("SELECT value FROM kv WHERE key = ?1")
        listStatement = try prepare("SELECT key FROM kv WHERE key >= 'bench:' AND key < 'bench;' ORDER BY key LIMIT ?1")
    }

    deinit {
        sqlite3_finalize(insertStatement)
        sqlite3_finalize(selectStatement)
        sqlite3_finalize(listStatement)
        sqlite3_close_v2(db)
    }

    func insert(_ key: String, _ value: [UInt8]) throws {
        sqlite3_bind_text(insertStatement, 1, key, -1, csop_sqlite_transient())
        value.withUnsafeBytes { _ = sqlite3_bind_blob64(insertStatement, 2, $0.baseAddress, sqlite3_uint64($0.count), csop_sqlite_transient()) }
        defer { sqlite3_reset(insertStatement) }
        guard sqlite3_step(insertStatement) == SQLITE_DONE else { throw BenchError(message: "raw insert failed") }
    }

    func insertMany(_ keys: [String], _ value: [UInt8]) throws {
        sqlite3_exec(db, "BEGIN IMMEDIATE", nil, nil, nil)
        for key in keys { try insert(key, value) }
        sqlite3_exec(db, "COMMIT", nil, nil, nil)
    }

    func select(_ key: String) throws -> [UInt8] {
        sqlite3_bind_text(selectStatement, 1, key, -1, csop_sqlite_transient())
        defer { sqlite3_reset(selectStatement) }
        guard sqlite3_step(selectStatement) == SQLITE_ROW else { throw BenchError(message: "raw select found nothing") }
        let count = Int(sqlite3_column_bytes(selectStatement, 0))
        guard let pointer = sqlite3_column_blob(selectStatement, 0) else { return [] }
        return Array(UnsafeRawBufferPointer(start: pointer, count: count))
    }

    func listKeys(limit: Int) throws -> [String] {
        sqlite3_bind_int64(listStatement, 1, Int64(limit))
        defer { sqlite3_reset(listStatement) }
        var keys: [String] = []
        while sqlite3_step(listStatement) == SQLITE_ROW { keys.append(String(cString: sqlite3_column_text(listStatement, 0))) }
        return keys
    }
}
