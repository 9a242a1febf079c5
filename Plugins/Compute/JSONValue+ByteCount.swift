import CSOPCore

extension JSONValue {
    /// About how many bytes this value's compact JSON text takes, found without writing it:
    /// exact but for escapes in strings (each character counted once) and for doubles
    /// (counted as 24 bytes, the longest a double takes).
    var approximateJSONBytes: Int {
        switch self {
        case .null: 4
        case .bool(let value): value ? 4 : 5
        case .int(let value): Self.decimalLength(value)
        case .double: 24
        case .number(let number): number.text.utf8.count
        case .string(let text): text.utf8.count + 2
        case .array(let elements):
            elements.reduce(max(elements.count + 1, 2)) { $0 + $1.approximateJSONBytes }
        case .object(let object):
            object.members.reduce(max(object.count + 1, 2)) { $0 + $1.key.utf8.count + 3 + $1.value.approximateJSONBytes }
        }
    }

    private static func decimalLength(_ value: Int64) -> Int {
        var length = value < 0 ? 2 : 1
        var rest = value.magnitude / 10
        while rest > 0 {
            length += 1
            rest /= 10
        }
        return length
    }
}
