import CSOPCore
import Synchronization

/// Fans plugin events out to listeners. Listeners run on the emitting plugin's thread,
/// in emit order, and must return quickly.
final class EventHub: Sendable {
    typealias Listener = @Sendable (HostEvent) -> Void

    private let listeners = Mutex<[(id: UInt64, listener: Listener)]>([])
    private let nextID = Atomic<UInt64>(0)

    func add(_ listener: @escaping Listener) -> UInt64 {
        let id = nextID.add(1, ordering: .relaxed).newValue
        listeners.withLock { $0.append((id: id, listener: listener)) }
        return id
    }

    func remove(_ id: UInt64) {
        listeners.withLock { $0.removeAll { $0.id == id } }
    }

    func publish(_ event: HostEvent) {
        let current = listeners.withLock { $0 }
        for entry in current { entry.listener(event) }
    }
}
