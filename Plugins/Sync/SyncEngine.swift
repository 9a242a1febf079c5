import CSOPCore
import CSOPPluginKit
import Synchronization

/// The `sync` domain without the C boundary: validates requests, keeps subscriptions and
/// presence, and delivers messages locally or through a ``ClusterTransport``.
///
/// Operations complete through `complete`, inline for local work and later for anything
/// that waits on PostgreSQL.
final class SyncEngine: Sendable {
    typealias Completion = @Sendable (Result<JSONValue, CSOPError>) -> Void

    /// The sync operations, in the order the descriptor lists them.
    enum Operation: String, PluginOperation {
        case broadcast, subscribe, unsubscribe, presence, leave, health, history
    }

    static let maxEventFilters = 64
    /// `sync.history`'s `limit`: default and most.
    static let defaultHistoryLimit = 100
    static let maxHistoryLimit = 1000

    let configuration: SyncConfiguration
    /// Identifies this instance as the `origin` of its messages.
    let instanceID: String
    let registry: SubscriptionRegistry
    private let localPresence = LocalPresence()
    /// Local mode's history, when a channel keeps one.
    private let localHistory: LocalHistory?
    /// Broadcasts accepted (before they are sent: one that then fails counts too), for the metrics.
    let published = Atomic<Int>(0)
    let cluster: ClusterTransport?

    /// - Parameters:
    ///   - emit: receives each event object as serialized JSON.
    ///   - log: receives diagnostics.
    init(
        configuration: SyncConfiguration,
        instanceID: String = SyncClock.randomHex(),
        emit: @escaping @Sendable ([UInt8]) -> Void,
        log: @escaping @Sendable (PluginHost.LogLevel, String) -> Void = { _, _ in }
    ) {
        self.configuration = configuration
        self.instanceID = instanceID
        localHistory = configuration.postgres == nil && configuration.history.isOn ? LocalHistory(policy: configuration.history) : nil
        let registry = SubscriptionRegistry(maxSubscriptions: configuration.maxSubscriptions, history: localHistory, emit: emit)
        self.registry = registry
        if let postgres = configuration.postgres {
            cluster = ClusterTransport(
                postgres: postgres, configuration: configuration, instanceID: instanceID, registry: registry, log: log)
            cluster?.start()
        } else {
            cluster = nil
        }
    }

    var mode: String { cluster == nil ? "local" : "cluster" }

    /// `sync.health`, for `/readyz`: local mode is always ready; cluster mode while its
    /// PostgreSQL connection is up (`detail` gives the last connection error otherwise).
    var health: JSONValue {
        guard let cluster else { return ["ready": true, "mode": "local"] }
        var result: JSONObject = ["ready": .bool(cluster.isConnected), "mode": "cluster"]
        if !cluster.isConnected, let failure = cluster.lastFailure { result["detail"] = .string(failure) }
        return .object(result)
    }

    /// Runs `operation` and completes exactly once.
    /// - Parameters:
    ///   - caller: who the call runs for (nil: the local owner). Its tenant's channels,
    ///     subscriptions and presence are apart from everyone else's (``SyncScope``), and its
    ///     presence user is its subject.
    ///   - commit: asked right before a broadcast is delivered or sent, or a presence row
    ///     written; when it says no (the host already answered the call `TIMEOUT`), nothing goes
    ///     out or changes.
    func perform(
        _ operation: Operation, _ payload: JSONValue, caller: Caller? = nil, commit: @escaping @Sendable () -> Bool = { true },
        complete: @escaping Completion
    ) {
        let scope = SyncScope(caller)
        do throws(CSOPError) {
            switch operation {
            case .broadcast: try broadcast(payload, scope, commit: commit, complete: complete)
            case .subscribe: try subscribe(payload, scope, commit: commit, complete: complete)
            case .unsubscribe: complete(.success(try unsubscribe(payload, scope)))
            case .presence: try presence(payload, scope, subject: caller?.subject, commit: commit, complete: complete)
            case .leave: try leave(payload, scope, subject: caller?.subject, commit: commit, complete: complete)
            case .health:
                _ = try Fields(payload, path: "payload", allowed: [])
                complete(.success(health))
            case .history: try history(payload, scope, complete: complete)
            }
        } catch {
            complete(.failure(error))
        }
    }

    /// Async form of ``perform(_:_:caller:commit:complete:)`` for tests and tools.
    func perform(_ operation: Operation, _ payload: JSONValue, caller: Caller? = nil) async -> Result<JSONValue, CSOPError> {
        await withCheckedContinuation { continuation in
            perform(operation, payload, caller: caller) { continuation.resume(returning: $0) }
        }
    }

    /// Stops the cluster transport; with `goodbye`, this instance's presence entries are
    /// removed and announced first.
    func shutdown(goodbye: Bool = true) async {
        await cluster?.shutdown(goodbye: goodbye)
    }

    private func broadcast(
        _ payload: JSONValue, _ scope: SyncScope, commit: @escaping @Sendable () -> Bool, complete: @escaping Completion
    ) throws(CSOPError) {
        let fields = try Fields(payload, path: "payload", allowed: ["event", "data", "channel"])
        let channel = try SyncNames.channel(fields)
        let event = try fields.requiredString("event", nonEmpty: false)
        try SyncNames.event(event, field: "payload.event")
        if let reserved = SyncNames.reservedEventPrefixes.first(where: { event.hasPrefix($0) }) {
            throw .invalidPayload(
                "payload.event must not start with \"\(reserved)\"; those events come from the plugin (presence and recovery)")
        }
        let data = (fields["data"] ?? .null).serialized()
        if data.count > configuration.maxPayloadBytes {
            throw .invalidPayload(
                "payload.data is \(data.count) bytes as JSON; the limit is \(configuration.maxPayloadBytes) (config maxPayloadBytes)")
        }
        let message = SyncMessage(
            channel: scope.keptChannel(channel), event: event, data: data, timestamp: WallClock.milliseconds(), origin: instanceID)
        let result: JSONValue = [
            "sent": true, "channel": .string(channel), "event": .string(event), "mode": .string(mode),
        ]
        published.add(1, ordering: .relaxed)
        guard let cluster else {
            guard commit() else { return complete(.failure(ClusterTransport.droppedUnsent)) }
            registry.deliver(message)
            complete(.success(result))
            return
        }
        cluster.publish(message, commit: commit) { outcome in
            complete(
                outcome.map { sent in
                    // On a channel with history: where the message is, for a later `since`.
                    guard let offset = sent.offset, let epoch = sent.epoch, case .object(var object) = result else { return result }
                    object["offset"] = .int(offset)
                    object["epoch"] = .string(epoch)
                    return .object(object)
                })
        }
    }

    private func subscribe(
        _ payload: JSONValue, _ scope: SyncScope, commit: @escaping @Sendable () -> Bool, complete: @escaping Completion
    ) throws(CSOPError) {
        let fields = try Fields(payload, path: "payload", allowed: ["channel", "events", "since"])
        let channel = try SyncNames.channel(fields)
        var events: Set<String>?
        if let list = try fields.array("events", maxCount: Self.maxEventFilters) {
            if list.isEmpty { throw .invalidPayload("payload.events must not be empty; omit it to receive every event") }
            var names = Set<String>()
            for (index, value) in list.enumerated() {
                guard case .string(let name) = value else {
                    throw .invalidPayload("payload.events[\(index)] must be a string, got \(value.typeName)")
                }
                try SyncNames.event(name, field: "payload.events[\(index)]")
                names.insert(name)
            }
            events = names
        }
        let since = try HistoryPosition.read(fields)
        let kept = scope.keptChannel(channel)
        var answer: JSONObject = ["subscribed": true, "channel": .string(channel)]
        guard configuration.history.limits(forKept: kept) != nil else {
            // No history to recover from: a `since` cannot be honoured, and the answer says so.
            if since != nil { answer["recovered"] = false }
            let id = try registry.subscribe(channel: kept, events: events)
            answer["subscription"] = .string(id)
            if let cluster, cluster.isStarting {
                // The first LISTEN is still being set up; answer once messages can flow.
                Task {
                    await cluster.awaitStarted()
                    complete(.success(.object(answer)))
                }
            } else {
                complete(.success(.object(answer)))
            }
            return
        }
        if let follower = cluster?.follower {
            follower.subscribe(.init(channel: kept, events: events, since: since, answer: answer, commit: commit, complete: complete))
            return
        }
        guard let localHistory else { return complete(.failure(CSOPError(.notInitialized, "sync history is not set up"))) }
        // Local mode: no delivery runs while the backlog is read and the subscription made, so
        // the backlog ends exactly where live messages begin.
        var failure: CSOPError?
        registry.exclusively {
            // Without `since`, only the epoch and top are needed: no messages are read.
            let page = since.map { localHistory.read(channel: kept, after: $0.offset, limit: Int.max) }
                ?? localHistory.read(channel: kept, after: nil, limit: 0)
            var backlog: [SyncMessage] = []
            if let since {
                let recovered = since.isContinued(by: page, upTo: page.top)
                answer["recovered"] = .bool(recovered)
                if recovered { backlog = page.messages }
            }
            answer["epoch"] = .string(page.epoch)
            answer["offset"] = .int(page.top)
            do throws(CSOPError) {
                let id = try registry.subscribe(channel: kept, events: events)
                answer["subscription"] = .string(id)
                complete(.success(.object(answer)))
                for message in backlog { registry.deliver(message, only: id) }
            } catch {
                failure = error
            }
        }
        if let failure { complete(.failure(failure)) }
    }

    /// `sync.history {channel, limit, since}`: the retained messages after `since` (oldest
    /// first), or the newest `limit`; with the stream's epoch and top offset.
    private func history(_ payload: JSONValue, _ scope: SyncScope, complete: @escaping Completion) throws(CSOPError) {
        let fields = try Fields(payload, path: "payload", allowed: ["channel", "limit", "since"])
        let channel = try SyncNames.channel(fields)
        let limit = Int(try fields.int("limit", in: 1...Int64(Self.maxHistoryLimit)) ?? Int64(Self.defaultHistoryLimit))
        let since = try HistoryPosition.read(fields)
        let kept = scope.keptChannel(channel)
        guard configuration.history.limits(forKept: kept) != nil else {
            throw CSOPError(
                .invalidPayload,
                "channel \"\(channel)\" keeps no history; set config.history (size, or a rule in config.history.channels) to keep some")
        }
        func answer(_ page: HistoryPage) -> JSONValue {
            var object: JSONObject = [
                "channel": .string(channel), "epoch": .string(page.epoch), "offset": .int(page.top),
                "messages": .array(page.messages.map(HistoryPage.json)),
            ]
            if let since { object["recovered"] = .bool(since.isContinued(by: page, upTo: page.messages.last?.offset ?? page.top)) }
            return .object(object)
        }
        // A `since` from another epoch reads from the start of this one.
        func fromStart(_ page: HistoryPage) -> Bool { since.map { !$0.isIn(page.epoch) } ?? false }
        guard let cluster else {
            guard let localHistory else { return complete(.failure(CSOPError(.notInitialized, "sync history is not set up"))) }
            var page = localHistory.read(channel: kept, after: since?.offset, limit: limit)
            if fromStart(page) { page = localHistory.read(channel: kept, after: 0, limit: limit) }
            return complete(.success(answer(page)))
        }
        Task {
            do throws(CSOPError) {
                var page = try await cluster.readHistory(channel: kept, after: since?.offset, limit: limit)
                if fromStart(page) { page = try await cluster.readHistory(channel: kept, after: 0, limit: limit) }
                complete(.success(answer(page)))
            } catch {
                complete(.failure(error))
            }
        }
    }

    private func unsubscribe(_ payload: JSONValue, _ scope: SyncScope) throws(CSOPError) -> JSONValue {
        let fields = try Fields(payload, path: "payload", allowed: ["subscription", "channel"])
        let subscription = try fields.string("subscription", maxLength: 64)
        if subscription != nil && fields.has("channel") {
            throw .invalidPayload("give either payload.subscription or payload.channel, not both")
        }
        if let subscription {
            // Another tenant's subscription is not found, as an unknown one.
            guard let kept = registry.unsubscribe(id: subscription, if: scope.owns) else {
                throw CSOPError(
                    .subscriptionFailed,
                    "payload.subscription names no active subscription; use the id sync.subscribe returned")
            }
            return ["unsubscribed": true, "channel": .string(SyncScope.visibleChannel(kept)), "count": 1]
        }
        guard fields.has("channel") else {
            throw .invalidPayload("payload.subscription or payload.channel is required")
        }
        let channel = try SyncNames.channel(fields, required: true)
        let count = registry.unsubscribe(channel: scope.keptChannel(channel))
        return ["unsubscribed": .bool(count > 0), "channel": .string(channel), "count": .int(Int64(count))]
    }

    private func presence(
        _ payload: JSONValue, _ scope: SyncScope, subject: String?, commit: @escaping @Sendable () -> Bool,
        complete: @escaping Completion
    ) throws(CSOPError) {
        let fields = try Fields(payload, path: "payload", allowed: ["channel", "userId", "metadata"])
        let visible = try SyncNames.channel(fields)
        let channel = scope.keptChannel(visible)
        let userID = try Self.userID(fields, subject: subject) ?? "user-\(SyncClock.randomHex())"
        try SyncNames.userID(userID, field: "payload.userId")
        let metadata = try fields.nested("metadata").object
        for key in ["userId", "onlineAt"] where metadata[key] != nil {
            throw .invalidPayload("payload.metadata.\(key) is reserved; the plugin sets it")
        }
        let metadataJSON = JSONValue.object(metadata).serialized()
        let size = metadataJSON.count
        if size > SyncNames.maxMetadataBytes {
            throw .invalidPayload("payload.metadata is \(size) bytes as JSON; the limit is \(SyncNames.maxMetadataBytes)")
        }
        func result(_ users: [PresenceUser]) -> JSONValue {
            [
                "channel": .string(visible), "userId": .string(userID), "online": .int(Int64(users.count)),
                "users": .array(users.map(\.json)),
            ]
        }
        guard let cluster else {
            guard commit() else { return complete(.failure(ClusterTransport.droppedUnsent)) }
            let tracked = localPresence.track(channel: channel, userID: userID, metadata: metadata)
            if tracked.joined { registry.deliver(presenceMessage(channel, "presence.join", tracked.user.joinData)) }
            complete(.success(result(tracked.users)))
            return
        }
        Task {
            do throws(CSOPError) {
                let users = try await cluster.track(
                    channel: channel, userID: userID, metadata: metadata,
                    metadataText: String(decoding: metadataJSON, as: UTF8.self), commit: commit)
                complete(.success(result(users)))
            } catch {
                complete(.failure(error))
            }
        }
    }

    private func leave(
        _ payload: JSONValue, _ scope: SyncScope, subject: String?, commit: @escaping @Sendable () -> Bool, complete: @escaping Completion
    ) throws(CSOPError) {
        let fields = try Fields(payload, path: "payload", allowed: ["channel", "userId"])
        let visible = try SyncNames.channel(fields)
        let channel = scope.keptChannel(visible)
        guard let userID = try Self.userID(fields, subject: subject) else {
            throw .invalidPayload("payload.userId is required (a string)")
        }
        try SyncNames.userID(userID, field: "payload.userId")
        func result(_ left: Bool) -> JSONValue {
            ["left": .bool(left), "channel": .string(visible), "userId": .string(userID)]
        }
        guard let cluster else {
            guard commit() else { return complete(.failure(ClusterTransport.droppedUnsent)) }
            let left = localPresence.leave(channel: channel, userID: userID)
            if left {
                registry.deliver(presenceMessage(channel, "presence.leave", PresenceUser.leaveData(userID: userID, reason: "left")))
            }
            complete(.success(result(left)))
            return
        }
        Task {
            do throws(CSOPError) {
                complete(.success(result(try await cluster.leave(channel: channel, userID: userID, commit: commit))))
            } catch {
                complete(.failure(error))
            }
        }
    }

    /// The presence user a call names: for a caller, its subject (a payload `userId` naming
    /// anyone else is `FORBIDDEN`); for the owner, the payload's `userId`, if any.
    private static func userID(_ fields: Fields, subject: String?) throws(CSOPError) -> String? {
        let given = try fields.string("userId", nonEmpty: false)
        guard let subject else { return given }
        if let given, given != subject {
            throw CSOPError(.forbidden, "payload.userId must be the caller's own subject; omit it to use the subject")
        }
        return subject
    }

    private func presenceMessage(_ channel: String, _ event: String, _ data: [UInt8]) -> SyncMessage {
        SyncMessage(channel: channel, event: event, data: data, timestamp: WallClock.milliseconds(), origin: instanceID)
    }
}
