import CSOPCore
import Synchronization

/// `storage.watch` subscriptions and the `storage.changed` events they receive.
///
/// A watch sees one namespace (``StorageNamespace``: the owner's keys or one tenant's) and the
/// keys in it that start with its prefix. Each committed save, delete and expiry purge is
/// announced to the matching watches as
/// `{type: "event", subscription, event: "storage.changed", data: {key, version, deleted, expired?}}`
/// — the shape of sync's events, so the host and the gateway route it by `subscription` to the
/// caller that watched. Ids are `watch_N`, apart from sync's `sub_N`.
///
/// With no watch and no ``ChangeFeed``, a change costs two atomic loads. Changes are announced after their commit, on
/// the thread that committed; writes of one key commit in version order, but two writes on
/// different threads may announce out of order: `version` orders them.
final class WatchRegistry: Sendable {
    struct Change: Sendable {
        /// As stored (``StorageNamespace``).
        var key: String
        var version: Int64
        var deleted: Bool
        var expired = false
    }

    private struct Watch: Sendable {
        let id: String
        let prefix: String
    }

    private struct State {
        /// By namespace prefix (``StorageNamespace/prefix``).
        var byNamespace: [[UInt8]: [Watch]] = [:]
        var namespaceOfID: [String: [UInt8]] = [:]
        var nextID: UInt64 = 1
    }

    private let state = Mutex(State())
    private let count = Atomic<Int>(0)
    /// Sends this process's changes to the other processes of the store, when set.
    let feed = AtomicLazyReference<ChangeFeed>()
    private let emit: @Sendable ([UInt8]) -> Void
    let maxWatches: Int

    init(maxWatches: Int, emit: @escaping @Sendable ([UInt8]) -> Void) {
        self.maxWatches = maxWatches
        self.emit = emit
    }

    /// A new watch of the keys of `space` starting with `prefix` (every key for "").
    /// - Throws: `SUBSCRIPTION_FAILED` when `maxWatches` watches exist.
    func watch(_ space: StorageNamespace, prefix: String) throws(CSOPError) -> String {
        let result: Result<String, CSOPError> = state.withLock { state in
            guard state.namespaceOfID.count < maxWatches else {
                return .failure(CSOPError(.subscriptionFailed, "this storage plugin already has \(maxWatches) watches (config maxWatches); unwatch first"))
            }
            let id = "watch_\(state.nextID)"
            state.nextID += 1
            state.byNamespace[space.prefix, default: []].append(Watch(id: id, prefix: prefix))
            state.namespaceOfID[id] = space.prefix
            count.add(1, ordering: .releasing)
            return .success(id)
        }
        return try result.get()
    }

    /// Ends watch `id` if it is `space`'s; false when it is unknown or another namespace's.
    func unwatch(_ id: String, in space: StorageNamespace) -> Bool {
        state.withLock { state in
            guard state.namespaceOfID[id] == space.prefix else { return false }
            state.namespaceOfID[id] = nil
            state.byNamespace[space.prefix]?.removeAll { $0.id == id }
            if state.byNamespace[space.prefix]?.isEmpty == true { state.byNamespace[space.prefix] = nil }
            count.subtract(1, ordering: .releasing)
            return true
        }
    }

    /// How many watches exist.
    var watchCount: Int { count.load(ordering: .acquiring) }

    /// Announces `changes` (committed here) to the watches that match them, and to the other
    /// processes of the store (``ChangeFeed``).
    func announce(_ changes: [Change]) {
        feed.load()?.publish(changes)
        deliver(changes)
    }

    /// Delivers `changes` to the watches that match them: this process's, or another's
    /// received from the ``ChangeFeed``.
    func deliver(_ changes: [Change]) {
        guard count.load(ordering: .acquiring) > 0, !changes.isEmpty else { return }
        for change in changes {
            let namespace = StorageNamespace.prefix(ofStored: change.key)
            guard let watches = state.withLock({ $0.byNamespace[namespace] }) else { continue }
            let key = StorageNamespace.userKey(change.key)
            var data: JSONWriter?
            for watch in watches where key.utf8.starts(with: watch.prefix.utf8) {
                if data == nil { data = Self.data(key, change) }
                var writer = JSONWriter(capacity: data!.bytes.count + 80)
                writer.append("{\"type\":\"event\",\"subscription\":")
                writer.writeString(watch.id)
                writer.append(",\"event\":\"storage.changed\",\"data\":")
                writer.appendRaw(data!.bytes)
                writer.append("}")
                emit(writer.bytes)
            }
        }
    }

    /// Announces one change.
    func announce(_ change: Change) {
        if let feed = feed.load() { feed.publish([change]) }
        guard count.load(ordering: .acquiring) > 0 else { return }
        deliver([change])
    }

    private static func data(_ key: String, _ change: Change) -> JSONWriter {
        var writer = JSONWriter(capacity: key.utf8.count + 64)
        writer.append("{\"key\":")
        writer.writeString(key)
        writer.append(",\"version\":")
        writer.writeInt(change.version)
        writer.append(change.deleted ? ",\"deleted\":true" : ",\"deleted\":false")
        if change.expired { writer.append(",\"expired\":true") }
        writer.append("}")
        return writer
    }
}
