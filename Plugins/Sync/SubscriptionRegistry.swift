import CSOPCore
import Glibc
import Synchronization

/// The subscriptions of one plugin instance, and the fan-out of messages to them.
///
/// One thread delivers at a time (the delivery gate), so every subscriber sees messages in the
/// same order, and a subscription never receives a message after `unsubscribe` returned.
/// Events are emitted outside the registry's lock, and a listener may broadcast, subscribe or
/// unsubscribe from inside an event: a message it broadcasts is queued and delivered right
/// after the current one, before the outer broadcast completes.
final class SubscriptionRegistry: Sendable {
    struct Subscription: Sendable {
        let id: String
        /// nil: every event.
        let events: Set<String>?
    }

    private struct State {
        var byChannel: [String: [Subscription]] = [:]
        var channelOfID: [String: String] = [:]
        var nextID: UInt64 = 1
    }

    private let state = Mutex(State())
    private let gate = DeliveryGate()
    private let emit: @Sendable ([UInt8]) -> Void
    /// Local mode's history: numbers and keeps each message as it is delivered.
    private let history: LocalHistory?
    /// Events delivered to subscriptions (one per matching subscription), for the metrics.
    let delivered = Atomic<Int>(0)
    let maxSubscriptions: Int

    init(maxSubscriptions: Int, history: LocalHistory? = nil, emit: @escaping @Sendable ([UInt8]) -> Void) {
        self.maxSubscriptions = maxSubscriptions
        self.history = history
        self.emit = emit
    }

    /// - Throws: `SUBSCRIPTION_FAILED` when the limit is reached.
    func subscribe(channel: String, events: Set<String>?) throws(CSOPError) -> String {
        let result: Result<String, CSOPError> = state.withLock { state in
            guard state.channelOfID.count < maxSubscriptions else {
                return .failure(
                    CSOPError(
                        .subscriptionFailed,
                        "this host already has \(maxSubscriptions) subscriptions (config maxSubscriptions); unsubscribe first"))
            }
            let id = "sub_\(state.nextID)"
            state.nextID += 1
            state.byChannel[channel, default: []].append(Subscription(id: id, events: events))
            state.channelOfID[id] = channel
            return .success(id)
        }
        return try result.get()
    }

    /// Removes one subscription whose channel passes `owned`; returns its channel, or nil when
    /// the id is unknown or its channel is not `owned` (another tenant's). Waits for a
    /// delivery running on another thread, so no event follows the return.
    func unsubscribe(id: String, if owned: (String) -> Bool = { _ in true }) -> String? {
        gate.whileNoOtherThreadDelivers {
            state.withLock { state in
                guard let channel = state.channelOfID[id], owned(channel) else { return nil }
                state.channelOfID[id] = nil
                state.byChannel[channel]?.removeAll { $0.id == id }
                if state.byChannel[channel]?.isEmpty == true { state.byChannel[channel] = nil }
                return channel
            }
        }
    }

    /// Removes every subscription of a channel; returns how many there were.
    func unsubscribe(channel: String) -> Int {
        gate.whileNoOtherThreadDelivers {
            state.withLock { state in
                guard let removed = state.byChannel.removeValue(forKey: channel) else { return 0 }
                for subscription in removed { state.channelOfID[subscription.id] = nil }
                return removed.count
            }
        }
    }

    /// Subscriptions open now.
    var count: Int { state.withLock { $0.channelOfID.count } }

    /// Whether a kept channel has a subscription.
    func hasSubscriptions(_ channel: String) -> Bool { state.withLock { $0.byChannel[channel] != nil } }

    /// Pushes `message` to every matching subscription (or only to subscription `only`),
    /// inline (or, from inside an event on the delivering thread, right after the current
    /// message).
    func deliver(_ message: SyncMessage, only: String? = nil) {
        gate.deliver((message, only), send)
    }

    /// Runs `body` while no other thread delivers; what `body` delivers goes out right after
    /// it, in order, before anyone else's. For a subscription that must see a backlog and then
    /// every live message, with no gap or duplicate at the seam.
    func exclusively(_ body: () -> Void) {
        gate.exclusively(body, send)
    }

    private func send(_ item: DeliveryGate.Item) {
        var message = item.message
        if item.only == nil, message.offset == nil, let history { history.record(&message) }
        let subscriptions = state.withLock { $0.byChannel[message.channel] } ?? []
        var suffix: JSONWriter?
        for subscription in subscriptions {
            if let only = item.only, subscription.id != only { continue }
            if let events = subscription.events, !events.contains(message.event) { continue }
            // A listener may have unsubscribed it while this message was going out.
            if subscriptions.count > 1, !state.withLock({ $0.channelOfID[subscription.id] != nil }) { continue }
            if suffix == nil { suffix = Self.eventSuffix(message) }
            var writer = JSONWriter(capacity: suffix!.bytes.count + 48)
            writer.append("{\"type\":\"event\",\"subscription\":")
            writer.writeString(subscription.id)
            writer.appendRaw(suffix!.bytes)
            delivered.add(1, ordering: .relaxed)
            emit(writer.bytes)
        }
    }

    /// Everything after the subscription id, identical for every subscriber.
    private static func eventSuffix(_ message: SyncMessage) -> JSONWriter {
        var writer = JSONWriter(capacity: message.data.count + 96)
        writer.append(",\"channel\":")
        writer.writeString(SyncScope.visibleChannel(message.channel))
        writer.append(",\"event\":")
        writer.writeString(message.event)
        writer.append(",\"data\":")
        writer.appendRaw(message.data)
        writer.append(",\"timestamp\":")
        writer.writeInt(message.timestamp)
        writer.append(",\"origin\":")
        writer.writeString(message.origin)
        if let offset = message.offset, let epoch = message.epoch {
            writer.append(",\"offset\":")
            writer.writeInt(offset)
            writer.append(",\"epoch\":")
            writer.writeString(epoch)
        }
        writer.append("}")
        return writer
    }
}

/// Lets one thread at a time deliver messages. The delivering thread itself is never blocked:
/// a message it delivers from inside an event is queued behind the current one.
private final class DeliveryGate: Sendable {
    typealias Item = (message: SyncMessage, only: String?)
    private struct State {
        var owner: pthread_t?
        var queue: [Item] = []
    }
    private let lock = ConditionLock()
    private nonisolated(unsafe) var state = State()  // Only touched with `lock` held.

    /// Runs `send` for `item`, then for every item queued meanwhile by this thread; from the
    /// delivering thread itself, queues it.
    func deliver(_ item: Item, _ send: (Item) -> Void) {
        lock.lock()
        let me = pthread_self()
        if let owner = state.owner, pthread_equal(owner, me) != 0 {
            state.queue.append(item)
            lock.unlock()
            return
        }
        while state.owner != nil { lock.wait() }
        state.owner = me
        lock.unlock()
        send(item)
        finish(send)
    }

    /// Runs `body` while no other thread delivers, then sends what this thread queued meanwhile
    /// (``deliver(_:_:)`` from inside `body` queues). Inside a delivery, runs `body` at once.
    func exclusively(_ body: () -> Void, _ send: (Item) -> Void) {
        lock.lock()
        let me = pthread_self()
        if let owner = state.owner, pthread_equal(owner, me) != 0 {
            lock.unlock()
            body()
            return
        }
        while state.owner != nil { lock.wait() }
        state.owner = me
        lock.unlock()
        body()
        finish(send)
    }

    /// Sends what the owner queued, then lets the next thread in.
    private func finish(_ send: (Item) -> Void) {
        lock.lock()
        while !state.queue.isEmpty {
            let next = state.queue.removeFirst()
            lock.unlock()
            send(next)
            lock.lock()
        }
        state.owner = nil
        lock.broadcast()
        lock.unlock()
    }

    /// Runs `body` when no other thread is delivering (at once on the delivering thread).
    func whileNoOtherThreadDelivers<T>(_ body: () -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        let me = pthread_self()
        while let owner = state.owner, pthread_equal(owner, me) == 0 { lock.wait() }
        return body()
    }
}
