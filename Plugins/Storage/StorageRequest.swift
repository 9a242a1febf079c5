import CSOPCore

/// Validated request payloads, with errors that name the field.
enum StorageRequest {
    /// One value to save, serialized compactly.
    struct SaveItem: Sendable {
        var key: String
        var json: [UInt8]
        var compress: Bool
        var encrypt: Bool
        var ifVersion: Int64?
        /// Milliseconds the key lives after the save; nil for ever.
        var ttl: Int64?
    }

    struct SaveOptions: Sendable {
        var compress = false
        var encrypt = false
        var ifVersion: Int64?
        var ttl: Int64?
    }

    /// `options.ttl` is 1 ms to 10 years.
    static let maxTTL: Int64 = 315_360_000_000

    static let saveFields: Set<String> = ["key", "data", "options"]
    static let saveManyFields: Set<String> = ["items", "options"]
    static let keysFields: Set<String> = ["keys"]
    static let optionFields: Set<String> = ["encrypt", "compress", "ttl"]
    static let optionFieldsWithIfVersion: Set<String> = ["encrypt", "compress", "ttl", "ifVersion"]

    static func key(_ fields: Fields, _ name: String = "key") throws(CSOPError) -> String {
        guard fields.object[name] != nil else {
            throw .invalidPayload("\(fields.path).\(name) is required (a string of 1 to \(StorageLimits.maxKeyBytes) bytes)")
        }
        return try validKey(fields[name], path: "\(fields.path).\(name)")
    }

    static func validKey(_ value: JSONValue?, path: String) throws(CSOPError) -> String {
        guard case .string(let key)? = value else {
            throw .invalidPayload("\(path) must be a string of 1 to \(StorageLimits.maxKeyBytes) bytes, got \(value?.typeName ?? "nothing")")
        }
        if key.isEmpty { throw .invalidPayload("\(path) must not be empty") }
        let count = key.utf8.count
        if count > StorageLimits.maxKeyBytes {
            throw .invalidPayload("\(path) is \(count) bytes; the limit is \(StorageLimits.maxKeyBytes) bytes")
        }
        if key.utf8.contains(0) { throw .invalidPayload("\(path) must not contain NUL characters") }
        return key
    }

    static func options(_ fields: Fields, allowIfVersion: Bool, defaults: SaveOptions = SaveOptions()) throws(CSOPError) -> SaveOptions {
        let options = try fields.nested("options", allowed: allowIfVersion ? optionFieldsWithIfVersion : optionFields)
        var result = defaults
        if let encrypt = try options.bool("encrypt") { result.encrypt = encrypt }
        if let compress = try options.bool("compress") { result.compress = compress }
        if let ttl = try options.int("ttl", in: 1...maxTTL) { result.ttl = ttl }
        if allowIfVersion { result.ifVersion = try options.int("ifVersion", in: 0...Int64.max) }
        return result
    }

    static func data(_ fields: Fields) throws(CSOPError) -> [UInt8] {
        guard let data = fields.object["data"] else {
            throw .invalidPayload("\(fields.path).data is required (any JSON value)")
        }
        let json = data.serialized()
        if json.count > StorageLimits.maxValueBytes {
            throw .invalidPayload("\(fields.path).data is \(json.count) bytes of JSON; the limit is \(StorageLimits.maxValueBytes) bytes (64 MiB)")
        }
        return json
    }

    static func save(_ payload: JSONValue) throws(CSOPError) -> SaveItem {
        let fields = try Fields(payload, path: "payload", allowed: saveFields, allowNull: false)
        let key = try key(fields)
        let options = try options(fields, allowIfVersion: true)
        return SaveItem(
            key: key, json: try data(fields), compress: options.compress, encrypt: options.encrypt, ifVersion: options.ifVersion,
            ttl: options.ttl)
    }

    static func saveMany(_ payload: JSONValue) throws(CSOPError) -> [SaveItem] {
        let fields = try Fields(payload, path: "payload", allowed: saveManyFields, allowNull: false)
        let defaults = try options(fields, allowIfVersion: false)
        guard let items = try fields.array("items", maxCount: StorageLimits.maxBatchItems) else {
            throw .invalidPayload("payload.items is required (an array of {key, data, options?}, at most \(StorageLimits.maxBatchItems))")
        }
        if items.isEmpty { throw .invalidPayload("payload.items must not be empty") }
        var result: [SaveItem] = []
        result.reserveCapacity(items.count)
        for (index, item) in items.enumerated() {
            let itemFields = try Fields(item, path: "payload.items[\(index)]", allowed: saveFields, allowNull: false)
            let key = try key(itemFields)
            let options = try options(itemFields, allowIfVersion: true, defaults: defaults)
            result.append(
                SaveItem(
                    key: key, json: try data(itemFields), compress: options.compress, encrypt: options.encrypt,
                    ifVersion: options.ifVersion, ttl: options.ttl))
        }
        return result
    }

    static func keys(_ payload: JSONValue) throws(CSOPError) -> [String] {
        let fields = try Fields(payload, path: "payload", allowed: keysFields, allowNull: false)
        guard let keys = try fields.array("keys", maxCount: StorageLimits.maxBatchItems) else {
            throw .invalidPayload("payload.keys is required (an array of strings, at most \(StorageLimits.maxBatchItems))")
        }
        var seen = Set<String>()
        var result: [String] = []
        for (index, value) in keys.enumerated() {
            let key = try validKey(value, path: "payload.keys[\(index)]")
            if seen.insert(key).inserted { result.append(key) }
        }
        return result
    }
}
