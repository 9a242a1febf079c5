import CSOPCore
import Synchronization

/// The subscriptions of one plugin instance, and the fan-out of messages to them.
///
/// Delivery runs under the registry lock, so every subscriber sees messages in the same
/// order and a subscription never receives a message after `unsubscribe` returned.
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
    private let emit: @Sendable ([UInt8]) -> Void
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

    /// Removes one subscription; returns its channel, or nil when the id is unknown.
    func unsubscribe(id: String) -> String? {
        state.withLock { state in
            guard let channel = state.channelOfID.removeValue(forKey: id) else { return nil }
            state.byChannel[channel]?.removeAll { $0.id == id }
            if state.byChannel[channel]?.isEmpty == true { state.byChannel[channel] = nil }
            return channel
        }
    }

    /// Removes every subscription of a channel; returns how many there were.
    func unsubscribe(channel: String) -> Int {
        state.withLock { state in
            guard let removed = state.byChannel.removeValue(forKey: channel) else { return 0 }
            for subscription in removed { state.channelOfID[subscription.id] = nil }
            return removed.count
        }
    }

    /// Pushes `message` to every matching subscription, inline.
    func deliver(_ message: SyncMessage) {
        state.withLock { state in
            guard let subscriptions = state.byChannel[message.channel] else { return }
            var suffix: JSONWriter?
            for subscription in subscriptions {
                if let events = subscription.events, !events.contains(message.event) { continue }
                if suffix == nil { suffix = Self.eventSuffix(message) }
                var writer = JSONWriter(capacity: suffix!.bytes.count + 48)
                writer.append("{\"type\":\"event\",\"subscription\":")
                writer.writeString(subscription.id)
                writer.appendRaw(suffix!.bytes)
                emit(writer.bytes)
            }
        }
    }

    /// Everything after the subscription id, identical for every subscriber.
    private static func eventSuffix(_ message: SyncMessage) -> JSONWriter {
        var writer = JSONWriter(capacity: message.data.count + 96)
        writer.append(",\"channel\":")
        writer.writeString(message.channel)
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
