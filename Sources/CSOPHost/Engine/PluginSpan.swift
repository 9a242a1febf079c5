import CSOPCore
import Tracing

/// A span a plugin measured while serving a call (`csop_call.record_span`), read strictly:
/// `{"name", "start", "end", "attributes"?, "error"?}` with times in nanoseconds since the
/// Unix epoch. The host records it as a child of the call's `csop.attempt` span.
struct PluginSpan: Sendable {
    var name: String
    var start: UInt64
    var end: UInt64
    var attributes: [(String, SpanAttribute)]
    var error: String?

    static let maxAttributes = 32
    static let maxBytes = 64 << 10

    /// - Throws: `INVALID_PAYLOAD` naming the field that is wrong.
    init(json bytes: [UInt8]) throws(CSOPError) {
        guard bytes.count <= Self.maxBytes else { throw .invalidPayload("a span is at most \(Self.maxBytes) bytes of JSON") }
        let value: JSONValue
        do throws(JSONParseError) {
            value = try JSONValue(parsing: bytes)
        } catch {
            throw .invalidPayload("a span must be JSON: \(error)")
        }
        let fields = try Fields(value, path: "span", allowed: ["name", "start", "end", "attributes", "error"])
        name = try fields.requiredString("name", maxLength: 128)
        let start = try fields.requiredInt("start", in: 0...Int64.max)
        let end = try fields.requiredInt("end", in: start...Int64.max)
        self.start = UInt64(start)
        self.end = UInt64(end)
        error = try fields.string("error", maxLength: 64)
        attributes = []
        guard case .object(let object)? = value["attributes"] else {
            if let other = value["attributes"], !other.isNull {
                throw .invalidPayload("span.attributes must be an object, got \(other.typeName)")
            }
            return
        }
        guard object.count <= Self.maxAttributes else { throw .invalidPayload("span.attributes holds at most \(Self.maxAttributes) entries") }
        for (key, value) in object.members {
            guard !key.isEmpty, key.utf8.count <= 128 else { throw .invalidPayload("span.attributes names are 1-128 bytes") }
            switch value {
            case .string(let text): attributes.append((key, .string(String(text.prefix(1024)))))
            case .bool(let flag): attributes.append((key, .bool(flag)))
            case .int(let number): attributes.append((key, .int64(number)))
            case .double(let number): attributes.append((key, .double(number)))
            case .number(let number): attributes.append((key, .string(number.description)))
            default: throw .invalidPayload("span.attributes.\(key) must be a string, a number or a bool, got \(value.typeName)")
            }
        }
    }
}
