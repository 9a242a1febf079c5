import CSOPCore
import CSOPPostgres
import Glibc

/// The plugin's settings, read from the `[config]` section of its plugins.d file.
///
/// Keys: `postgresUrl` (cluster mode; `CSOP_SYNC_POSTGRES_URL` supplies it when the key is
/// absent; its TLS options and files are read here, see ``PostgresURL``), `heartbeatInterval`
/// (ms, default 5000), `presenceExpiry` (ms, default twice the heartbeat), `maxPayloadBytes`
/// (default 1 MiB), `reconnectMaxDelay` (ms, default 5000), `maxSubscriptions` (default
/// 10000), `clusterChannel` (the PostgreSQL channel, default `csop_sync`), `connectTimeout`
/// (ms, default 5000), `history` (which channels keep history, ``HistoryPolicy``).
struct SyncConfiguration: Sendable {
    static let allowedKeys: Set<String> = [
        "postgresUrl", "heartbeatInterval", "presenceExpiry", "maxPayloadBytes", "reconnectMaxDelay",
        "maxSubscriptions", "clusterChannel", "connectTimeout", "history",
    ]
    static let environmentURLKey = "CSOP_SYNC_POSTGRES_URL"
    /// The largest `maxPayloadBytes` accepted: a message is one transaction of NOTIFY chunks.
    static let payloadCeiling: Int64 = 16 * 1024 * 1024

    var postgres: PostgresURL?
    var heartbeatInterval: Int64 = 5000
    var presenceExpiry: Int64 = 10_000

    /// How often expired users are swept: half a heartbeat.
    var sweepInterval: Int64 { max(10, heartbeatInterval / 2) }
    /// How long a presence row stays valid after a heartbeat.
    var rowLifetime: Int64 { presenceExpiry - sweepInterval }
    var maxPayloadBytes: Int = 1024 * 1024
    var reconnectMaxDelay: Int64 = 5000
    var maxSubscriptions: Int = 10_000
    var clusterChannel: String = "csop_sync"
    var connectTimeout: Int64 = 5000
    var history = HistoryPolicy.off

    init() {}

    /// - Parameter environment: looks up environment variables (injectable for tests).
    /// - Throws: `INVALID_PAYLOAD` naming the bad `config.` key.
    init(
        config: JSONValue,
        environment: (String) -> String? = { name in getenv(name).map { String(cString: $0) } }
    ) throws(CSOPError) {
        let fields = try Fields(config, path: "config", allowed: Self.allowedKeys)
        if let url = try fields.string("postgresUrl") {
            postgres = try PostgresURL(url, field: "config.postgresUrl")
        } else if let url = environment(Self.environmentURLKey), !url.isEmpty {
            postgres = try PostgresURL(url, field: Self.environmentURLKey)
        }
        heartbeatInterval = try fields.int("heartbeatInterval", in: 20...3_600_000) ?? 5000
        presenceExpiry = try fields.int("presenceExpiry", in: 40...7_200_000) ?? 2 * heartbeatInterval
        if presenceExpiry * 2 <= heartbeatInterval * 3 {
            throw .invalidPayload(
                "config.presenceExpiry (\(presenceExpiry) ms) must be more than 1.5 × config.heartbeatInterval (\(heartbeatInterval) ms)")
        }
        maxPayloadBytes = Int(try fields.int("maxPayloadBytes", in: 1...Self.payloadCeiling) ?? 1024 * 1024)
        reconnectMaxDelay = try fields.int("reconnectMaxDelay", in: 50...600_000) ?? 5000
        maxSubscriptions = Int(try fields.int("maxSubscriptions", in: 1...1_000_000) ?? 10_000)
        connectTimeout = try fields.int("connectTimeout", in: 100...600_000) ?? 5000
        if let channel = try fields.string("clusterChannel", maxLength: 63) {
            let valid = channel.utf8.allSatisfy { byte in
                (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                    || byte == UInt8(ascii: "_")
            }
            guard valid, let first = channel.utf8.first, !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else {
                throw .invalidPayload("config.clusterChannel must be a lower-case identifier: a-z, 0-9 and _, not starting with a digit")
            }
            clusterChannel = channel
        }
        history = try HistoryPolicy(fields["history"], cluster: postgres != nil)
    }

    var isCluster: Bool { postgres != nil }
}
