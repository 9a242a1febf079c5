import CSOPCore
import CSOPTestSupport
import Synchronization
import Testing

@testable import SyncPlugin

/// Collects the events an engine emits and waits for them without timed assertions: the
/// deadline only stops a broken test from hanging.
final class EventRecorder: Sendable {
    private let events = Mutex<[JSONValue]>([])

    var emit: @Sendable ([UInt8]) -> Void {
        { [self] bytes in
            let value = (try? JSONValue(parsing: bytes)) ?? .string("unparsable event")
            events.withLock { $0.append(value) }
        }
    }

    var all: [JSONValue] { events.withLock { $0 } }

    func matching(_ predicate: (JSONValue) -> Bool) -> [JSONValue] { all.filter(predicate) }

    /// Waits until `count` events match, or the deadline passes; returns what matched.
    @discardableResult
    func wait(for count: Int, seconds: Int = 30, _ predicate: @escaping (JSONValue) -> Bool) async -> [JSONValue] {
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(seconds)
        while true {
            let found = matching(predicate)
            if found.count >= count || clock.now >= deadline { return found }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }
}

func onChannel(_ channel: String, event: String? = nil) -> (JSONValue) -> Bool {
    { value in
        value["channel"]?.stringValue == channel && (event == nil || value["event"]?.stringValue == event)
    }
}

/// A unique, valid name for a test's channels and PostgreSQL cluster channel.
func uniqueName(_ prefix: String) -> String { "\(prefix)_\(SyncClock.randomHex())" }

enum SyncTestEnvironment {
    /// A cluster-mode configuration with short intervals and a private NOTIFY channel.
    static func clusterConfig(
        url: String = TestEnvironment.postgresURL, cluster: String, heartbeat: Int64 = 200, expiry: Int64 = 1500,
        extra: [(String, JSONValue)] = []
    ) throws -> SyncConfiguration {
        var object: JSONObject = [
            "postgresUrl": .string(url), "clusterChannel": .string(cluster), "heartbeatInterval": .int(heartbeat),
            "presenceExpiry": .int(expiry), "reconnectMaxDelay": 200,
        ]
        for (key, value) in extra { object[key] = value }
        return try SyncConfiguration(config: .object(object), environment: { _ in nil })
    }
}

extension Result where Success == JSONValue, Failure == CSOPError {
    var value: JSONValue? { if case .success(let v) = self { v } else { nil } }
    var error: CSOPError? { if case .failure(let e) = self { e } else { nil } }
}
