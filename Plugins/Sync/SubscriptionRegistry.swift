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
    /// Events delivered to subscriptions (one per matching subscription), for the metrics.
    let delivered = Atomic<Int>(0)
    let maxSubscriptions: Int

    init(maxSubscriptions: Int, emit: @escaping @Sendable ([UInt8]) -> Void) {
        self.maxSubscriptions = maxSubscriptions
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

    /// Pushes `message` to every matching subscription, inline (or, from inside an event on
    /// the delivering thread, right after the current message).
    func deliver(_ message: SyncMessage) {
        gate.deliver(message) { message in
            let subscriptions = state.withLock { $0.byChannel[message.channel] } ?? []
            var suffix: JSONWriter?
            for subscription in subscriptions {
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
        writer.append("}")
        return writer
    }
}

/// Lets one thread at a time deliver messages. The delivering thread itself is never blocked:
/// a message it delivers from inside an event is queued behind the current one.
private final class DeliveryGate: Sendable {
    private struct State {
        var owner: pthread_t?
        var queue: [SyncMessage] = []
    }
    private let lock = ConditionLock()
    private nonisolated(unsafe) var state = State()  // Only touched with `lock` held.

    /// Runs `send` for `message`, then for every message queued meanwhile by this thread.
    func deliver(_ message: SyncMessage, _ send: (SyncMessage) -> Void) {
        lock.lock()
        let me = pthread_self()
        if let owner = state.owner, pthread_equal(owner, me) != 0 {
            state.queue.append(message)
            lock.unlock()
            return
        }
        while state.owner != nil { lock.wait() }
        state.owner = me
        var next: SyncMessage? = message
        while let current = next {
            lock.unlock()
            send(current)
            lock.lock()
            next = state.queue.isEmpty ? nil : state.queue.removeFirst()
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
