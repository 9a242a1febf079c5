import CSOPCore
import CSOPTestSupport
import Testing

@testable import SyncPlugin

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
