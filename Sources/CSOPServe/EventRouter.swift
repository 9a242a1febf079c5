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
/// it was given (``register(_:to:before:)``). The plugin may emit an event for a new
/// subscription before the connection has read the id from the subscribe response, so while
/// subscribes are in flight (``subscribeStarted()``) events for ids nobody holds yet are
/// kept, and delivered first when their owner registers: nothing between the subscribe and
/// its response is lost. Events that no connection owns are dropped (a gateway has no local
/// owner printing every event, as `csop run` does).
final class EventRouter: Sendable {
    private struct State {
        var owners: [String: any EventSink] = [:]
        /// Subscribes dispatched and not yet answered.
        var subscribing = 0
        /// Events for unknown ids that arrived while `subscribing > 0`, by id, in order.
        var early: [String: [[UInt8]]] = [:]
        var earlyCount = 0
    }

    private let state = Mutex(State())
    /// At most this many early events are kept (a subscribe answered slowly under a flood).
    private static let earlyLimit = 65_536

    init() {}

    /// Starts routing `host`'s events.
    /// - Returns: the listener token, for `removeEventListener`.
    func attach(to host: CSOPHost) -> UInt64 {
        host.addEventListener { [self] event in route(event.json.bytes) }
    }

    func route(_ event: [UInt8]) {
        guard let id = Self.subscriptionID(in: event) else { return }
        state.withLock { state in
            if let sink = state.owners[id] {
                sink.deliver(event)
            } else if state.subscribing > 0, state.earlyCount < Self.earlyLimit {
                state.early[id, default: []].append(event)
                state.earlyCount += 1
            }
        }
    }

    /// A subscribe is about to be dispatched: hold events for ids nobody owns yet.
    func subscribeStarted() {
        state.withLock { $0.subscribing += 1 }
    }

    /// Its answer came. When it succeeded, `id` becomes `sink`'s: `first` (the response) is
    /// delivered, then the events held for `id`, then every later one. A failed one passes nils.
    func subscribeFinished(id: String?, sink: (any EventSink)?, first: [UInt8]?) {
        state.withLock { state in
            state.subscribing -= 1
            if let id, let sink, let first {
                sink.deliver(first)
                state.owners[id] = sink
                if let held = state.early.removeValue(forKey: id) {
                    state.earlyCount -= held.count
                    for event in held { sink.deliver(event) }
                }
            }
            if state.subscribing == 0 {
                state.early.removeAll()
                state.earlyCount = 0
            }
        }
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
