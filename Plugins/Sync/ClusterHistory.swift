import CSOPCore
import Logging
import PostgresNIO

/// The history tables of cluster mode, and every query on them.
///
/// `csop_sync_streams` holds one row per channel: its `epoch` (random, made with the row)
/// and `top`, the last offset given. `csop_sync_history` holds the retained messages by
/// `(cluster, channel, off)`. A publish takes the stream row's lock to number its messages,
/// so a later offset always commits after an earlier one, and a reader that sees a stream's
/// `top` sees every message up to it that is still kept.
struct ClusterHistory: Sendable {
    let cluster: String
    let origin: String
    let logger: Logger

    static let schema = [
        """
        CREATE TABLE IF NOT EXISTS csop_sync_streams (
            cluster text NOT NULL, channel text NOT NULL, epoch text NOT NULL, top bigint NOT NULL,
            PRIMARY KEY (cluster, channel))
        """,
        """
        CREATE TABLE IF NOT EXISTS csop_sync_history (
            cluster text NOT NULL, channel text NOT NULL, off bigint NOT NULL, event text NOT NULL, data text NOT NULL,
            stamp bigint NOT NULL, origin text NOT NULL, expires_at timestamptz NOT NULL,
            PRIMARY KEY (cluster, channel, off))
        """,
        "CREATE INDEX IF NOT EXISTS csop_sync_history_expiry ON csop_sync_history (cluster, expires_at)",
    ]

    /// Stores and numbers messages of channels that keep history, trims each channel to its
    /// size, and NOTIFYs each message with its offset (``ClusterFrame``'s M frame; an H frame,
    /// which receivers answer by reading the table, for one too large for a NOTIFY), in one
    /// statement: one transaction.
    /// - Returns: the messages with their offsets and epochs, in the order given.
    func publish(_ messages: [SyncMessage], limits: [HistoryPolicy.Limits], on connection: PostgresConnection) async throws
        -> [SyncMessage]
    {
        let statement = Publish(
            cluster: cluster, origin: origin, channels: messages.map(\.channel), events: messages.map(\.event),
            data: messages.map { String(decoding: $0.data, as: UTF8.self) }, stamps: messages.map(\.timestamp),
            sizes: limits.map(\.size), ages: limits.map { Double($0.age) })
        var numbered = messages
        for (ordinal, epoch, offset) in try await connection.executeUnlessClosed(statement, logger: logger) {
            let index = Int(ordinal) - 1
            guard numbered.indices.contains(index) else { continue }
            numbered[index].offset = offset
            numbered[index].epoch = epoch
        }
        return numbered
    }

    /// ``publish(_:limits:on:)``'s statement, prepared once per connection: it is planned
    /// once, not on every publish.
    struct Publish: PostgresPreparedStatement {
        static let name = "csop_sync_history_publish"
        static let sql = """
            WITH batch AS (
                SELECT * FROM unnest($3::text[], $4::text[], $5::text[], $6::int8[], $7::int8[], $8::float8[])
                    WITH ORDINALITY AS b(channel, event, data, stamp, size, age, ord)),
            counts AS (SELECT channel, count(*)::int8 AS n, max(size) AS size FROM batch GROUP BY channel),
            streams AS (
                INSERT INTO csop_sync_streams AS s (cluster, channel, epoch, top)
                SELECT $1, channel, substr(md5(random()::text || clock_timestamp()::text), 1, 16), n FROM counts
                ON CONFLICT (cluster, channel) DO UPDATE SET top = s.top + EXCLUDED.top
                RETURNING s.channel, s.epoch, s.top),
            numbered AS (
                SELECT b.ord, b.channel, b.event, b.data, b.stamp, b.age, st.epoch,
                    st.top - c.n + row_number() OVER (PARTITION BY b.channel ORDER BY b.ord) AS off
                FROM batch b JOIN streams st ON st.channel = b.channel JOIN counts c ON c.channel = b.channel),
            stored AS (
                INSERT INTO csop_sync_history (cluster, channel, off, event, data, stamp, origin, expires_at)
                SELECT $1, channel, off, event, data, stamp, $2, now() + age * interval '1 millisecond' FROM numbered),
            bounds AS (
                SELECT st.channel, st.top - c.size AS below, c.n FROM streams st JOIN counts c ON c.channel = st.channel
                WHERE st.top > c.size),
            trimmed AS (
                -- The n rows this publish pushes out, by a bounded range of the primary key: a
                -- scan from the start would walk every row trimmed before and not yet vacuumed.
                -- (Rows a smaller size leaves behind expire by age.)
                DELETE FROM csop_sync_history h USING bounds t
                WHERE h.cluster = $1 AND h.channel = t.channel AND h.off > t.below - t.n AND h.off <= t.below),
            notified AS (
                SELECT count(pg_notify($1, CASE
                    WHEN octet_length(n.data) + octet_length(n.channel) + octet_length(n.event) + octet_length($2) <= \(ClusterFrame.budget - 200)
                    THEN 'M' || $2 || E'\n' || n.channel || ' ' || n.epoch || ' ' || n.off || ' ' || n.event || ' ' || n.stamp || ' ' || n.data
                    ELSE 'H' || $2 || E'\n' || n.channel || ' ' || n.epoch || ' ' || n.off END)) AS sent
                FROM (SELECT * FROM numbered ORDER BY ord) n)
            SELECT n.ord, n.epoch, n.off FROM numbered n, notified ORDER BY n.ord
            """
        typealias Row = (Int64, String, Int64)

        var cluster: String
        var origin: String
        var channels: [String]
        var events: [String]
        var data: [String]
        var stamps: [Int64]
        var sizes: [Int64]
        var ages: [Double]

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 8)
            bindings.append(cluster)
            bindings.append(origin)
            bindings.append(channels)
            bindings.append(events)
            bindings.append(data)
            bindings.append(stamps)
            bindings.append(sizes)
            bindings.append(ages)
            return bindings
        }

        func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
    }

    /// A channel's stream (made if new) and its retained messages after `after`, oldest
    /// first, at most `limit`; the newest `limit` when `after` is nil. Rows that are not
    /// well-formed messages (someone else wrote them) are skipped.
    func read(channel: String, after: Int64?, limit: Int, on connection: PostgresConnection) async throws -> HistoryPage {
        // Another session may make the stream between the statement's snapshot and its
        // insert: then neither part returns a row, and the next attempt sees it.
        for _ in 1...3 {
            if let page = try await readOnce(channel: channel, after: after, limit: limit, on: connection) { return page }
        }
        throw CSOPError(.executionFailed, "the history stream of a channel could not be read; try again", retryable: true)
    }

    private func readOnce(channel: String, after: Int64?, limit: Int, on connection: PostgresConnection) async throws -> HistoryPage? {
        // Offsets are contiguous (only the oldest are ever removed), so the newest `limit`
        // are those after top − limit: both cases walk the primary key forwards.
        let rows = try await connection.queryUnlessClosed(
            """
            WITH made AS (
                INSERT INTO csop_sync_streams (cluster, channel, epoch, top)
                VALUES (\(cluster), \(channel), substr(md5(random()::text || clock_timestamp()::text), 1, 16), 0)
                ON CONFLICT (cluster, channel) DO NOTHING RETURNING epoch, top),
            stream AS (
                SELECT epoch, top FROM made
                UNION ALL SELECT epoch, top FROM csop_sync_streams WHERE cluster = \(cluster) AND channel = \(channel)
                LIMIT 1)
            SELECT s.epoch, s.top, h.off, h.event, h.data, h.stamp, h.origin FROM stream s
            LEFT JOIN LATERAL (
                SELECT off, event, data, stamp, origin FROM csop_sync_history
                WHERE cluster = \(cluster) AND channel = \(channel) AND off > COALESCE(\(after)::int8, s.top - \(Int64(limit)))
                  AND expires_at > now()
                ORDER BY off LIMIT \(Int64(limit))) h ON true
            """, logger: logger)
        var page: HistoryPage?
        for try await (epoch, top, offset, event, data, stamp, origin) in rows.decode(
            (String, Int64, Int64?, String?, String?, Int64?, String?).self)
        {
            if page == nil { page = HistoryPage(epoch: epoch, top: top, messages: []) }
            guard let offset, let event, let data, let stamp, let origin, SyncNames.isValidName(event) else { continue }
            let bytes = Array(data.utf8)
            guard SyncMessage.isCompactJSON(bytes) else { continue }
            page?.messages.append(
                SyncMessage(channel: channel, event: event, data: bytes, timestamp: stamp, origin: origin, offset: offset, epoch: epoch))
        }
        page?.messages.sort { ($0.offset ?? 0) < ($1.offset ?? 0) }
        return page
    }

    /// Removes expired messages of this cluster.
    func sweep(on connection: PostgresConnection) async throws {
        try await connection.queryUnlessClosed(
            "DELETE FROM csop_sync_history WHERE cluster = \(cluster) AND expires_at < now()", logger: logger)
    }
}
