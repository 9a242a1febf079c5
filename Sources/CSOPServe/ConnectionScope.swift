import CSOPCore
import CSOPHost
import Synchronization

/// What one long-lived connection (a WebSocket, an SSE stream) owns: its subscriptions and
/// the presence it joined. They belong to the connection: its events go only to it, another
/// connection cannot unsubscribe them, and ``close()`` undoes them all.
///
/// `sync.unsubscribe {channel}` here means this connection's subscriptions to that channel,
/// not every subscriber's: the scope turns it into one unsubscribe per subscription it owns.
/// Watches — `storage.watch` (change feeds) and `compute.watch` (ended jobs) — belong to the
/// connection the same way, and their `unwatch` ends only this connection's.
final class ConnectionScope: Sendable {
    /// The actions that make a watch, and the action that ends each.
    static let watches: [String: String] = ["storage.watch": "storage.unwatch", "compute.watch": "compute.unwatch"]

    /// Whether `action` makes a subscription, which needs a connection to deliver its events to.
    static func subscribes(_ action: String) -> Bool { action == "sync.subscribe" || watches[action] != nil }

    /// What made a subscription, and so what ends it.
    private enum Kind: Sendable, Equatable {
        /// `sync.subscribe`, to this channel.
        case channel(String)
        /// A watch, ended by this action.
        case watch(end: String)

        var endAction: String {
            switch self {
            case .channel: "sync.unsubscribe"
            case .watch(let end): end
            }
        }
    }

    private struct Owned {
        /// Subscription id → what it is.
        var subscriptions: [String: Kind] = [:]
        /// Presence joined: channel and user id.
        var presence: Set<[String]> = []
        var closed = false
    }

    let host: CSOPHost
    let router: EventRouter
    let caller: Caller?
    let sink: any EventSink
    private let owned = Mutex(Owned())

    init(host: CSOPHost, router: EventRouter, caller: Caller?, sink: any EventSink) {
        self.host = host
        self.router = router
        self.caller = caller
        self.sink = sink
    }

    /// Runs `request` for this connection; `completion` gets the response once. A successful
    /// subscribe's response goes to the sink itself, before the subscription's first event:
    /// `completion` is then called with nil.
    func dispatch(_ request: Request, completion: @escaping @Sendable (Response?) -> Void) {
        var scoped = request
        scoped.caller = caller
        let request = scoped
        switch request.action {
        case let action where Self.subscribes(action):
            router.subscribeStarted()
            host.dispatch(request) { [self] response in
                var id: String?
                if case .object(let data)? = response.data, case .string(let subscription)? = data["subscription"] {
                    let channel = data["channel"].flatMap { if case .string(let text) = $0 { text } else { nil } } ?? ""
                    let kind = Self.watches[request.action].map { Kind.watch(end: $0) } ?? .channel(channel)
                    let kept = owned.withLock { owned in
                        guard !owned.closed else { return false }
                        owned.subscriptions[subscription] = kind
                        return true
                    }
                    if kept {
                        id = subscription
                    } else {
                        end(subscription, kind)
                    }
                }
                if let id {
                    let owner = EventRouter.Owner(
                        sink: sink, domain: String(request.action.prefix { $0 != "." }), generation: response.generation
                    ) { [weak self] id in self?.forget(id) }
                    router.subscribeFinished((id, owner), first: response.serialized())
                    completion(nil)
                } else {
                    router.subscribeFinished(nil, first: nil)
                    completion(response)
                }
            }
        case "sync.unsubscribe":
            unsubscribe(request, completion: completion)
        case let action where Self.watches.values.contains(action):
            unwatch(request, completion: completion)
        case "sync.presence", "sync.leave":
            host.dispatch(request) { [self] response in
                if case .object(let data)? = response.data, case .string(let channel)? = data["channel"],
                    case .string(let user)? = data["userId"]
                {
                    owned.withLock { owned in
                        if request.action == "sync.leave" {
                            owned.presence.remove([channel, user])
                        } else if !owned.closed {
                            owned.presence.insert([channel, user])
                        }
                    }
                }
                completion(response)
            }
        default:
            host.dispatch(request, completion: completion)
        }
    }

    private func unsubscribe(_ request: Request, completion: @escaping @Sendable (Response?) -> Void) {
        let start = monotonicMilliseconds()
        func answer(_ outcome: Result<JSONValue, CSOPError>) {
            let result = outcome.map { RawJSON($0) }
            completion(Response(id: request.id, outcome: result, duration: monotonicMilliseconds() - start))
        }
        guard case .object(let payload) = request.payload else {
            return answer(.failure(.invalidPayload("payload must be a JSON object, got \(request.payload.typeName)")))
        }
        let ids: [String]
        let channel: String
        switch (payload["subscription"], payload["channel"]) {
        case (.string(let id)?, _):
            guard case .channel(let owner)? = owned.withLock({ $0.subscriptions[id] }) else {
                return answer(
                    .failure(
                        CSOPError(
                            "SUBSCRIPTION_FAILED",
                            "no subscription \(id) on this connection; a connection can end only the subscriptions it made")))
            }
            ids = [id]
            channel = owner
        case (nil, .string(let name)?):
            ids = owned.withLock { owned in
                owned.subscriptions.compactMap { id, kind in if case .channel(name) = kind { id } else { nil } }
            }
            channel = name
        default:
            // The plugin words the error about the payload's shape.
            return host.dispatch(request, completion: completion)
        }
        unsubscribe(ids)
        answer(.success(.object(["unsubscribed": .bool(!ids.isEmpty), "channel": .string(channel), "count": .int(Int64(ids.count))])))
    }

    /// `storage.unwatch` or `compute.unwatch {subscription}` of a watch of that kind this connection made.
    private func unwatch(_ request: Request, completion: @escaping @Sendable (Response?) -> Void) {
        let start = monotonicMilliseconds()
        guard case .object(let payload) = request.payload, case .string(let id)? = payload["subscription"] else {
            // The plugin words the error about the payload's shape.
            return host.dispatch(request, completion: completion)
        }
        let outcome: Result<JSONValue, CSOPError>
        if owned.withLock({ $0.subscriptions[id] }) == .watch(end: request.action) {
            unsubscribe([id])
            outcome = .success(["unwatched": true, "subscription": .string(id)])
        } else {
            outcome = .failure(
                CSOPError("SUBSCRIPTION_FAILED", "no watch \(id) on this connection; a connection can end only the watches it made"))
        }
        completion(Response(id: request.id, outcome: outcome.map { RawJSON($0) }, duration: monotonicMilliseconds() - start))
    }

    /// Ends this connection's subscriptions `ids`: no event of theirs is delivered from now on.
    private func unsubscribe(_ ids: [String]) {
        let ended = owned.withLock { owned in ids.compactMap { id in owned.subscriptions.removeValue(forKey: id).map { (id, $0) } } }
        for (id, kind) in ended { end(id, kind) }
    }

    /// A reload ended `id` with the plugin instance that made it: nothing is left to end, and
    /// another instance may hand the same id to someone else.
    private func forget(_ id: String) {
        _ = owned.withLock { $0.subscriptions.removeValue(forKey: id) }
    }

    /// Stops routing `id`'s events and ends it in its plugin.
    private func end(_ id: String, _ kind: Kind) {
        router.unregister(id)
        host.dispatch(Request(action: kind.endAction, payload: .object(["subscription": .string(id)]), caller: caller)) { _ in }
    }

    /// The connection ended: its subscriptions end and its presence leaves.
    func close() {
        let (subscriptions, presence) = owned.withLock { owned in
            owned.closed = true
            defer {
                owned.subscriptions.removeAll()
                owned.presence.removeAll()
            }
            return (Array(owned.subscriptions.keys), owned.presence)
        }
        unsubscribe(subscriptions)
        for key in presence {
            let payload: JSONObject = ["channel": .string(key[0]), "userId": .string(key[1])]
            host.dispatch(Request(action: "sync.leave", payload: .object(payload), caller: caller)) { _ in }
        }
    }
}
