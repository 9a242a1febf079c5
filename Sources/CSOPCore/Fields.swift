/// Reads the fields of a JSON object with errors that name the field and say what to fix.
///
/// ```swift
/// let fields = try Fields(payload, path: "payload", allowed: ["key", "data", "options"])
/// let key = try fields.requiredString("key", maxLength: 512)
/// ```
public struct Fields: Sendable {
    public let object: JSONObject
    /// Where this object sits in the request, e.g. `payload.options`, for messages.
    public let path: String

    /// Wraps `value`, which must be an object (or null/absent when `allowNull`, read as empty).
    /// - Throws: `INVALID_PAYLOAD` for a non-object or for a key not in `allowed` (when given).
    public init(_ value: JSONValue?, path: String, allowed: Set<String>? = nil, allowNull: Bool = true) throws(CSOPError) {
        switch value {
        case .object(let object)?: self.object = object
        case nil, .null?:
            guard allowNull else { throw .invalidPayload("\(path) is required and must be an object") }
            self.object = JSONObject()
        case let other?:
            throw .invalidPayload("\(path) must be an object, got \(other.typeName)")
        }
        self.path = path
        if let allowed {
            for member in object.members where !allowed.contains(member.key) {
                let list = allowed.sorted().joined(separator: ", ")
                throw .invalidPayload("unknown field \(path).\(member.key); allowed: \(list)")
            }
        }
    }

    public subscript(key: String) -> JSONValue? { object[key] }

    public func has(_ key: String) -> Bool {
        if let value = object[key], !value.isNull { true } else { false }
    }

    public func requiredString(_ key: String, nonEmpty: Bool = true, maxLength: Int? = nil) throws(CSOPError) -> String {
        guard let value = try string(key, nonEmpty: nonEmpty, maxLength: maxLength) else {
            throw .invalidPayload("\(path).\(key) is required (a string)")
        }
        return value
    }

    /// - Parameter maxLength: limit in UTF-8 bytes.
    public func string(_ key: String, nonEmpty: Bool = true, maxLength: Int? = nil) throws(CSOPError) -> String? {
        guard let value = object[key], !value.isNull else { return nil }
        guard case .string(let string) = value else {
            throw .invalidPayload("\(path).\(key) must be a string, got \(value.typeName)")
        }
        if nonEmpty && string.isEmpty { throw .invalidPayload("\(path).\(key) must not be empty") }
        if let maxLength, string.utf8.count > maxLength {
            throw .invalidPayload("\(path).\(key) is \(string.utf8.count) bytes; the limit is \(maxLength)")
        }
        return string
    }

    public func requiredInt(_ key: String, in range: ClosedRange<Int64>? = nil) throws(CSOPError) -> Int64 {
        guard let value = try int(key, in: range) else { throw .invalidPayload("\(path).\(key) is required (an integer)") }
        return value
    }

    public func int(_ key: String, in range: ClosedRange<Int64>? = nil) throws(CSOPError) -> Int64? {
        guard let value = object[key], !value.isNull else { return nil }
        guard let int = value.int64Value else {
            throw .invalidPayload("\(path).\(key) must be an integer, got \(value.typeName == "number" ? "\(value.jsonString)" : value.typeName)")
        }
        if let range, !range.contains(int) {
            throw .invalidPayload("\(path).\(key) must be between \(range.lowerBound) and \(range.upperBound), got \(int)")
        }
        return int
    }

    public func number(_ key: String, in range: ClosedRange<Double>? = nil) throws(CSOPError) -> Double? {
        guard let value = object[key], !value.isNull else { return nil }
        guard let number = value.doubleValue else {
            throw .invalidPayload("\(path).\(key) must be a number, got \(value.typeName)")
        }
        // Only a `.number` beyond the doubles' range reads as infinite.
        guard number.isFinite else {
            throw .invalidPayload("\(path).\(key) is \(value.jsonString), beyond the range of a double (±1.7976931348623157e308)")
        }
        if let range, !range.contains(number) {
            throw .invalidPayload(
                "\(path).\(key) must be between \(Self.format(range.lowerBound)) and \(Self.format(range.upperBound)), got \(Self.format(number))")
        }
        return number
    }

    public func bool(_ key: String) throws(CSOPError) -> Bool? {
        guard let value = object[key], !value.isNull else { return nil }
        guard case .bool(let bool) = value else {
            throw .invalidPayload("\(path).\(key) must be true or false, got \(value.typeName)")
        }
        return bool
    }

    public func array(_ key: String, maxCount: Int? = nil) throws(CSOPError) -> [JSONValue]? {
        guard let value = object[key], !value.isNull else { return nil }
        guard case .array(let array) = value else {
            throw .invalidPayload("\(path).\(key) must be an array, got \(value.typeName)")
        }
        if let maxCount, array.count > maxCount {
            throw .invalidPayload("\(path).\(key) has \(array.count) elements; the limit is \(maxCount)")
        }
        return array
    }

    public func nested(_ key: String, allowed: Set<String>? = nil) throws(CSOPError) -> Fields {
        try Fields(object[key], path: "\(path).\(key)", allowed: allowed)
    }

    private static func format(_ number: Double) -> String {
        number == number.rounded() && abs(number) < 1e15 ? String(Int64(number)) : String(number)
    }
}
