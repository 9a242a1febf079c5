/// Every statement the hot tier runs, so each connection prepares each once and reuses it.
///
/// `csop_storage` is the key index for both tiers: one row per key with its tier
/// (0 local, 1 cloud), version, JSON size, stored size, flags (1 compressed, 2 encrypted), the
/// value bytes for local keys, the cold-table row reference for cloud keys, and when the key
/// expires (`expires`, milliseconds since the Unix epoch; NULL for never), and for an
/// encrypted value the id of its key (`key_id`; NULL for `default`). An expired row is
/// invisible to every read and is purged in the background (``purgeExpired``).
///
/// `csop_storage_gone` keeps the last version of every deleted key (a trigger writes it on
/// each delete, whichever statement deletes), so a key saved again continues from there:
/// versions never repeat for a key, and an `ifVersion` taken before a delete can never match
/// a key made after it (ABA).
///
/// A streamed value (tier 2, ``LocalStore/Tier/stream``) keeps its bytes in
/// `csop_storage_chunks`, one row per append (`stream` is the index row's `cold_ref`, `offset`
/// the chunk's first byte). An upload in progress is a row of `csop_storage_uploads` (the
/// stored key, its options, when it was last appended to); its chunks become the key's value
/// when the commit deletes that row and writes the index row, in one transaction. A stream no
/// index row or upload needs any more (replaced, deleted, expired, aborted, idle too long) is
/// named in `csop_storage_dead_streams` in the same transaction that dropped it; the background
/// purge deletes its chunks in bounded batches. So every chunk belongs to an upload, a key, or
/// a dead stream, whatever crashes when.
enum StorageSQL: Int, CaseIterable {
    case read
    case fastSaveLocal
    case begin
    case commit
    case rollback
    case readForWrite
    case goneVersion
    case upsert
    case delete
    case listRange
    case listRangeLive
    case anyExpired
    case stats
    case totalSize
    case dataVersion
    case referencedColdRefs
    case purgeExpired
    case rotationCandidates
    case notUnderKey
    case replaceEncrypted
    case uploadBegin
    case uploadCount
    case uploadTouch
    case uploadBytes
    case uploadEnd
    case uploadsIdle
    case chunkWrite
    case chunkLength
    case chunkLayout
    case chunkStart
    case chunkRange
    case streamDead
    case deadChunksDelete
    case deadStreamsDone
    case beginRead
    case streamWork

    static let schema = """
        CREATE TABLE IF NOT EXISTS csop_storage (
            key TEXT NOT NULL PRIMARY KEY,
            tier INTEGER NOT NULL,
            version INTEGER NOT NULL,
            size INTEGER NOT NULL,
            stored INTEGER NOT NULL,
            flags INTEGER NOT NULL,
            value BLOB,
            cold_ref TEXT,
            expires INTEGER,
            key_id TEXT
        );
        CREATE TABLE IF NOT EXISTS csop_storage_gone (
            key TEXT NOT NULL PRIMARY KEY,
            version INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS csop_storage_meta (
            name TEXT NOT NULL PRIMARY KEY,
            value TEXT NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS csop_storage_cold_ref ON csop_storage (cold_ref) WHERE cold_ref IS NOT NULL;
        CREATE INDEX IF NOT EXISTS csop_storage_expires ON csop_storage (expires) WHERE expires IS NOT NULL;
        CREATE TRIGGER IF NOT EXISTS csop_storage_gone_on_delete AFTER DELETE ON csop_storage BEGIN
            INSERT INTO csop_storage_gone (key, version) VALUES (old.key, old.version)
            ON CONFLICT (key) DO UPDATE SET version = max(version, excluded.version);
        END;
        CREATE TABLE IF NOT EXISTS csop_storage_uploads (
            stream TEXT NOT NULL PRIMARY KEY,
            key TEXT NOT NULL,
            ttl INTEGER,
            if_version INTEGER,
            touched INTEGER NOT NULL,
            bytes INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS csop_storage_uploads_key ON csop_storage_uploads (key);
        CREATE TABLE IF NOT EXISTS csop_storage_chunks (
            stream TEXT NOT NULL,
            offset INTEGER NOT NULL,
            length INTEGER NOT NULL,
            bytes BLOB NOT NULL
        );
        CREATE UNIQUE INDEX IF NOT EXISTS csop_storage_chunks_at ON csop_storage_chunks (stream, offset);
        CREATE TABLE IF NOT EXISTS csop_storage_dead_streams (
            stream TEXT NOT NULL PRIMARY KEY
        ) WITHOUT ROWID;
        CREATE TRIGGER IF NOT EXISTS csop_storage_stream_on_delete AFTER DELETE ON csop_storage WHEN old.tier = 2 BEGIN
            INSERT OR IGNORE INTO csop_storage_dead_streams (stream) VALUES (old.cold_ref);
        END;
        CREATE TRIGGER IF NOT EXISTS csop_storage_stream_on_replace AFTER UPDATE OF cold_ref ON csop_storage
        WHEN old.tier = 2 AND new.cold_ref IS NOT old.cold_ref BEGIN
            INSERT OR IGNORE INTO csop_storage_dead_streams (stream) VALUES (old.cold_ref);
        END;
        """

    /// Columns added to a table since its first version, with their type and what fills them
    /// in the rows already there: a file made before gets them (``LocalStore``) before
    /// ``schema`` runs.
    static let addedColumns: [AddedColumn] = [
        AddedColumn(table: "csop_storage", name: "expires", type: "INTEGER"),
        AddedColumn(table: "csop_storage", name: "key_id", type: "TEXT"),
        // Uploads open in a file from before count what they hold already.
        AddedColumn(
            table: "csop_storage_uploads", name: "bytes", type: "INTEGER NOT NULL DEFAULT 0",
            fill: "UPDATE csop_storage_uploads SET bytes = (SELECT total(length) FROM csop_storage_chunks WHERE csop_storage_chunks.stream = csop_storage_uploads.stream)"),
    ]

    struct AddedColumn {
        var table: String
        var name: String
        var type: String
        /// Run once the column is added; nil when its default fits the rows already there.
        var fill: String? = nil
    }

    var sql: String {
        switch self {
        // A Row's columns (LocalStore.Row(statement, from:)), then expires.
        case .read: "SELECT tier, flags, value, cold_ref, key_id, expires FROM csop_storage WHERE key = ?1"
        // Saves over a local (or missing) key in one autocommit statement; a cloud key returns no row.
        case .fastSaveLocal:
            """
            INSERT INTO csop_storage (key, tier, version, size, stored, flags, value, cold_ref, expires, key_id)
            VALUES (?1, 0, 1 + coalesce((SELECT version FROM csop_storage_gone WHERE key = ?1), 0), ?2, ?3, ?4, ?5, NULL, ?6, ?7)
            ON CONFLICT (key) DO UPDATE SET version = version + 1, size = excluded.size,
                stored = excluded.stored, flags = excluded.flags, value = excluded.value, expires = excluded.expires,
                key_id = excluded.key_id
            WHERE tier = 0
            RETURNING version
            """
        case .begin: "BEGIN IMMEDIATE"
        case .commit: "COMMIT"
        case .rollback: "ROLLBACK"
        case .readForWrite: "SELECT tier, version, size, cold_ref, expires FROM csop_storage WHERE key = ?1"
        case .goneVersion: "SELECT version FROM csop_storage_gone WHERE key = ?1"
        case .upsert:
            """
            INSERT INTO csop_storage (key, tier, version, size, stored, flags, value, cold_ref, expires, key_id)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
            ON CONFLICT (key) DO UPDATE SET tier = excluded.tier, version = excluded.version,
                size = excluded.size, stored = excluded.stored, flags = excluded.flags,
                value = excluded.value, cold_ref = excluded.cold_ref, expires = excluded.expires, key_id = excluded.key_id
            """
        case .delete: "DELETE FROM csop_storage WHERE key = ?1 RETURNING tier, cold_ref, size, expires, version"
        // Every list, stats and quota total reads one namespace's range (StorageNamespace). List
        // and stats skip expired keys (?5 and ?3 are now); the quota counts them until purged.
        // A list reads the key index alone (listRange) unless some key is expired and not yet
        // purged (anyExpired, through the partial index on expires): then every row's expiry
        // must be read too (listRangeLive), which costs a table read per key.
        case .listRange:
            "SELECT key FROM csop_storage WHERE key > ?1 AND key >= ?2 AND key < ?3 ORDER BY key LIMIT ?4"
        case .listRangeLive:
            """
            SELECT key FROM csop_storage WHERE key > ?1 AND key >= ?2 AND key < ?3 AND (expires IS NULL OR expires > ?5)
            ORDER BY key LIMIT ?4
            """
        case .anyExpired: "SELECT 1 FROM csop_storage WHERE expires <= ?1 LIMIT 1"
        case .stats:
            """
            SELECT tier, count(*), total(size), total(stored) FROM csop_storage
            WHERE key >= ?1 AND key < ?2 AND (expires IS NULL OR expires > ?3) GROUP BY tier
            """
        case .totalSize: "SELECT total(size) FROM csop_storage WHERE key >= ?1 AND key < ?2"
        case .dataVersion: "PRAGMA data_version"
        // Which of a JSON array of cold refs an index row points at (the cold-tier sweep).
        case .referencedColdRefs:
            "SELECT cold_ref FROM csop_storage WHERE cold_ref IN (SELECT value FROM json_each(?1)) AND cold_ref IS NOT NULL"
        // Up to ?2 keys expired at ?1 (now), through the partial index on expires.
        case .purgeExpired:
            """
            DELETE FROM csop_storage WHERE key IN (SELECT key FROM csop_storage WHERE expires <= ?1 ORDER BY expires LIMIT ?2)
            RETURNING key, tier, cold_ref, size, version
            """
        // storage.rotate: encrypted values (flags & 2) under another key than ?2, after key ?1.
        case .rotationCandidates:
            """
            SELECT key, version, tier, flags, value, cold_ref, key_id FROM csop_storage
            WHERE key > ?1 AND flags & 2 != 0 AND coalesce(key_id, 'default') != ?2 ORDER BY key LIMIT ?3
            """
        case .notUnderKey: "SELECT count(*) FROM csop_storage WHERE flags & 2 != 0 AND coalesce(key_id, 'default') != ?1"
        // A re-encrypted value, only if the key is still at the version (and cold row) it was read at.
        case .replaceEncrypted:
            """
            UPDATE csop_storage SET value = ?1, stored = ?2, cold_ref = ?3, key_id = ?4
            WHERE key = ?5 AND version = ?6 AND cold_ref IS ?7
            """
        // Streamed values (see the type's notes).
        case .uploadBegin: "INSERT INTO csop_storage_uploads (stream, key, ttl, if_version, touched) VALUES (?1, ?2, ?3, ?4, ?5)"
        case .uploadCount: "SELECT count(*) FROM csop_storage_uploads WHERE key >= ?1 AND key < ?2"
        // Touches the upload and adds an append's change in size (?3) to what it holds.
        case .uploadTouch: "UPDATE csop_storage_uploads SET touched = ?2, bytes = bytes + ?3 WHERE stream = ?1 RETURNING key"
        case .uploadBytes: "SELECT total(bytes) FROM csop_storage_uploads WHERE key >= ?1 AND key < ?2"
        case .uploadEnd: "DELETE FROM csop_storage_uploads WHERE stream = ?1 RETURNING key, ttl, if_version"
        case .uploadsIdle: "DELETE FROM csop_storage_uploads WHERE touched < ?1 RETURNING stream"
        case .chunkWrite:
            """
            INSERT INTO csop_storage_chunks (stream, offset, length, bytes) VALUES (?1, ?2, ?3, ?4)
            ON CONFLICT (stream, offset) DO UPDATE SET length = excluded.length, bytes = excluded.bytes
            """
        case .chunkLength: "SELECT length FROM csop_storage_chunks WHERE stream = ?1 AND offset = ?2"
        case .chunkLayout: "SELECT offset, length FROM csop_storage_chunks WHERE stream = ?1 ORDER BY offset"
        case .chunkStart: "SELECT max(offset) FROM csop_storage_chunks WHERE stream = ?1 AND offset <= ?2"
        case .chunkRange: "SELECT offset, bytes FROM csop_storage_chunks WHERE stream = ?1 AND offset >= ?2 AND offset < ?3 ORDER BY offset"
        case .streamDead: "INSERT OR IGNORE INTO csop_storage_dead_streams (stream) VALUES (?1)"
        case .deadChunksDelete:
            """
            DELETE FROM csop_storage_chunks WHERE rowid IN (
                SELECT c.rowid FROM csop_storage_dead_streams d JOIN csop_storage_chunks c ON c.stream = d.stream LIMIT ?1)
            """
        case .deadStreamsDone:
            """
            DELETE FROM csop_storage_dead_streams
            WHERE NOT EXISTS (SELECT 1 FROM csop_storage_chunks c WHERE c.stream = csop_storage_dead_streams.stream)
            """
        case .beginRead: "BEGIN"
        case .streamWork:
            "SELECT EXISTS (SELECT 1 FROM csop_storage_dead_streams) OR EXISTS (SELECT 1 FROM csop_storage_uploads WHERE touched < ?1)"
        }
    }
}
