import CSOPCore
import CSOPPluginKit
import CSOPPostgres
import Logging
import PostgresNIO
import Synchronization

/// `storage.watch` across processes: every process that opens the same store (the same
/// SQLite file, so the same store id) sends the changes it commits, and receives the others',
/// through PostgreSQL LISTEN/NOTIFY on the channel `csop_storage_<store id>`.
///
/// One connection LISTENs and NOTIFYs. Changes are queued and sent in batches (one statement
/// of `pg_notify` calls), so a save never waits for PostgreSQL. Delivery to other processes is
/// at most once: while the connection is down, this process's changes are not sent (counted
/// in ``dropped``) and it misses the others'; a watcher that must not miss one reads the key
/// again after `storage.health` says the feed is back.
///
/// A payload is `S<origin>\n` and one JSON line `["<stored key>",version,deleted,expired]`
/// per change. Anyone allowed to NOTIFY on the channel can send anything: a payload that is
/// not that shape is dropped and counted in ``malformed``, never delivered.
final class ChangeFeed: Sendable {
    /// Changes waiting to be sent, at most; more are dropped.
    static let maxQueued = 100_000
    /// Bytes per NOTIFY payload, under PostgreSQL's 8,000-byte limit.
    static let budget = 7900

    private struct State {
        var connection: PostgresConnection?
        var queue: [WatchRegistry.Change] = []
        var stopped = false
        var tasks: [Task<Void, Never>] = []
        var lastFailure: String?
    }

    let channel: String
    let origin: String
    private let postgres: PostgresURL
    private let receive: @Sendable ([WatchRegistry.Change]) -> Void
    private let log: @Sendable (PluginHost.LogLevel, String) -> Void
    private let logger = Logger(label: "csop.storage.feed", factory: { _ in SwiftLogNoOpLogHandler() })
    private let state = Mutex(State())
    private let wake: AsyncStream<Void>
    private let wakeContinuation: AsyncStream<Void>.Continuation
    /// This process's changes that were not sent (no connection, or a full queue).
    let dropped = Atomic<Int>(0)
    /// Payloads from the channel that were not well-formed changes.
    let malformed = Atomic<Int>(0)
    /// Other processes' changes delivered here.
    let received = Atomic<Int>(0)

    /// - Parameters:
    ///   - storeID: the store's id (``LocalStore/storeID``): lowercase hex.
    ///   - receive: gets other processes' changes, keys as stored.
    init(
        postgres: PostgresURL, storeID: String, receive: @escaping @Sendable ([WatchRegistry.Change]) -> Void,
        log: @escaping @Sendable (PluginHost.LogLevel, String) -> Void
    ) {
        self.postgres = postgres
        channel = "csop_storage_\(storeID)"
        origin = String(UInt64.random(in: .min ... .max), radix: 16)
        self.receive = receive
        self.log = log
        (wake, wakeContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    func start() {
        let supervisor = Task { await self.supervise() }
        let writer = Task {
            for await _ in self.wake { await self.drain() }
        }
        state.withLock { $0.tasks = [supervisor, writer] }
    }

    var isConnected: Bool { state.withLock { $0.connection != nil } }

    /// Why the last connection attempt failed, if it did (no credentials in it).
    var lastFailure: String? { state.withLock { $0.lastFailure } }

    /// Queues this process's committed changes for the other processes. Never blocks.
    func publish(_ changes: [WatchRegistry.Change]) {
        guard !changes.isEmpty else { return }
        let queued = state.withLock { state -> Bool in
            guard state.connection != nil, !state.stopped, state.queue.count + changes.count <= Self.maxQueued else { return false }
            state.queue += changes
            return true
        }
        if queued { wakeContinuation.yield() } else { dropped.add(changes.count, ordering: .relaxed) }
    }

    func shutdown() async {
        let (tasks, connection) = state.withLock { state in
            state.stopped = true
            defer {
                state.tasks = []
                state.connection = nil
                state.queue = []
            }
            return (state.tasks, state.connection)
        }
        wakeContinuation.finish()
        for task in tasks { task.cancel() }
        try? await connection?.close()
    }

    private var isStopped: Bool { state.withLock { $0.stopped } }

    private func supervise() async {
        let backoff = BackoffPolicy(baseMilliseconds: 100, capMilliseconds: 5000, jitter: 0.5)
        var attempt = 0
        while !Task.isCancelled && !isStopped {
            do {
                var config = postgres.connectionConfiguration()
                config.options.additionalStartupParameters = [("application_name", "csop-storage-\(origin)")]
                let connection = try await PostgresConnection.connect(configuration: config, id: 1, logger: logger)
                try await connection.listen(on: channel) { notifications in
                    let kept = state.withLock { state -> Bool in
                        guard !state.stopped else { return false }
                        state.connection = connection
                        state.lastFailure = nil
                        return true
                    }
                    guard kept else { return }
                    attempt = 0
                    log(.info, "storage: changes shared with other processes of this store through \(postgres) (channel \(channel))")
                    for try await notification in notifications {
                        guard let changes = Self.parse(notification.payload, ownOrigin: origin) else {
                            malformed.add(1, ordering: .relaxed)
                            continue
                        }
                        if !changes.isEmpty {
                            received.add(changes.count, ordering: .relaxed)
                            receive(changes)
                        }
                    }
                }
                try? await connection.close()
            } catch {
                if !isStopped {
                    let reason = postgres.describe(connectionError: error)
                    state.withLock { $0.lastFailure = reason }
                    log(.warning, "storage: the change feed lost PostgreSQL at \(postgres) (\(reason)); reconnecting")
                }
            }
            state.withLock {
                $0.connection = nil
                $0.queue = []
            }
            if isStopped { return }
            try? await Task.sleep(for: .milliseconds(backoff.delay(afterAttempt: attempt, random: Double.random(in: 0..<1))))
            attempt += 1
        }
    }

    private func drain() async {
        while true {
            let (batch, connection) = state.withLock { state -> ([WatchRegistry.Change], PostgresConnection?) in
                defer { state.queue = [] }
                return (state.queue, state.connection)
            }
            guard !batch.isEmpty else { return }
            guard let connection else {
                dropped.add(batch.count, ordering: .relaxed)
                continue
            }
            let frames = Self.frames(origin: origin, changes: batch)
            do {
                let rows = try await connection.queryUnlessClosed(
                    "SELECT count(pg_notify(\(channel), f)) FROM unnest(\(frames)::text[]) AS f", logger: logger)
                for try await _ in rows {}
            } catch {
                dropped.add(batch.count, ordering: .relaxed)
            }
        }
    }

    /// Packs changes into payloads of at most ``budget`` bytes, in order.
    static func frames(origin: String, changes: [WatchRegistry.Change]) -> [String] {
        let header = Array("S\(origin)\n".utf8)
        var frames: [String] = []
        var current = header
        for change in changes {
            var line = JSONWriter(capacity: change.key.utf8.count + 32)
            line.append("[")
            line.writeString(change.key)
            line.append(",")
            line.writeInt(change.version)
            line.append(change.deleted ? ",true" : ",false")
            line.append(change.expired ? ",true]" : ",false]")
            if current.count > header.count, current.count + 1 + line.bytes.count > budget {
                frames.append(String(decoding: current, as: UTF8.self))
                current = header
            }
            if current.count > header.count { current.append(0x0A) }
            current += line.bytes
        }
        if current.count > header.count { frames.append(String(decoding: current, as: UTF8.self)) }
        return frames
    }

    /// The changes in a payload; [] for this process's own; nil when it is not well-formed.
    static func parse(_ payload: String, ownOrigin: String) -> [WatchRegistry.Change]? {
        let bytes = Array(payload.utf8)
        guard bytes.first == UInt8(ascii: "S"), let newline = bytes.firstIndex(of: 0x0A) else { return nil }
        let origin = String(decoding: bytes[1..<newline], as: UTF8.self)
        guard !origin.isEmpty else { return nil }
        if origin == ownOrigin { return [] }
        var changes: [WatchRegistry.Change] = []
        for line in bytes[(newline + 1)...].split(separator: 0x0A) {
            guard case .array(let fields)? = try? JSONValue(parsing: Array(line)), fields.count == 4,
                case .string(let key) = fields[0], !key.isEmpty, key.utf8.count <= StorageLimits.maxKeyBytes + 2 * Caller.maxNameBytes + 2,
                let version = fields[1].int64Value, version > 0,
                case .bool(let deleted) = fields[2], case .bool(let expired) = fields[3]
            else { return nil }
            changes.append(WatchRegistry.Change(key: key, version: version, deleted: deleted, expired: expired))
        }
        return changes.isEmpty ? nil : changes
    }
}
