import CSOPCore
import CSQLite
import Glibc
import Synchronization

/// The hot tier and the key index of both tiers: one SQLite file in WAL mode. Writes go
/// through one connection under a lock; reads check a connection out of a small pool, so
/// they run concurrently with each other and with the writer.
///
/// Every write is one transaction (BEGIN IMMEDIATE … COMMIT) whose commit asks first
/// (`commit`), so a write the host already answered as timed out is rolled back, never
/// committed. A write with ``Waiting/never`` (on a caller's thread) never waits, for the
/// writer lock or for another process's database lock: it answers ``WriteAttempt/wouldBlock``
/// and the caller runs it again, waiting, on a thread of its own.
final class LocalStore: Sendable {
    /// How long a write may wait for the database.
    enum Waiting: Sendable, Equatable {
        /// Not at all: on a caller's thread, which other capabilities and the router need.
        case never
        /// For the writer lock, and up to this many milliseconds for another connection's
        /// database lock (an interrupt ends the wait at once).
        case upTo(milliseconds: Int)

        var milliseconds: Int {
            switch self {
            case .never: 0
            case .upTo(let milliseconds): milliseconds
            }
        }
    }

    /// A write's outcome when it may not wait.
    enum WriteAttempt<T: Sendable>: Sendable {
        case done(T)
        /// The writer or the database was busy; nothing was written.
        case wouldBlock

        /// The result of a write that was allowed to wait (``Waiting/upTo(milliseconds:)``),
        /// which never answers `wouldBlock`.
        func waited() throws(CSOPError) -> T {
            guard case .done(let value) = self else { throw CSOPError(.saveFailed, "the storage database stayed busy; retry", retryable: true) }
            return value
        }
    }

    /// How long a read waits for another connection's lock (rare in WAL mode: recovery).
    static let readBusyWaitMilliseconds = 5000

    /// Where a key's value is: in its index row, in the cold tier, or in chunks (a streamed value).
    enum Tier: Int64, Sendable { case local = 0, cloud = 1, stream = 2 }

    /// One key's row as a reader sees it.
    struct Row: Sendable {
        var tier: Tier
        var flags: Int64
        var bytes: [UInt8]
        var coldRef: String?
        /// The id of the encryption key of an encrypted value (nil: `default`).
        var keyId: String?

        /// The row in `statement`'s columns `tier, flags, value, cold_ref, key_id` from `first`.
        init(_ statement: SQLiteStatement, from first: Int32) {
            tier = Tier(rawValue: statement.int64(first)) ?? .local
            flags = statement.int64(first + 1)
            bytes = tier == .local ? statement.blob(first + 2) : []
            coldRef = statement.isNull(first + 3) ? nil : statement.text(first + 3)
            keyId = statement.isNull(first + 4) ? nil : statement.text(first + 4)
        }
    }

    /// One key to write in a batch.
    struct Write: Sendable {
        var key: String
        var tier: Tier
        /// JSON bytes of the value.
        var size: Int64
        /// Bytes stored in the tier (after compression and encryption).
        var storedSize: Int64
        var flags: Int64
        /// The stored bytes for a local value.
        var bytes: [UInt8]
        /// The cold-table row for a cloud value.
        var coldRef: String?
        var ifVersion: Int64?
        /// When the key expires, in milliseconds since the Unix epoch; nil for never.
        var expires: Int64?
        /// The id of the encryption key, for an encrypted value.
        var keyId: String?
    }

    struct WriteResult: Sendable {
        var versions: [Int64]
        /// Cold rows no longer referenced: delete them after the commit.
        var obsoleteColdRefs: [String]
    }

    struct TierStats: Sendable {
        var count: Int64 = 0
        var bytes: Int64 = 0
        var storedBytes: Int64 = 0
    }

    struct WriterState {
        let connection: SQLiteConnection
        /// Sum of `size` over the keys of each namespace (by its ``StorageNamespace/prefix``),
        /// tracked only with a quota, for the namespaces written since another connection last
        /// committed; a namespace missing is counted again when it is written.
        var totalBytes: [[UInt8]: Int64] = [:]
        var dataVersion: Int64 = -1
    }

    /// The most namespaces whose totals the writer keeps; past it they are counted again.
    private static let maxTrackedNamespaces = 4096

    private struct ReaderPool {
        var idle: [SQLiteConnection] = []
        var busy: [ObjectIdentifier: SQLiteConnection] = [:]
    }

    let path: String
    let maxBytes: Int64?
    private let poolSize: Int
    private let writer: Mutex<WriterState>
    private let writerConnection: SQLiteConnection
    private let readers = Mutex(ReaderPool())
    private let earlyCancels = Mutex<[UInt64]>([])
    /// This store's id: 16 lowercase hex digits, made with the file and kept in it.
    let storeID: String

    /// Opens or creates the database and checks that it is a readable storage file.
    /// - Throws: `EXECUTION_FAILED` naming `path` for a file that is not a usable database.
    init(configuration: StorageConfiguration) throws(CSOPError) {
        path = configuration.path
        maxBytes = configuration.maxBytes
        poolSize = configuration.readConnections
        try Self.createParentDirectory(of: path)
        let connection: SQLiteConnection
        var id = ""
        do throws(SQLiteError) {
            connection = try SQLiteConnection(path: path, readOnly: false, create: true, busyTimeoutMilliseconds: 5000)
            // Reading the schema makes a garbage file fail here, not at the first save.
            _ = try connection.scalarText("SELECT count(*) FROM sqlite_schema")
            let mode = try connection.scalarText("PRAGMA journal_mode = WAL")
            guard mode?.lowercased() == "wal" else {
                throw SQLiteError(code: SQLITE_ERROR, message: "could not switch to WAL (journal_mode is \(mode ?? "unknown"))", path: path)
            }
            try connection.execute("PRAGMA synchronous = \(configuration.synchronous.rawValue)")
            try Self.migrate(connection)
            try connection.execute(StorageSQL.schema)
            // The store's identity, shared by every process that opens this file (the change feed's channel).
            if try connection.scalarText("SELECT value FROM csop_storage_meta WHERE name = 'store_id'") == nil {
                try connection.execute("INSERT OR IGNORE INTO csop_storage_meta (name, value) VALUES ('store_id', lower(hex(randomblob(8))))")
            }
            id = try connection.scalarText("SELECT value FROM csop_storage_meta WHERE name = 'store_id'") ?? ""
            if let check = try connection.scalarText("PRAGMA quick_check(1)"), check != "ok" {
                throw SQLiteError(code: SQLITE_CORRUPT, message: "integrity check failed: \(check)", path: path)
            }
            for query in StorageSQL.allCases { _ = try connection.statement(query) }
        } catch {
            throw .executionFailed("cannot open the storage database at \(path): \(error.message). Fix or remove the file, or set config.path")
        }
        storeID = id
        writerConnection = connection
        writer = Mutex(WriterState(connection: connection))
        // Open the read pool now so a bad file fails at init.
        var pool = ReaderPool()
        for _ in 0..<min(poolSize, 2) { pool.idle.append(try openReader()) }
        readers.withLock { $0 = pool }
    }

    /// Adds the columns of ``StorageSQL/addedColumns`` a file made by an earlier version lacks,
    /// in one transaction (looking again inside it), so two processes opening the file at once
    /// do not both add them. A file that needs nothing takes no write lock.
    private static func migrate(_ connection: SQLiteConnection) throws(SQLiteError) {
        func missing() throws(SQLiteError) -> [StorageSQL.AddedColumn] {
            var result: [StorageSQL.AddedColumn] = []
            for column in StorageSQL.addedColumns {
                let table = try connection.scalarText("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '\(column.table)'")
                guard table == "1" else { continue }
                let count = try connection.scalarText("SELECT count(*) FROM pragma_table_info('\(column.table)') WHERE name = '\(column.name)'")
                if count == "0" { result.append(column) }
            }
            return result
        }
        guard !(try missing()).isEmpty else { return }
        try connection.execute("BEGIN IMMEDIATE")
        do throws(SQLiteError) {
            for column in try missing() {
                try connection.execute("ALTER TABLE \(column.table) ADD COLUMN \(column.name) \(column.type)")
                if let fill = column.fill { try connection.execute(fill) }
            }
            try connection.execute("COMMIT")
        } catch {
            try? connection.execute("ROLLBACK")
            throw error
        }
    }

    // MARK: Reads

    /// The row for `key`, or nil when it does not exist or has expired.
    func read(_ key: String, callID: UInt64) throws(CSOPError) -> Row? {
        try withReader(callID: callID) { connection throws(SQLiteError) in
            let statement = try connection.statement(.read)
            defer { statement.reset() }
            statement.bind(1, key)
            guard try statement.step() else { return nil }
            if !statement.isNull(5), statement.int64(5) <= WallClock.milliseconds() { return nil }
            return Row(statement, from: 0)
        }
    }

    /// Up to `limit` stored keys in `range` (``StorageNamespace/range(startingWith:)``) after
    /// `cursor` (a stored key, exclusive), in byte order.
    func list(range: (lower: [UInt8], upper: [UInt8]), after cursor: String?, limit: Int64, callID: UInt64) throws(CSOPError) -> [String] {
        try withReader(callID: callID) { connection throws(SQLiteError) in
            let now = WallClock.milliseconds()
            let live = try Self.anyExpired(now, connection)
            let statement = try connection.statement(live ? .listRangeLive : .listRange)
            statement.bind(1, cursor ?? "")
            statement.bindTextBytes(2, range.lower)
            statement.bindTextBytes(3, range.upper)
            statement.bind(4, limit)
            if live { statement.bind(5, now) }
            defer { statement.reset() }
            var keys: [String] = []
            keys.reserveCapacity(Int(min(limit, 1024)))
            while try statement.step() { keys.append(statement.text(0)) }
            return keys
        }
    }

    /// Whether some key has expired at `now` and is not purged yet.
    private static func anyExpired(_ now: Int64, _ connection: SQLiteConnection) throws(SQLiteError) -> Bool {
        let statement = try connection.statement(.anyExpired)
        defer { statement.reset() }
        statement.bind(1, now)
        return try statement.step()
    }

    /// Which of `refs` (cold-tier row refs) an index row references, in any namespace.
    func referencedColdRefs(_ refs: [String], callID: UInt64) throws(CSOPError) -> Set<String> {
        let list = JSONValue.array(refs.map { .string($0) }).serialized()
        return try withReader(callID: callID) { connection throws(SQLiteError) in
            let statement = try connection.statement(.referencedColdRefs)
            statement.bindTextBytes(1, list)
            defer { statement.reset() }
            var found: Set<String> = []
            while try statement.step() { found.insert(statement.text(0)) }
            return found
        }
    }

    /// Key counts and bytes of each tier.
    struct Stats: Sendable {
        var local = TierStats()
        var cloud = TierStats()
        var stream = TierStats()
    }

    /// Key counts and bytes per tier, of the stored keys in `range` (one namespace).
    func stats(range: (lower: [UInt8], upper: [UInt8]), callID: UInt64) throws(CSOPError) -> Stats {
        try withReader(callID: callID) { connection throws(SQLiteError) in
            let statement = try connection.statement(.stats)
            statement.bindTextBytes(1, range.lower)
            statement.bindTextBytes(2, range.upper)
            statement.bind(3, WallClock.milliseconds())
            defer { statement.reset() }
            var result = Stats()
            while try statement.step() {
                let stats = TierStats(count: statement.int64(1), bytes: statement.int64(2), storedBytes: statement.int64(3))
                switch Tier(rawValue: statement.int64(0)) {
                case .cloud: result.cloud = stats
                case .stream: result.stream = stats
                default: result.local = stats
                }
            }
            return result
        }
    }

    /// The smallest byte string greater than every string starting with `prefix`.
    static func prefixUpperBound(_ prefix: String) -> [UInt8]? { prefixUpperBound(Array(prefix.utf8)) }

    /// The smallest byte string greater than every string starting with `prefix`.
    static func prefixUpperBound(_ prefix: [UInt8]) -> [UInt8]? {
        var bytes = prefix
        while let last = bytes.last {
            if last < 0xFF {
                bytes[bytes.count - 1] = last + 1
                return bytes
            }
            bytes.removeLast()
        }
        return nil
    }

    // MARK: Writes

    /// Saves a local value with one statement when nothing needs checking first. `.done(nil)`
    /// when the key is in the cold tier (use ``write(_:callID:waiting:commit:)`` to move it).
    func fastSaveLocal(
        key: String, size: Int64, bytes: [UInt8], flags: Int64, expires: Int64?, keyId: String?, callID: UInt64, waiting: Waiting,
        commit: () -> Bool
    ) throws(CSOPError) -> WriteAttempt<Int64?> {
        guard maxBytes == nil else { return .done(nil) }
        return try transaction(callID: callID, waiting: waiting, commit: commit) { state throws(CSOPError) -> Int64? in
            try Self.sqlite { () throws(SQLiteError) -> Int64? in
                let statement = try state.connection.statement(.fastSaveLocal)
                defer { statement.reset() }
                statement.bind(1, key)
                statement.bind(2, size)
                statement.bind(3, Int64(bytes.count))
                statement.bind(4, flags)
                statement.bind(blob: bytes, index: 5)
                if let expires { statement.bind(6, expires) } else { statement.bindNull(6) }
                if let keyId { statement.bind(7, keyId) } else { statement.bindNull(7) }
                guard try statement.step() else { return nil }
                let version = statement.int64(0)
                _ = try statement.step()
                return version
            }
        }
    }

    /// Writes every item in one transaction: all or nothing. With `maxBytes`, each namespace
    /// (``StorageNamespace``) is held to it on its own: a tenant's keys count against that
    /// tenant's quota only, the owner's against the owner's.
    /// - Throws: `CONFLICT` when an `ifVersion` does not match, `QUOTA_EXCEEDED` past `maxBytes`.
    func write(_ writes: [Write], callID: UInt64, waiting: Waiting, commit: () -> Bool) throws(CSOPError) -> WriteAttempt<WriteResult> {
        try transaction(callID: callID, waiting: waiting, commit: commit) { state throws(CSOPError) in try writeRows(writes, &state) }
    }

    /// ``write(_:callID:waiting:commit:)``'s work, inside a transaction.
    func writeRows(_ writes: [Write], _ state: inout WriterState) throws(CSOPError) -> WriteResult {
        var deltas: [[UInt8]: Int64] = [:]
        var totals: [[UInt8]: Int64] = [:]
        // What the namespace's open uploads hold: it counts against maxBytes too.
        var uploads: [[UInt8]: Int64] = [:]
        if maxBytes != nil {
            // Counted before this transaction's own rows change them.
            for item in writes {
                let namespace = StorageNamespace.prefix(ofStored: item.key)
                if totals[namespace] == nil {
                    totals[namespace] = try Self.sqlite { () throws(SQLiteError) in try self.total(of: namespace, &state) }
                    uploads[namespace] = try Self.sqlite { () throws(SQLiteError) in try Self.uploadBytes(of: namespace, state.connection) }
                }
            }
        }
        var versions: [Int64] = []
        versions.reserveCapacity(writes.count)
        var obsolete: [String] = []
        let connection = state.connection
        for item in writes {
            let (current, upsert) = try Self.sqlite { () throws(SQLiteError) in
                (try connection.statement(.readForWrite), try connection.statement(.upsert))
            }
            current.bind(1, item.key)
            let existing = try Self.sqlite { () throws(SQLiteError) in try current.step() }
            let oldTier = existing ? Tier(rawValue: current.int64(0)) : nil
            let oldVersion = existing ? current.int64(1) : 0
            let oldSize = existing ? current.int64(2) : 0
            let oldRef = existing && !current.isNull(3) ? current.text(3) : nil
            // An expired row (not purged yet) is a key that does not exist.
            let visible = existing && (current.isNull(4) || current.int64(4) > WallClock.milliseconds())
            current.reset()
            if let expected = item.ifVersion, expected != (visible ? oldVersion : 0) {
                let now = visible ? "is at version \(oldVersion)" : "does not exist"
                throw CSOPError(.conflict, "'\(StorageNamespace.userKey(item.key))' \(now), not ifVersion \(expected); read it again and retry")
            }
            // A key made again continues from the version it was deleted (or expired) at.
            let baseVersion = existing ? oldVersion : try Self.sqlite { () throws(SQLiteError) in try Self.goneVersion(item.key, connection) }
            deltas[StorageNamespace.prefix(ofStored: item.key), default: 0] += item.size - oldSize
            upsert.bind(1, item.key)
            upsert.bind(2, item.tier.rawValue)
            upsert.bind(3, baseVersion + 1)
            upsert.bind(4, item.size)
            upsert.bind(5, item.storedSize)
            upsert.bind(6, item.flags)
            if item.tier == .local { upsert.bind(blob: item.bytes, index: 7) } else { upsert.bindNull(7) }
            if let ref = item.coldRef { upsert.bind(8, ref) } else { upsert.bindNull(8) }
            if let expires = item.expires { upsert.bind(9, expires) } else { upsert.bindNull(9) }
            if let keyId = item.keyId { upsert.bind(10, keyId) } else { upsert.bindNull(10) }
            defer { upsert.reset() }
            _ = try Self.sqlite { () throws(SQLiteError) in try upsert.step() }
            if oldTier == .cloud, let oldRef, oldRef != item.coldRef { obsolete.append(oldRef) }
            versions.append(baseVersion + 1)
        }
        if let maxBytes {
            for (namespace, delta) in deltas {
                let total = totals[namespace] ?? 0
                let open = uploads[namespace] ?? 0
                if delta > 0, total + open + delta > maxBytes {
                    let whose = namespace.isEmpty ? "storage" : "this tenant's storage"
                    let held = open > 0 ? " (and its open uploads \(open) more)" : ""
                    throw CSOPError(
                        .quotaExceeded,
                        "saving would bring \(whose) to \(total + delta) bytes\(held), past config.maxBytes \(maxBytes); delete keys\(open > 0 ? ", commit or abort uploads" : "") or raise maxBytes")
                }
            }
            for (namespace, delta) in deltas { state.totalBytes[namespace] = (totals[namespace] ?? 0) + delta }
        }
        return WriteResult(versions: versions, obsoleteColdRefs: obsolete)
    }

    /// What a delete did.
    struct Deletion: Sendable {
        /// Whether the key existed (and had not expired).
        var deleted: Bool
        /// Its cold row, if it had one: delete it after.
        var coldRef: String?
        /// The version it was deleted at.
        var version: Int64
    }

    /// Deletes `key`.
    func delete(_ key: String, callID: UInt64, waiting: Waiting, commit: () -> Bool) throws(CSOPError) -> WriteAttempt<Deletion> {
        try transaction(callID: callID, waiting: waiting, commit: commit) { state throws(CSOPError) in
            let (result, size) = try Self.sqlite { () throws(SQLiteError) in try Self.deleteRow(key, state.connection) }
            state.totalBytes[StorageNamespace.prefix(ofStored: key)]? -= size
            return result
        }
    }

    /// The version `key` had when it was last deleted, or 0.
    private static func goneVersion(_ key: String, _ connection: SQLiteConnection) throws(SQLiteError) -> Int64 {
        let statement = try connection.statement(.goneVersion)
        defer { statement.reset() }
        statement.bind(1, key)
        return try statement.step() ? statement.int64(0) : 0
    }

    private static func deleteRow(_ key: String, _ connection: SQLiteConnection) throws(SQLiteError) -> (result: Deletion, size: Int64) {
        let statement = try connection.statement(.delete)
        defer { statement.reset() }
        statement.bind(1, key)
        guard try statement.step() else { return (Deletion(deleted: false, coldRef: nil, version: 0), 0) }
        let ref = statement.int64(0) == Tier.cloud.rawValue && !statement.isNull(1) ? statement.text(1) : nil
        let size = statement.int64(2)
        let expired = !statement.isNull(3) && statement.int64(3) <= WallClock.milliseconds()
        let version = statement.int64(4)
        _ = try statement.step()
        return (Deletion(deleted: !expired, coldRef: ref, version: version), size)
    }

    /// Deletes up to `limit` keys expired at `now`, in one transaction; returns them (stored
    /// key and version) and the cold rows they referenced (delete them after).
    func purgeExpired(now: Int64, limit: Int, callID: UInt64) throws(CSOPError) -> (keys: [(key: String, version: Int64)], coldRefs: [String]) {
        try transaction(callID: callID, waiting: .upTo(milliseconds: Self.readBusyWaitMilliseconds), commit: { true }) {
            state throws(CSOPError) -> (keys: [(key: String, version: Int64)], coldRefs: [String]) in
            try Self.sqlite { () throws(SQLiteError) -> (keys: [(key: String, version: Int64)], coldRefs: [String]) in
                let statement = try state.connection.statement(.purgeExpired)
                defer { statement.reset() }
                statement.bind(1, now)
                statement.bind(2, Int64(limit))
                var keys: [(key: String, version: Int64)] = []
                var refs: [String] = []
                while try statement.step() {
                    let key = statement.text(0)
                    keys.append((key, statement.int64(4)))
                    state.totalBytes[StorageNamespace.prefix(ofStored: key)]? -= statement.int64(3)
                    if statement.int64(1) == Tier.cloud.rawValue, !statement.isNull(2) { refs.append(statement.text(2)) }
                }
                return (keys, refs)
            }
        }.waited()
    }

    // MARK: Key rotation

    /// An encrypted value under another key than the current one.
    struct EncryptedRow: Sendable {
        /// As stored (``StorageNamespace``).
        var key: String
        var version: Int64
        var stored: Row
    }

    /// Up to `limit` encrypted values (of every namespace) whose key id is not `keyId`, after
    /// the stored key `cursor`, in key order.
    func encryptedRows(notUnder keyId: String, after cursor: String, limit: Int, callID: UInt64) throws(CSOPError) -> [EncryptedRow] {
        try withReader(callID: callID) { connection throws(SQLiteError) in
            let statement = try connection.statement(.rotationCandidates)
            defer { statement.reset() }
            statement.bind(1, cursor)
            statement.bind(2, keyId)
            statement.bind(3, Int64(limit))
            var rows: [EncryptedRow] = []
            while try statement.step() {
                rows.append(EncryptedRow(key: statement.text(0), version: statement.int64(1), stored: Row(statement, from: 2)))
            }
            return rows
        }
    }

    /// How many encrypted values are under another key than `keyId`.
    func countEncrypted(notUnder keyId: String, callID: UInt64) throws(CSOPError) -> Int64 {
        try withReader(callID: callID) { connection throws(SQLiteError) in
            let statement = try connection.statement(.notUnderKey)
            defer { statement.reset() }
            statement.bind(1, keyId)
            _ = try statement.step()
            return statement.int64(0)
        }
    }

    /// Points `row`'s key at its re-encrypted bytes (a local value) or cold row `newColdRef`,
    /// under key `keyId`, if the key is still at the version and cold row it was read at;
    /// returns whether it was (a save in between already wrote it under the current key).
    /// The version does not change: the value is the same.
    func replaceEncrypted(_ row: EncryptedRow, bytes: [UInt8], storedSize: Int64, newColdRef: String?, keyId: String, callID: UInt64) throws(CSOPError) -> Bool {
        try transaction(callID: callID, waiting: .upTo(milliseconds: Self.readBusyWaitMilliseconds), commit: { true }) { state throws(CSOPError) -> Bool in
            try Self.sqlite { () throws(SQLiteError) -> Bool in
                let statement = try state.connection.statement(.replaceEncrypted)
                defer { statement.reset() }
                if newColdRef == nil { statement.bind(blob: bytes, index: 1) } else { statement.bindNull(1) }
                statement.bind(2, storedSize)
                if let newColdRef { statement.bind(3, newColdRef) } else { statement.bindNull(3) }
                statement.bind(4, keyId)
                statement.bind(5, row.key)
                statement.bind(6, row.version)
                if let old = row.stored.coldRef { statement.bind(7, old) } else { statement.bindNull(7) }
                _ = try statement.step()
                return state.connection.changes > 0
            }
        }.waited()
    }

    // MARK: Cancellation

    /// Interrupts the SQLite statement (or lock wait) running for `callID`; a write not
    /// started yet (queued for the writer thread) is remembered and refused when it starts.
    func interrupt(callID: UInt64) {
        if writerConnection.interrupt(callID: callID) { return }
        let busy = readers.withLock { Array($0.busy.values) }
        for connection in busy where connection.interrupt(callID: callID) { return }
        earlyCancels.withLock { cancels in
            if cancels.count >= Self.earlyCancelLimit { cancels.removeFirst() }
            cancels.append(callID)
        }
    }

    /// Cancels remembered for writes that had not started (the oldest are forgotten first).
    private static let earlyCancelLimit = 1024

    private func takeEarlyCancel(_ callID: UInt64) -> Bool {
        earlyCancels.withLock { cancels in
            guard let index = cancels.firstIndex(of: callID) else { return false }
            cancels.remove(at: index)
            return true
        }
    }

    // MARK: Plumbing

    private func openReader() throws(CSOPError) -> SQLiteConnection {
        do throws(SQLiteError) {
            let connection = try SQLiteConnection(path: path, readOnly: true, create: false, busyTimeoutMilliseconds: 5000)
            _ = try connection.statement(.read)
            return connection
        } catch {
            throw .executionFailed("cannot open a read connection to the storage database at \(path): \(error.message)")
        }
    }

    func withReader<T>(callID: UInt64, _ body: (SQLiteConnection) throws(SQLiteError) -> T) throws(CSOPError) -> T {
        let pooled = readers.withLock { pool -> SQLiteConnection? in
            guard let connection = pool.idle.popLast() else { return nil }
            pool.busy[ObjectIdentifier(connection)] = connection
            return connection
        }
        let connection: SQLiteConnection
        if let pooled {
            connection = pooled
        } else {
            connection = try openReader()
            readers.withLock { $0.busy[ObjectIdentifier(connection)] = connection }
        }
        connection.begin(callID: callID, waitMilliseconds: Self.readBusyWaitMilliseconds)
        defer {
            connection.end()
            readers.withLock { pool in
                pool.busy[ObjectIdentifier(connection)] = nil
                if pool.idle.count < poolSize { pool.idle.append(connection) }
            }
        }
        do throws(SQLiteError) {
            return try body(connection)
        } catch {
            throw Self.map(error, writing: false)
        }
    }

    /// Runs `body` inside BEGIN IMMEDIATE … COMMIT; any error rolls back. Right before the
    /// commit, `commit()` must say the write is still wanted; if not, it is rolled back and
    /// answered `TIMEOUT` (the host already told the caller it did not happen).
    func transaction<T: Sendable>(
        callID: UInt64, waiting: Waiting, commit: () -> Bool, _ body: (inout WriterState) throws(CSOPError) -> T
    ) throws(CSOPError) -> WriteAttempt<T> {
        func run(_ state: inout WriterState) throws(CSOPError) -> WriteAttempt<T> {
            let connection = state.connection
            connection.begin(callID: callID, waitMilliseconds: waiting.milliseconds)
            defer { connection.end() }
            if !earlyCancels.withLock({ $0.isEmpty }) && takeEarlyCancel(callID) { throw Self.cancelledBeforeCommit }
            do throws(SQLiteError) {
                try Self.run(connection, .begin)
                try refreshTotal(&state)
            } catch {
                if !connection.isAutocommit { try? Self.run(connection, .rollback) }
                if error.isBusy && waiting == .never { return .wouldBlock }
                throw Self.map(error, writing: true)
            }
            let saved = state.totalBytes
            do throws(CSOPError) {
                let result = try body(&state)
                guard commit() else { throw Self.cancelledBeforeCommit }
                try Self.sqlite { () throws(SQLiteError) in try Self.run(connection, .commit) }
                return .done(result)
            } catch {
                state.totalBytes = saved
                if !connection.isAutocommit { try? Self.run(connection, .rollback) }
                throw error
            }
        }
        if waiting == .never {
            return try writer.withLockIfAvailable { state throws(CSOPError) in try run(&state) } ?? .wouldBlock
        }
        return try writer.withLock { state throws(CSOPError) in try run(&state) }
    }

    /// A write the host abandoned (timed out) before it committed: rolled back, nothing saved.
    static let cancelledBeforeCommit = CSOPError(
        .timeout, "the write was cancelled (timed out) before it was committed; nothing was saved", retryable: true)

    /// With a quota, forgets the totals when another connection committed since we last looked.
    private func refreshTotal(_ state: inout WriterState) throws(SQLiteError) {
        guard maxBytes != nil else { return }
        let versionStatement = try state.connection.statement(.dataVersion)
        defer { versionStatement.reset() }
        _ = try versionStatement.step()
        let version = versionStatement.int64(0)
        if version == state.dataVersion { return }
        state.totalBytes = [:]
        state.dataVersion = version
    }

    /// The bytes the namespace with stored-key `prefix` holds, counted when not known.
    func total(of prefix: [UInt8], _ state: inout WriterState) throws(SQLiteError) -> Int64 {
        if let known = state.totalBytes[prefix] { return known }
        let range = Self.range(ofPrefix: prefix)
        let statement = try state.connection.statement(.totalSize)
        defer { statement.reset() }
        statement.bindTextBytes(1, range.lower)
        statement.bindTextBytes(2, range.upper)
        _ = try statement.step()
        let total = statement.int64(0)
        if state.totalBytes.count >= Self.maxTrackedNamespaces { state.totalBytes = [:] }
        state.totalBytes[prefix] = total
        return total
    }

    /// The bytes the open uploads of the namespace with stored-key `prefix` hold.
    static func uploadBytes(of prefix: [UInt8], _ connection: SQLiteConnection) throws(SQLiteError) -> Int64 {
        let statement = try connection.statement(.uploadBytes)
        defer { statement.reset() }
        let range = range(ofPrefix: prefix)
        statement.bindTextBytes(1, range.lower)
        statement.bindTextBytes(2, range.upper)
        _ = try statement.step()
        return statement.int64(0)
    }

    /// The stored keys of the namespace whose prefix is `prefix` (empty: the owner's).
    static func range(ofPrefix prefix: [UInt8]) -> (lower: [UInt8], upper: [UInt8]) {
        prefix.isEmpty ? StorageNamespace.owner.range : (prefix, Array(prefix.dropLast()) + [0x01])
    }

    static func run(_ connection: SQLiteConnection, _ query: StorageSQL) throws(SQLiteError) {
        let statement = try connection.statement(query)
        defer { statement.reset() }
        _ = try statement.step()
    }

    static func sqlite<T>(_ body: () throws(SQLiteError) -> T) throws(CSOPError) -> T {
        do { return try body() } catch { throw map(error, writing: true) }
    }

    static func map(_ error: SQLiteError, writing: Bool) -> CSOPError {
        if error.isInterrupt { return CSOPError(.timeout, "the storage operation was interrupted (timed out)", retryable: true) }
        if error.isBusy {
            return CSOPError(writing ? .saveFailed : .executionFailed, "the storage database at \(error.path) is locked by another writer; retry", retryable: true)
        }
        if error.isFull { return CSOPError(.saveFailed, "the disk holding \(error.path) is full; free space and retry") }
        if error.isCorrupt {
            return CSOPError(.executionFailed, "the storage database at \(error.path) is damaged: \(error.message)")
        }
        return CSOPError(writing ? .saveFailed : .executionFailed, "storage database error at \(error.path): \(error.message)")
    }

    private static func createParentDirectory(of path: String) throws(CSOPError) {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return }
        var current = ""
        for component in path[..<slash].split(separator: "/", omittingEmptySubsequences: false) {
            current += current.isEmpty && component.isEmpty ? "/" : (current.hasSuffix("/") || current.isEmpty ? "" : "/") + component
            if current.isEmpty || current == "/" { continue }
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                throw .executionFailed("cannot create the directory \(current) for the storage database at \(path) (errno \(errno)); set config.path")
            }
        }
    }
}
