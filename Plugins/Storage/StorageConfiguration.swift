import CSOPCore
import Foundation

/// The storage plugin's settings, read from the plugins.d `[config]` section and the environment.
///
/// Config keys: `path`, `maxLocalSize`, `maxBytes`, `postgresUrl`, `postgresTable`,
/// `encryptionKey`, `synchronous`, `readConnections`, `purgeInterval`. A config value wins over its
/// environment variable (`CSOP_STORAGE_POSTGRES_URL`, `CSOP_STORAGE_ENCRYPTION_KEY`).
struct StorageConfiguration: Sendable {
    enum Synchronous: String, Sendable { case normal = "NORMAL", full = "FULL" }

    /// The SQLite file of the hot tier.
    var path: String
    /// Values whose JSON is larger than this go to the cold tier when it is configured.
    var maxLocalSize: Int64 = 5 * 1024 * 1024
    /// Total JSON bytes across both tiers; nil means unlimited.
    var maxBytes: Int64?
    var postgresURL: String?
    var postgresTable = "csop_storage_cold"
    /// AES-256 key for `encrypt`.
    var encryptionKey: [UInt8]?
    /// NORMAL survives a process crash (kill -9); FULL also survives power loss.
    var synchronous = Synchronous.normal
    var readConnections = 4
    /// Milliseconds between background purges of expired keys (`options.ttl`).
    var purgeInterval: Int64 = 1000

    static let allowedKeys: Set<String> = [
        "path", "maxLocalSize", "maxBytes", "postgresUrl", "postgresTable", "encryptionKey", "synchronous",
        "readConnections", "purgeInterval",
    ]

    init(path: String) { self.path = path }

    /// Reads and validates `config`.
    /// - Throws: `INVALID_PAYLOAD` naming the bad `config.<key>`.
    init(config: JSONValue, environment: [String: String] = ProcessInfo.processInfo.environment) throws(CSOPError) {
        let fields = try Fields(config, path: "config", allowed: Self.allowedKeys)
        path = try fields.string("path") ?? Self.defaultPath(environment: environment)
        if let size = try fields.int("maxLocalSize", in: 0...StorageLimits.maxValueBytes) { maxLocalSize = size }
        maxBytes = try fields.int("maxBytes", in: 0...Int64.max)
        postgresURL = try fields.string("postgresUrl") ?? Self.nonEmpty("CSOP_STORAGE_POSTGRES_URL", in: environment)
        if let table = try fields.string("postgresTable", maxLength: 63) {
            guard Self.isIdentifier(table) else {
                throw .invalidPayload("config.postgresTable must be letters, digits and underscores, starting with a letter or underscore")
            }
            postgresTable = table
        }
        if let text = try fields.string("encryptionKey") ?? Self.nonEmpty("CSOP_STORAGE_ENCRYPTION_KEY", in: environment) {
            guard let key = Data(base64Encoded: text), key.count == 32 else {
                throw .invalidPayload("config.encryptionKey (or CSOP_STORAGE_ENCRYPTION_KEY) must be 32 bytes in base64 (44 characters)")
            }
            encryptionKey = Array(key)
        }
        if let mode = try fields.string("synchronous") {
            guard let parsed = Synchronous(rawValue: mode.uppercased()) else {
                throw .invalidPayload("config.synchronous must be \"normal\" or \"full\", got \"\(mode)\"")
            }
            synchronous = parsed
        }
        if let count = try fields.int("readConnections", in: 1...64) { readConnections = Int(count) }
        purgeInterval = try fields.int("purgeInterval", in: 10...86_400_000) ?? purgeInterval
    }

    /// `$XDG_DATA_HOME/csop/storage.sqlite`, else `~/.local/share/csop/storage.sqlite`.
    static func defaultPath(environment: [String: String]) -> String {
        let base: String
        if let data = environment["XDG_DATA_HOME"], !data.isEmpty {
            base = data
        } else {
            base = (nonEmpty("HOME", in: environment) ?? NSHomeDirectory()) + "/.local/share"
        }
        return base + "/csop/storage.sqlite"
    }

    /// The environment variable `name`, or nil when it is unset or empty.
    private static func nonEmpty(_ name: String, in environment: [String: String]) -> String? {
        environment[name].flatMap { $0.isEmpty ? nil : $0 }
    }

    static func isIdentifier(_ name: String) -> Bool {
        guard let first = name.utf8.first, first == UInt8(ascii: "_") || isLetter(first) else { return false }
        return name.utf8.allSatisfy { $0 == UInt8(ascii: "_") || isLetter($0) || ($0 >= 48 && $0 <= 57) }
    }

    private static func isLetter(_ byte: UInt8) -> Bool { (byte | 0x20) >= 97 && (byte | 0x20) <= 122 }
}

/// Limits the plugin enforces, stated in its error messages.
enum StorageLimits {
    /// Keys are 1 to 1024 UTF-8 bytes.
    static let maxKeyBytes = 1024
    /// The compact JSON of one value is at most 64 MiB.
    static let maxValueBytes: Int64 = 64 * 1024 * 1024
    /// `saveMany` and `getMany` take at most 10,000 items.
    static let maxBatchItems = 10_000
    /// `list` returns at most 10,000 keys per page (default 1,000).
    static let maxListLimit: Int64 = 10_000
    static let defaultListLimit: Int64 = 1_000
}
