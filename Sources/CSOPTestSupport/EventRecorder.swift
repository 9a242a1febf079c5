public import CSOPCore
import Synchronization

/// Collects the events a plugin or engine emits and waits for them without timed assertions:
/// the deadline only stops a broken test from hanging.
public final class EventRecorder: Sendable {
    private let events = Mutex<[JSONValue]>([])

    public init() {}

    /// Records one emitted event (its JSON bytes).
    public func record(_ bytes: [UInt8]) {
        let value = (try? JSONValue(parsing: bytes)) ?? .string("unparsable event")
        events.withLock { $0.append(value) }
    }

    /// ``record(_:)`` as an emit function.
    public var emit: @Sendable ([UInt8]) -> Void { { [self] bytes in record(bytes) } }

    /// Every event so far, in order.
    public var all: [JSONValue] { events.withLock { $0 } }

    public func matching(_ predicate: (JSONValue) -> Bool) -> [JSONValue] { all.filter(predicate) }

    /// Waits until `count` events match, or the deadline passes; returns what matched.
    @discardableResult
    public func wait(for count: Int, seconds: Int = 30, _ predicate: @escaping (JSONValue) -> Bool) async -> [JSONValue] {
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(seconds)
        while true {
            let found = matching(predicate)
            if found.count >= count || clock.now >= deadline { return found }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }
}
