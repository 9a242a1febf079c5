import CSOPCore
import CSOPPostgres
import Foundation

/// The storage plugin's settings, read from the plugins.d `[config]` section and the environment.
///
/// Config keys: `path`, `maxLocalSize`, `maxBytes`, `postgresUrl`, `postgresTable`,
/// `encryptionKey`, `encryptionKeys`, `encryptionKeyId`, `synchronous`, `readConnections`,
/// `purgeInterval`, `maxWatches`, `watchPostgresUrl`, `maxStreamSize`, `maxUploads`,
/// `uploadIdleTimeout`. A config value wins over its
/// environment variable (`CSOP_STORAGE_POSTGRES_URL`, `CSOP_STORAGE_ENCRYPTION_KEY`,
/// `CSOP_STORAGE_WATCH_POSTGRES_URL`).
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
    /// AES-256 keys for `encrypt`, by id: `encryptionKeys`, and `encryptionKey` (or
    /// `CSOP_STORAGE_ENCRYPTION_KEY`) as the id ``defaultKeyId``.
    var encryptionKeys: [String: [UInt8]] = [:]
    /// The key new encrypted saves use (and `storage.rotate` re-encrypts under); nil without keys.
    var encryptionKeyId: String?
    /// The id of `encryptionKey`, and of every value encrypted before keys had ids.
    static let defaultKeyId = "default"
    /// NORMAL survives a process crash (kill -9); FULL also survives power loss.
    var synchronous = Synchronous.normal
    var readConnections = 4
    /// Milliseconds between background purges of expired keys (`options.ttl`).
    var purgeInterval: Int64 = 1000
    /// `storage.watch` subscriptions this plugin instance keeps at most.
    var maxWatches = 10_000
    /// Where the change feed (``ChangeFeed``) meets the other processes of this store; nil:
    /// watches see this process's changes only.
    var watchPostgresURL: PostgresURL?
    /// The largest streamed value (`storage.upload`), in bytes.
    var maxStreamSize: Int64 = 64 * 1024 * 1024 * 1024
    /// Uploads one namespace (the owner, or a tenant) may have open at once.
    var maxUploads = 64
    /// Milliseconds an upload may go without an append before it is ended and its chunks deleted.
    var uploadIdleTimeout: Int64 = 900_000

    static let allowedKeys: Set<String> = [
        "path", "maxLocalSize", "maxBytes", "postgresUrl", "postgresTable", "encryptionKey", "encryptionKeys",
        "encryptionKeyId", "synchronous", "readConnections", "purgeInterval", "maxWatches", "watchPostgresUrl",
        "maxStreamSize", "maxUploads", "uploadIdleTimeout",
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
        try readEncryptionKeys(fields, environment: environment)
        if let mode = try fields.string("synchronous") {
            guard let parsed = Synchronous(rawValue: mode.uppercased()) else {
                throw .invalidPayload("config.synchronous must be \"normal\" or \"full\", got \"\(mode)\"")
            }
            synchronous = parsed
        }
        if let count = try fields.int("readConnections", in: 1...64) { readConnections = Int(count) }
        purgeInterval = try fields.int("purgeInterval", in: 10...86_400_000) ?? purgeInterval
        maxWatches = Int(try fields.int("maxWatches", in: 1...1_000_000) ?? 10_000)
        maxStreamSize = try fields.int("maxStreamSize", in: 0...Int64.max) ?? maxStreamSize
        maxUploads = Int(try fields.int("maxUploads", in: 1...100_000) ?? Int64(maxUploads))
        uploadIdleTimeout = try fields.int("uploadIdleTimeout", in: 1000...604_800_000) ?? uploadIdleTimeout
        // Opt-in only (not sync's URL by itself): the feed costs every save a queued NOTIFY.
        if let url = try fields.string("watchPostgresUrl") {
            watchPostgresURL = try PostgresURL(url, field: "config.watchPostgresUrl")
        } else if let url = Self.nonEmpty("CSOP_STORAGE_WATCH_POSTGRES_URL", in: environment) {
            watchPostgresURL = try PostgresURL(url, field: "CSOP_STORAGE_WATCH_POSTGRES_URL")
        }
    }

    /// `encryptionKey` (or the environment's) as id `default`, the `encryptionKeys` table of id →
    /// key, and `encryptionKeyId`, required when there are several. Messages never show a key.
    private mutating func readEncryptionKeys(_ fields: Fields, environment: [String: String]) throws(CSOPError) {
        let table = try fields.nested("encryptionKeys")
        let single = try fields.string("encryptionKey")
        if single != nil, table.object[Self.defaultKeyId] != nil {
            throw .invalidPayload("config.encryptionKey is the key with id \"default\", and config.encryptionKeys.default is another: give one of them")
        }
        if let text = single ?? (table.object[Self.defaultKeyId] == nil ? Self.nonEmpty("CSOP_STORAGE_ENCRYPTION_KEY", in: environment) : nil) {
            encryptionKeys[Self.defaultKeyId] = try Self.aesKey(text, field: "config.encryptionKey (or CSOP_STORAGE_ENCRYPTION_KEY)")
        }
        for member in table.object.members {
            guard Self.isKeyId(member.key) else {
                throw .invalidPayload("config.encryptionKeys: a key id must be 1 to 64 letters, digits, '.', '_' or '-'")
            }
            guard case .string(let text) = member.value else {
                throw .invalidPayload("config.encryptionKeys.\(member.key) must be a string (32 bytes in base64), got \(member.value.typeName)")
            }
            encryptionKeys[member.key] = try Self.aesKey(text, field: "config.encryptionKeys.\(member.key)")
        }
        let ids = encryptionKeys.keys.sorted().map { "\"\($0)\"" }.joined(separator: ", ")
        if let id = try fields.string("encryptionKeyId", maxLength: 64) {
            guard encryptionKeys[id] != nil else {
                throw .invalidPayload(
                    "config.encryptionKeyId names no configured key\(ids.isEmpty ? " (none is)" : "; the keys are \(ids)"): add it to config.encryptionKeys")
            }
            encryptionKeyId = id
        } else if encryptionKeys.count == 1 {
            encryptionKeyId = encryptionKeys.keys.first
        } else if encryptionKeys.count > 1 {
            throw .invalidPayload("config.encryptionKeyId is required with several keys: name the one new saves use (\(ids))")
        }
    }

    private static func aesKey(_ text: String, field: String) throws(CSOPError) -> [UInt8] {
        guard let key = Data(base64Encoded: text), key.count == 32 else {
            throw .invalidPayload("\(field) must be 32 bytes in base64 (44 characters)")
        }
        return Array(key)
    }

    /// 1 to 64 of `A-Z a-z 0-9 . _ -`.
    static func isKeyId(_ id: String) -> Bool {
        (1...64).contains(id.utf8.count)
            && id.utf8.allSatisfy { isLetter($0) || ($0 >= 48 && $0 <= 57) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }
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
    /// The most bytes one `storage.append` carries, and one `storage.read` answers.
    static let maxChunkBytes = 4 * 1024 * 1024
    /// What `storage.read` answers when `length` is not given.
    static let defaultReadBytes: Int64 = 1024 * 1024
    /// `saveMany` and `getMany` take at most 10,000 items.
    static let maxBatchItems = 10_000
    /// `list` returns at most 10,000 keys per page (default 1,000).
    static let maxListLimit: Int64 = 10_000
    static let defaultListLimit: Int64 = 1_000
}
