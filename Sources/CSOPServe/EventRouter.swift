import CSOPCore
import CSOPHost
import Synchronization

/// Where a connection's events go: a WebSocket's outbox or an SSE stream.
protocol EventSink: AnyObject, Sendable {
    /// Queues one event (compact JSON). Called with the router's lock held: must be quick.
    func deliver(_ event: [UInt8])
}

/// Hands each plugin event to the connection that owns its subscription, and to nobody else.
///
/// Every sync event names its `subscription`; a connection that subscribed registers the id
/// it was given (``subscribeFinished(_:first:)``). The plugin may emit an event for a new
/// subscription before the connection has read the id from the subscribe response, so while
/// subscribes are in flight (``subscribeStarted()``) events for ids nobody holds yet are
/// kept, and delivered first when their owner registers: nothing between the subscribe and
/// its response is lost. Events that no connection owns are dropped (a gateway has no local
/// owner printing every event, as `csop run` does).
///
/// Ids are a plugin instance's own: after a reload replaced or removed a plugin, another
/// instance may hand out the same id. So an owner holds the domain and generation of the
/// instance that answered its subscribe, only that instance's events reach it, and when a
/// reload retires the instance (a `host.plugin` event), each of its subscriptions ends with
/// a `subscription.ended` event to its connection, which then forgets it. So does the crash
/// of an isolated plugin's child (`crashed`): the restarted child is a new generation.
final class EventRouter: Sendable {
    /// A registered subscription: where its events go, and which plugin instance made it.
    struct Owner: Sendable {
        let sink: any EventSink
        let domain: String
        let generation: Int
        /// Called when a reload ended the subscription (the connection forgets the id).
        let onEnd: @Sendable (String) -> Void
    }

    private struct Early {
        var plugin: String
        var generation: Int
        var bytes: [UInt8]
    }

    private struct State {
        var owners: [String: Owner] = [:]
        /// Subscribes dispatched and not yet answered.
        var subscribing = 0
        /// Events for unknown ids that arrived while `subscribing > 0`, by id, in order.
        var early: [String: [Early]] = [:]
        var earlyCount = 0
        /// By domain: every instance of this generation or older was replaced or removed.
        var retiredThrough: [String: Int] = [:]
    }

    private let state = Mutex(State())
    /// At most this many early events are kept (a subscribe answered slowly under a flood).
    private static let earlyLimit = 65_536

    init() {}

    /// Starts routing `host`'s events.
    /// - Returns: the listener token, for `removeEventListener`.
    func attach(to host: CSOPHost) -> UInt64 {
        host.addEventListener { [self] event in
            if event.plugin == "host" {
                retire(event.value)
            } else {
                route(event)
            }
        }
    }

    func route(_ event: HostEvent) {
        let bytes = event.json.bytes
        guard let id = Self.subscriptionID(in: bytes) else { return }
        state.withLock { state in
            if let owner = state.owners[id] {
                if owner.domain == event.plugin, owner.generation == event.generation { owner.sink.deliver(bytes) }
            } else if state.subscribing > 0, state.earlyCount < Self.earlyLimit {
                state.early[id, default: []].append(Early(plugin: event.plugin, generation: event.generation, bytes: bytes))
                state.earlyCount += 1
            }
        }
    }

    /// A `host.plugin` event: a reload replaced or removed a plugin, so the subscriptions its
    /// retired instances made end.
    private func retire(_ event: JSONValue) {
        // An isolated plugin's child that crashed took its subscriptions with it, as a removal does.
        guard event["type"] == "host.plugin", let change = event["change"]?.stringValue, ["replaced", "removed", "crashed"].contains(change),
            let domain = event["plugin"]?.stringValue, case .int(let generation)? = event["generation"]
        else { return }
        let through = Int(generation) - (change == "replaced" ? 1 : 0)
        let ended: [(String, Owner)] = state.withLock { state in
            state.retiredThrough[domain] = max(state.retiredThrough[domain] ?? 0, through)
            let ended = state.owners.filter { $0.value.domain == domain && $0.value.generation <= through }
            for (id, owner) in ended {
                state.owners.removeValue(forKey: id)
                owner.sink.deliver(Self.endedEvent(id, domain: domain, change: change))
            }
            return Array(ended)
        }
        for (id, owner) in ended { owner.onEnd(id) }
    }

    /// `{"type":"event","subscription":…,"event":"subscription.ended","data":{plugin, change, reason}}`.
    static func endedEvent(_ id: String, domain: String, change: String) -> [UInt8] {
        let reason =
            change == "crashed"
            ? "the \(domain) plugin's process crashed, and with it this subscription; subscribe again once it is back"
            : "a reload \(change) the \(domain) plugin, and with it this subscription; subscribe again"
        let data: JSONObject = ["plugin": .string(domain), "change": .string(change), "reason": .string(reason)]
        let event: JSONObject = [
            "type": "event", "subscription": .string(id), "event": "subscription.ended", "data": .object(data),
        ]
        return JSONValue.object(event).serialized()
    }

    /// A subscribe is about to be dispatched: hold events for ids nobody owns yet.
    func subscribeStarted() {
        state.withLock { $0.subscribing += 1 }
    }

    /// Its answer came. When it succeeded, `id` becomes `owner`'s: `first` (the response) is
    /// delivered, then the events held for `id` from the same instance, then every later one —
    /// unless a reload retired that instance meanwhile: then the subscription ends at once
    /// (`subscription.ended` after the response). A failed one passes nil.
    func subscribeFinished(_ subscription: (id: String, owner: Owner)?, first: [UInt8]?) {
        let endedID: String? = state.withLock { state in
            state.subscribing -= 1
            defer {
                if state.subscribing == 0 {
                    state.early.removeAll()
                    state.earlyCount = 0
                }
            }
            guard let (id, owner) = subscription, let first else { return nil }
            owner.sink.deliver(first)
            let held = state.early.removeValue(forKey: id) ?? []
            state.earlyCount -= held.count
            if owner.generation <= state.retiredThrough[owner.domain] ?? 0 {
                owner.sink.deliver(Self.endedEvent(id, domain: owner.domain, change: "replaced or removed"))
                return id
            }
            state.owners[id] = owner
            for event in held where event.plugin == owner.domain && event.generation == owner.generation {
                owner.sink.deliver(event.bytes)
            }
            return nil
        }
        if let endedID, let owner = subscription?.owner { owner.onEnd(endedID) }
    }

    /// Stops delivering `id`'s events (an unsubscribe, a closed connection).
    func unregister(_ id: String) {
        _ = state.withLock { $0.owners.removeValue(forKey: id) }
    }

    /// The `subscription` member of an event, read without parsing the whole event when it
    /// comes first after `type` (as the sync plugin writes it).
    static func subscriptionID(in event: [UInt8]) -> String? {
        let prefix = Array(#"{"type":"event","subscription":""#.utf8)
        if event.starts(with: prefix) {
            let start = prefix.count
            if let end = event[start...].firstIndex(of: UInt8(ascii: "\"")), !event[start..<end].contains(UInt8(ascii: "\\")) {
                return String(decoding: event[start..<end], as: UTF8.self)
            }
        }
        guard case .object(let object) = try? JSONValue(parsing: event), case .string(let id)? = object["subscription"] else { return nil }
        return id
    }
}
