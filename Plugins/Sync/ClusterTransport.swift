import CSOPCore
import CSOPPluginKit
import CSOPPostgres
import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// Carries messages and presence between processes through one PostgreSQL database.
///
/// Two connections per instance: one LISTENs on ``SyncConfiguration/clusterChannel``, the
/// other publishes (batched `pg_notify` in one statement, so publish order is commit order)
/// and runs presence queries. Own messages are delivered to local subscribers when their
/// NOTIFY has committed and their echoes are skipped, so each subscriber sees a message once.
/// On connection loss both connections are dropped, broadcasts fail with `NOT_CONNECTED`,
/// and a supervisor reconnects with jittered exponential backoff, then LISTENs again.
final class ClusterTransport: Sendable {
    private enum Phase { case starting, connected, disconnected, stopped }

    private struct Pending {
        var message: SyncMessage
        /// Asked right before the message is sent: false drops it (its call was answered).
        var commit: @Sendable () -> Bool
        /// Gets the message as sent: with its offset and epoch on a channel with history.
        var completion: @Sendable (Result<SyncMessage, CSOPError>) -> Void
    }

    private struct State {
        var phase = Phase.starting
        var listen: PostgresConnection?
        var command: PostgresConnection?
        var pending: [Pending] = []
        var startWaiters: [CheckedContinuation<Void, Never>] = []
        var tasks: [Task<Void, Never>] = []
        /// Why the last connection attempt failed or the connection was lost, for NOT_CONNECTED.
        var lastFailure: String?
    }

    static let maxBatchMessages = 512
    static let historySweepInterval: Double = 5000
    static let maxBatchBytes = 2 * 1024 * 1024

    private let postgres: PostgresURL
    private let configuration: SyncConfiguration
    private let instanceID: String
    private let registry: SubscriptionRegistry
    private let log: @Sendable (PluginHost.LogLevel, String) -> Void
    private let logger = Logger(label: "csop.sync", factory: { _ in SwiftLogNoOpLogHandler() })
    private let state = Mutex(State())
    private let nextSequence = Atomic<UInt64>(1)
    /// Times the connection was lost and a reconnect began, for the metrics.
    let reconnects = Atomic<Int>(0)
    /// NOTIFY frames dropped as malformed or not ours, for the metrics.
    let droppedFrames = Atomic<Int>(0)
    private let wake: AsyncStream<Void>
    private let wakeContinuation: AsyncStream<Void>.Continuation
    private let history: ClusterHistory
    /// Delivers the channels that keep history; nil when none does.
    let follower: HistoryFollower?

    init(
        postgres: PostgresURL, configuration: SyncConfiguration, instanceID: String, registry: SubscriptionRegistry,
        log: @escaping @Sendable (PluginHost.LogLevel, String) -> Void
    ) {
        self.postgres = postgres
        self.configuration = configuration
        self.instanceID = instanceID
        self.registry = registry
        self.log = log
        (wake, wakeContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        history = ClusterHistory(cluster: configuration.clusterChannel, origin: instanceID, logger: logger)
        follower = configuration.history.isOn ? HistoryFollower(registry: registry, log: log) : nil
    }

    func start() {
        // History is read over the LISTEN connection: it is otherwise idle, and its loss (and
        // reconnect) is what decides what must be read again.
        follower?.start { [weak self] channel, after, limit throws(CSOPError) in
            guard let self else { throw CSOPError(.notInitialized, "the sync plugin is shutting down") }
            return try await self.readHistory(channel: channel, after: after, limit: limit, over: .listen)
        }
        let supervisor = Task { await self.supervise() }
        let writer = Task {
            for await _ in self.wake { await self.drain() }
        }
        let heartbeat = Task { await self.heartbeatLoop() }
        state.withLock { $0.tasks = [supervisor, writer, heartbeat] }
    }

    /// True until the first connection attempt has succeeded or failed.
    var isStarting: Bool { state.withLock { $0.phase == .starting } }

    var isConnected: Bool { state.withLock { $0.phase == .connected } }

    /// The last connection error, if any (no credentials in it: ``PostgresURL/describe(_:)``).
    var lastFailure: String? { state.withLock { $0.lastFailure } }

    /// Returns once the first connection attempt has concluded.
    func awaitStarted() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { state -> Bool in
                guard state.phase == .starting else { return true }
                state.startWaiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    /// Queues a message; `completion` runs after it is committed (and delivered to this
    /// instance's subscribers) or failed.
    /// - Parameter commit: asked right before the message goes out; when it says no (the
    ///   caller was already answered `TIMEOUT`), the message is dropped, never sent.
    func publish(
        _ message: SyncMessage, commit: @escaping @Sendable () -> Bool = { true },
        completion: @escaping @Sendable (Result<SyncMessage, CSOPError>) -> Void
    ) {
        let failure = state.withLock { state -> CSOPError? in
            switch state.phase {
            case .starting, .connected:
                state.pending.append(Pending(message: message, commit: commit, completion: completion))
                return nil
            case .disconnected: return Self.notConnected(after: state.lastFailure)
            case .stopped: return CSOPError(.notInitialized, "the sync plugin is shutting down")
            }
        }
        if let failure { completion(.failure(failure)) } else { wakeContinuation.yield() }
    }

    func publish(_ message: SyncMessage) async throws(CSOPError) {
        let result = await withCheckedContinuation { continuation in
            publish(message) { continuation.resume(returning: $0) }
        }
        _ = try result.get()
    }

    /// A broadcast, join or leave whose call timed out before it took effect: it never did.
    static let droppedUnsent = CSOPError(.timeout, "the call was cancelled (timed out) before it took effect; nothing was sent or changed", retryable: true)

    /// `NOT_CONNECTED`, saying why when it is known (a TLS problem, say: retrying will not fix it).
    static func notConnected(after failure: String?) -> CSOPError {
        let reason = failure.map { "; last error: \($0)" } ?? ""
        return CSOPError(
            .notConnected, "the sync plugin is not connected to PostgreSQL (it is reconnecting\(reason)); try again", retryable: true)
    }

    // MARK: Presence

    /// Tracks a user (joining if new) and returns the channel's current users.
    /// - Parameters:
    ///   - metadataText: `metadata` serialized as JSON.
    ///   - commit: asked right before the row is written; no (the call was answered) writes nothing.
    func track(
        channel: String, userID: String, metadata: JSONObject, metadataText: String, commit: @Sendable () -> Bool = { true }
    ) async throws(CSOPError) -> [PresenceUser] {
        let connection = try await commandConnection()
        guard commit() else { throw Self.droppedUnsent }
        let now = WallClock.milliseconds()
        var joined: PresenceUser?
        try await run(connection) { [configuration, instanceID] in
            let rows = try await connection.queryUnlessClosed(
                """
                INSERT INTO csop_sync_presence (cluster, channel, user_id, instance, metadata, online_at, expires_at)
                VALUES (\(configuration.clusterChannel), \(channel), \(userID), \(instanceID), \(metadataText)::jsonb, \(now),
                        now() + \(configuration.rowLifetime)::float8 * interval '1 millisecond')
                ON CONFLICT (cluster, channel, user_id) DO UPDATE
                SET instance = EXCLUDED.instance, metadata = EXCLUDED.metadata, heartbeat_at = now(),
                    expires_at = EXCLUDED.expires_at
                RETURNING (xmax = 0), online_at
                """, logger: self.logger)
            for try await (inserted, onlineAt) in rows.decode((Bool, Int64).self) where inserted {
                joined = PresenceUser(userID: userID, onlineAt: onlineAt, metadata: metadata)
            }
        }
        if let joined {
            try await publish(
                SyncMessage(
                    channel: channel, event: "presence.join", data: joined.joinData, timestamp: now, origin: instanceID))
        }
        return try await users(channel: channel, connection: connection)
    }

    /// Removes a user; false when it was not present.
    /// - Parameter commit: asked right before the row is deleted; no (the call was answered) deletes nothing.
    func leave(channel: String, userID: String, commit: @Sendable () -> Bool = { true }) async throws(CSOPError) -> Bool {
        let connection = try await commandConnection()
        guard commit() else { throw Self.droppedUnsent }
        var left = false
        try await run(connection) { [configuration] in
            let rows = try await connection.queryUnlessClosed(
                """
                DELETE FROM csop_sync_presence
                WHERE cluster = \(configuration.clusterChannel) AND channel = \(channel) AND user_id = \(userID)
                RETURNING user_id
                """, logger: self.logger)
            for try await _ in rows { left = true }
        }
        if left { try await publishLeave(channel: channel, userID: userID, reason: "left") }
        return left
    }

    private func users(channel: String, connection: PostgresConnection) async throws(CSOPError) -> [PresenceUser] {
        var users: [PresenceUser] = []
        try await run(connection) { [configuration] in
            let rows = try await connection.queryUnlessClosed(
                """
                SELECT user_id, online_at, metadata::text FROM csop_sync_presence
                WHERE cluster = \(configuration.clusterChannel) AND channel = \(channel) AND expires_at > now()
                ORDER BY online_at, user_id
                """, logger: self.logger)
            for try await (userID, onlineAt, metadataText) in rows.decode((String, Int64, String).self) {
                let metadata = (try? JSONValue(parsing: metadataText))?.objectValue ?? JSONObject()
                users.append(PresenceUser(userID: userID, onlineAt: onlineAt, metadata: metadata))
            }
        }
        return users
    }

    private func publishLeave(channel: String, userID: String, reason: String) async throws(CSOPError) {
        try await publish(
            SyncMessage(
                channel: channel, event: "presence.leave", data: PresenceUser.leaveData(userID: userID, reason: reason),
                timestamp: WallClock.milliseconds(), origin: instanceID))
    }

    /// Every heartbeat: extend this instance's users. Every half heartbeat: sweep anyone's
    /// expired users (and, every 5 s, this cluster's expired history). Rows live
    /// `presenceExpiry − heartbeat/2`, so a dead process's users are gone within
    /// `presenceExpiry` of its last heartbeat.
    private func heartbeatLoop() async {
        var lastRefresh = monotonicMilliseconds()
        var lastHistorySweep = lastRefresh
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(configuration.sweepInterval))
            guard !Task.isCancelled, let connection = state.withLock({ $0.phase == .connected ? $0.command : nil }) else {
                continue
            }
            do throws(CSOPError) {
                let now = monotonicMilliseconds()
                if now - lastRefresh >= Double(configuration.heartbeatInterval - configuration.sweepInterval / 2) {
                    lastRefresh = now
                    try await run(connection) { [configuration, instanceID] in
                    try await connection.queryUnlessClosed(
                        """
                        UPDATE csop_sync_presence
                        SET heartbeat_at = now(), expires_at = now() + \(configuration.rowLifetime)::float8 * interval '1 millisecond'
                        WHERE cluster = \(configuration.clusterChannel) AND instance = \(instanceID)
                        """, logger: self.logger)
                    }
                }
                var expired: [(String, String)] = []
                try await run(connection) { [configuration] in
                    let rows = try await connection.queryUnlessClosed(
                        """
                        DELETE FROM csop_sync_presence
                        WHERE cluster = \(configuration.clusterChannel) AND expires_at < now()
                        RETURNING channel, user_id
                        """, logger: self.logger)
                    for try await row in rows.decode((String, String).self) { expired.append(row) }
                }
                for (channel, userID) in expired {
                    try await publishLeave(channel: channel, userID: userID, reason: "expired")
                }
                // Expired history, every 5 s at most: never in the way of the presence refresh.
                if configuration.history.isOn, now - lastHistorySweep >= Self.historySweepInterval {
                    lastHistorySweep = now
                    try await run(connection) { [history] in try await history.sweep(on: connection) }
                }
            } catch {
                log(.warning, "sync presence heartbeat failed: \(error.message)")
            }
        }
    }

    // MARK: Lifecycle

    /// Stops everything. With `goodbye`, removes this instance's users first and announces
    /// their `presence.leave` (reason `shutdown`).
    func shutdown(goodbye: Bool) async {
        if goodbye, let connection = state.withLock({ $0.phase == .connected ? $0.command : nil }) {
            var gone: [(String, String)] = []
            do throws(CSOPError) {
                try await run(connection) { [configuration, instanceID] in
                    let rows = try await connection.queryUnlessClosed(
                        """
                        DELETE FROM csop_sync_presence
                        WHERE cluster = \(configuration.clusterChannel) AND instance = \(instanceID)
                        RETURNING channel, user_id
                        """, logger: self.logger)
                    for try await row in rows.decode((String, String).self) { gone.append(row) }
                }
                for (channel, userID) in gone { try await publishLeave(channel: channel, userID: userID, reason: "shutdown") }
            } catch {
                log(.warning, "sync could not remove its presence entries at shutdown: \(error.message)")
            }
        }
        let (tasks, pending, waiters, connections) = state.withLock { state in
            state.phase = .stopped
            defer {
                state.pending = []
                state.startWaiters = []
                state.tasks = []
                state.listen = nil
                state.command = nil
            }
            return (state.tasks, state.pending, state.startWaiters, [state.listen, state.command].compactMap { $0 })
        }
        wakeContinuation.finish()
        follower?.stop()
        for task in tasks { task.cancel() }
        for waiter in waiters { waiter.resume() }
        let stopped = CSOPError(.notInitialized, "the sync plugin is shutting down")
        for item in pending { item.completion(.failure(stopped)) }
        for connection in connections { try? await connection.close() }
    }

    private func supervise() async {
        let backoff = BackoffPolicy(
            baseMilliseconds: 100, capMilliseconds: Double(configuration.reconnectMaxDelay), jitter: 0.5)
        var attempt = 0
        while !Task.isCancelled && !isStopped {
            do {
                let listen = try await connect(id: 1)
                let command: PostgresConnection
                do {
                    command = try await connect(id: 2)
                } catch {
                    try? await listen.close()
                    throw error
                }
                let keep = state.withLock { state -> Bool in
                    guard state.phase != .stopped else { return false }
                    state.listen = listen
                    state.command = command
                    return true
                }
                guard keep else {
                    try? await listen.close()
                    try? await command.close()
                    return
                }
                // Losing either connection drops both, which ends the LISTEN loop below.
                command.closeFuture.whenComplete { _ in listen.closeInBackground() }
                listen.closeFuture.whenComplete { _ in command.closeInBackground() }
                try await ensureSchema(command)
                try await listen.listen(on: configuration.clusterChannel) { notifications in
                    markConnected(command)
                    attempt = 0
                    var receiver = ClusterReceiver(ownOrigin: instanceID, maxMessageBytes: configuration.maxPayloadBytes)
                    var droppedLog = DroppedFrameLog()
                    for try await notification in notifications {
                        let malformed = receiver.malformed
                        for message in receiver.receive(notification.payload, advanced: { follower?.advanced($0) }) {
                            registry.deliver(message)
                        }
                        if receiver.malformed > malformed { droppedFrames.add(receiver.malformed - malformed, ordering: .relaxed) }
                        if receiver.malformed > malformed,
                            let line = droppedLog.dropped(
                                receiver.malformed - malformed, problem: receiver.lastProblem ?? "unreadable", at: .now)
                        {
                            log(.warning, line)
                        }
                    }
                }
            } catch {
                if !isStopped {
                    let reason = postgres.describe(connectionError: error)
                    state.withLock { $0.lastFailure = reason }
                    log(.warning, "sync lost PostgreSQL at \(postgres) (\(reason)); reconnecting")
                    reconnects.add(1, ordering: .relaxed)
                }
            }
            markDisconnected()
            if isStopped { return }
            let delay = backoff.delay(afterAttempt: attempt, random: Double.random(in: 0..<1))
            try? await Task.sleep(for: .milliseconds(delay))
            attempt += 1
        }
    }

    /// `csop-sync-<instance id>`, the sessions' application_name.
    var applicationName: String { "csop-sync-\(instanceID)" }

    private var isStopped: Bool { state.withLock { $0.phase == .stopped } }

    private func connect(id: Int) async throws -> PostgresConnection {
        var config = postgres.connectionConfiguration(connectTimeoutMilliseconds: configuration.connectTimeout)
        // Lets operators (and tests) find this instance's sessions in pg_stat_activity.
        config.options.additionalStartupParameters = [("application_name", applicationName)]
        return try await PostgresConnection.connect(configuration: config, id: id, logger: logger)
    }

    private func ensureSchema(_ connection: PostgresConnection) async throws {
        // Two processes creating the table at once can collide; the loser retries.
        for attempt in 1...3 {
            do {
                try await connection.queryUnlessClosed(
                    """
                    CREATE TABLE IF NOT EXISTS csop_sync_presence (
                        cluster text NOT NULL, channel text NOT NULL, user_id text NOT NULL, instance text NOT NULL,
                        metadata jsonb NOT NULL DEFAULT '{}'::jsonb, online_at bigint NOT NULL,
                        heartbeat_at timestamptz NOT NULL DEFAULT now(), expires_at timestamptz NOT NULL,
                        PRIMARY KEY (cluster, channel, user_id))
                    """, logger: logger)
                if configuration.history.isOn {
                    for statement in ClusterHistory.schema {
                        try await connection.queryUnlessClosed(PostgresQuery(unsafeSQL: statement), logger: logger)
                    }
                }
                return
            } catch {
                if attempt == 3 || connection.isClosed { throw error }
                try await Task.sleep(for: .milliseconds(50 * attempt))
            }
        }
    }

    private func markConnected(_ command: PostgresConnection) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard state.phase != .stopped else { return [] }
            state.phase = .connected
            state.lastFailure = nil
            defer { state.startWaiters = [] }
            return state.startWaiters
        }
        for waiter in waiters { waiter.resume() }
        log(.info, "sync connected to \(postgres) (\(postgres.tlsSummary)), listening on \(configuration.clusterChannel)")
        // Whatever was published while this instance was not listening is in the history.
        follower?.catchUp()
        wakeContinuation.yield()
    }

    private func markDisconnected() {
        let (pending, waiters, connections, failure) = state.withLock { state in
            if state.phase != .stopped { state.phase = .disconnected }
            defer {
                state.pending = []
                state.startWaiters = []
                state.listen = nil
                state.command = nil
            }
            return (
                state.pending, state.startWaiters, [state.listen, state.command].compactMap { $0 },
                Self.notConnected(after: state.lastFailure)
            )
        }
        for connection in connections { connection.closeInBackground() }
        for waiter in waiters { waiter.resume() }
        for item in pending { item.completion(.failure(failure)) }
    }

    enum Connection { case listen, command }

    /// A kept channel's history (its stream made if new): retained messages after `after`,
    /// oldest first, at most `limit`; the newest `limit` when `after` is nil.
    func readHistory(channel: String, after: Int64?, limit: Int, over which: Connection = .command) async throws(CSOPError) -> HistoryPage {
        let connection = try await commandConnection(which)
        var page: HistoryPage?
        try await run(connection) { [history] in
            page = try await history.read(channel: channel, after: after, limit: limit, on: connection)
        }
        guard let page else { throw CSOPError(.executionFailed, "the history of a channel could not be read; try again", retryable: true) }
        return page
    }

    /// The command (or LISTEN) connection, after the first connection attempt has concluded.
    private func commandConnection(_ which: Connection = .command) async throws(CSOPError) -> PostgresConnection {
        if isStarting { await awaitStarted() }
        let result = state.withLock { state -> Result<PostgresConnection, CSOPError> in
            switch state.phase {
            case .connected: if let connection = which == .command ? state.command : state.listen { return .success(connection) }
            case .stopped: return .failure(CSOPError(.notInitialized, "the sync plugin is shutting down"))
            default: break
            }
            return .failure(Self.notConnected(after: state.lastFailure))
        }
        return try result.get()
    }

    private func drain() async {
        while true {
            let taken = state.withLock { state -> ([Pending], PostgresConnection?) in
                guard state.phase == .connected, let command = state.command, !state.pending.isEmpty else { return ([], nil) }
                var count = 0
                var bytes = 0
                while count < state.pending.count, count < Self.maxBatchMessages, bytes < Self.maxBatchBytes {
                    bytes += state.pending[count].message.data.count
                    count += 1
                }
                let batch = Array(state.pending.prefix(count))
                state.pending.removeFirst(count)
                return (batch, command)
            }
            guard let connection = taken.1 else { return }
            // The point of no return: a message whose call was answered meanwhile is dropped.
            var batch: [Pending] = []
            for item in taken.0 {
                if item.commit() {
                    batch.append(item)
                } else {
                    item.completion(.failure(Self.droppedUnsent))
                }
            }
            if batch.isEmpty { continue }
            // Channels that keep history are numbered and stored; the rest go out whole in NOTIFYs.
            var kept: [Pending] = []
            var limits: [HistoryPolicy.Limits] = []
            if let follower {
                batch.removeAll { item in
                    guard let limit = configuration.history.limits(forKept: item.message.channel) else { return false }
                    kept.append(item)
                    limits.append(limit)
                    return true
                }
                if !kept.isEmpty { await publishKept(kept, limits: limits, on: connection, follower: follower) }
                if batch.isEmpty { continue }
            }
            let lines = batch.map { item in
                let sequence = nextSequence.wrappingAdd(1, ordering: .relaxed).oldValue
                return (sequence: sequence, bytes: item.message.line(sequence: sequence))
            }
            let frames = ClusterFrame.frames(origin: instanceID, lines: lines)
            do throws(CSOPError) {
                try await run(connection) { [configuration] in
                    let rows = try await connection.queryUnlessClosed(
                        "SELECT count(pg_notify(\(configuration.clusterChannel), f)) FROM unnest(\(frames)::text[]) AS f",
                        logger: self.logger)
                    for try await _ in rows {}
                }
                for item in batch {
                    registry.deliver(item.message)
                    item.completion(.success(item.message))
                }
            } catch {
                for item in batch { item.completion(.failure(error)) }
            }
        }
    }

    /// Stores and numbers messages of channels that keep history; each completes once this
    /// instance's subscriptions have it (the follower delivers in offset order).
    private func publishKept(
        _ kept: [Pending], limits: [HistoryPolicy.Limits], on connection: PostgresConnection, follower: HistoryFollower
    ) async {
        var numbered: [SyncMessage] = []
        do throws(CSOPError) {
            try await run(connection) { [history] in
                numbered = try await history.publish(kept.map(\.message), limits: limits, on: connection)
            }
        } catch {
            for item in kept { item.completion(.failure(error)) }
            return
        }
        let sent = numbered
        follower.own(sent) {
            for (item, message) in zip(kept, sent) { item.completion(.success(message)) }
        }
    }

    /// Runs a query, turning a lost connection into `NOT_CONNECTED` and anything else into
    /// `EXECUTION_FAILED` with the server's message (never the query or its parameters).
    private func run(_ connection: PostgresConnection, _ body: () async throws -> Void) async throws(CSOPError) {
        do {
            try await body()
        } catch {
            if connection.isClosed { throw Self.notConnected(after: state.withLock { $0.lastFailure }) }
            throw CSOPError(.executionFailed, "PostgreSQL failed: \(PostgresURL.describe(error))", retryable: true)
        }
    }
}
