import CSOPCore
import CSOPHost
import CSQLite
import Foundation

/// Streamed storage values: a 1 GiB save and read through the Swift API
/// (``CSOPHost/saveStream(_:from:ttl:ifVersion:caller:timeout:)``, ``CSOPHost/readStream(_:caller:timeout:)``:
/// `storage.upload`/`append`/`commit` and `storage.read` in 1 MiB pieces), against the same
/// bytes written and read as 1 MiB blobs straight on the SQLite C API in the same run, and
/// the resident memory the save and read add (peak RSS over the RSS before, this process).
struct StreamBench: BenchSuite {
    let name = "streams"

    func run(_ context: BenchContext) async throws -> [BenchRow] {
        let host = try await context.makeHost([
            (library: "libcsop-storage.so", config: ["path": .string("\(context.workDirectory)/streams.sqlite"), "purgeInterval": 200])
        ])
        let mebibytes = context.quick ? 64 : 1024
        let chunk = CSOPHost.streamChunkBytes
        let size = Double(mebibytes * chunk)
        var piece = [UInt8](repeating: 0, count: chunk)
        for i in piece.indices { piece[i] = UInt8(truncatingIfNeeded: i &* 2_654_435_761 >> 7) }
        let source = piece

        let before = ResidentMemory.resetPeak()
        let saveStart = DispatchTime.now().uptimeNanoseconds
        _ = try await host.saveStream("bench:stream", from: Pieces(piece: source, count: mebibytes))
        let saveSeconds = Double(DispatchTime.now().uptimeNanoseconds - saveStart) / 1e9
        let readStart = DispatchTime.now().uptimeNanoseconds
        var read = 0
        for try await slice in host.readStream("bench:stream") { read += slice.count }
        let readSeconds = Double(DispatchTime.now().uptimeNanoseconds - readStart) / 1e9
        let growth = Double(max(0, ResidentMemory.peak() - before)) / 1_048_576
        guard read == mebibytes * chunk else { throw BenchError(message: "the streamed value read back \(read) bytes, not \(mebibytes * chunk)") }
        _ = await host.dispatch("storage.delete", ["key": "bench:stream"])
        await host.shutdown()

        let raw = try RawChunks(path: "\(context.workDirectory)/raw-chunks.sqlite")
        let rawSaveStart = DispatchTime.now().uptimeNanoseconds
        try raw.write(source, count: mebibytes)
        let rawSaveSeconds = Double(DispatchTime.now().uptimeNanoseconds - rawSaveStart) / 1e9
        let rawReadStart = DispatchTime.now().uptimeNanoseconds
        let rawRead = try raw.readAll()
        let rawReadSeconds = Double(DispatchTime.now().uptimeNanoseconds - rawReadStart) / 1e9
        guard rawRead == mebibytes * chunk else { throw BenchError(message: "raw SQLite read back \(rawRead) bytes") }

        let label = context.quick ? "64 MiB" : "1 GiB"
        func rate(_ seconds: Double) -> BenchValue { BenchValue(amount: size / 1_048_576 / seconds, unit: "MiB/s") }
        return [
            BenchRow(
                suite: name, name: "stream save \(label) (Swift API, 1 MiB appends)", baseline: "raw SQLite, 1 MiB blobs, a transaction each",
                value: rate(saveSeconds), baselineValue: rate(rawSaveSeconds), note: "higher is better"),
            BenchRow(
                suite: name, name: "stream read \(label) (Swift API, 1 MiB slices)", baseline: "raw SQLite SELECT of the 1 MiB blobs",
                value: rate(readSeconds), baselineValue: rate(rawReadSeconds), note: "higher is better"),
            BenchRow(
                suite: name, name: "RSS growth over a \(label) save and read", value: BenchValue(amount: growth, unit: "MiB"),
                targets: [.maxValue(64, unit: "MiB")], note: "peak RSS during the save and the read, minus RSS before"),
        ]
    }
}

/// `count` copies of `piece`, one at a time.
private struct Pieces: AsyncSequence, Sendable {
    typealias Element = [UInt8]
    let piece: [UInt8]
    let count: Int

    func makeAsyncIterator() -> Iterator { Iterator(piece: piece, left: count) }

    struct Iterator: AsyncIteratorProtocol {
        let piece: [UInt8]
        var left: Int
        mutating func next() async -> [UInt8]? {
            guard left > 0 else { return nil }
            left -= 1
            return piece
        }
    }
}

/// The baseline: 1 MiB blobs in a table, one transaction each, then read back in order.
private final class RawChunks {
    private let db: OpaquePointer

    init(path: String) throws {
        var handle: OpaquePointer?
        guard sqlite3_open_v2(path, &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil) == SQLITE_OK, let handle else {
            throw BenchError(message: "cannot open \(path)")
        }
        db = handle
        for sql in [
            "PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL",
            "CREATE TABLE IF NOT EXISTS chunks (stream TEXT NOT NULL, offset INTEGER NOT NULL, bytes BLOB NOT NULL)",
            "CREATE UNIQUE INDEX IF NOT EXISTS chunks_at ON chunks (stream, offset)",
        ] where sqlite3_exec(db, sql, nil, nil, nil) != SQLITE_OK {
            throw BenchError(message: "raw SQLite setup failed: \(String(cString: sqlite3_errmsg(db)))")
        }
    }

    deinit { sqlite3_close_v2(db) }

    func write(_ piece: [UInt8], count: Int) throws {
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(db, "INSERT INTO chunks (stream, offset, bytes) VALUES ('s', ?1, ?2)", -1, &statement, nil) == SQLITE_OK else {
            throw BenchError(message: "raw prepare failed")
        }
        defer { sqlite3_finalize(statement) }
        for i in 0..<count {
            sqlite3_exec(db, "BEGIN IMMEDIATE", nil, nil, nil)
            sqlite3_bind_int64(statement, 1, Int64(i * piece.count))
            piece.withUnsafeBytes { _ = sqlite3_bind_blob64(statement, 2, $0.baseAddress, sqlite3_uint64($0.count), csop_sqlite_transient()) }
            guard sqlite3_step(statement) == SQLITE_DONE else { throw BenchError(message: "raw insert failed") }
            sqlite3_reset(statement)
            sqlite3_exec(db, "COMMIT", nil, nil, nil)
        }
    }

    func readAll() throws -> Int {
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(db, "SELECT bytes FROM chunks WHERE stream = 's' AND offset >= ?1 ORDER BY offset LIMIT 1", -1, &statement, nil) == SQLITE_OK
        else { throw BenchError(message: "raw prepare failed") }
        defer { sqlite3_finalize(statement) }
        var total = 0
        while true {
            sqlite3_bind_int64(statement, 1, Int64(total))
            guard sqlite3_step(statement) == SQLITE_ROW else { break }
            let count = Int(sqlite3_column_bytes(statement, 0))
            if let pointer = sqlite3_column_blob(statement, 0) { total += Array(UnsafeRawBufferPointer(start: pointer, count: count)).count }
            sqlite3_reset(statement)
        }
        return total
    }
}
