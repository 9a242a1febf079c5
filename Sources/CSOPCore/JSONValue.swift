/// A JSON value. Objects keep their members in document order, so a value round-trips
/// through ``JSONValue/init(parsing:)`` and ``JSONValue/serialized()`` byte for byte when
/// it was written compactly.
///
/// Numbers are exact: the parser reads a number as `.int` when it is an integer literal that
/// fits in 64 bits, as `.double` when the double, written back, is the same number (`1.5`,
/// `1e300`, `-0` and `-0.0` as `-0.0`), and otherwise keeps its text as `.number`
/// (`18446744073709551616`, `1e-400`, `1e400`). So parse → write → parse gives the same value,
/// and a number comes back as the same number, though not always in the same spelling
/// (`1E2` is written `100.0`).
///
/// Equality is exact too: two values are equal when they are the same case with the same
/// contents. So `.int(1) != .double(1)` (they are written `1` and `1.0`), doubles compare
/// by bit pattern (`-0.0 != 0.0`, and a NaN equals itself, so `==` is an equivalence), and
/// `.number` compares its text. Strings and keys compare as Swift strings (canonical
/// equivalence).
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    /// An integer that fits in 64 bits.
    case int(Int64)
    /// A number that a double holds exactly: written back in its shortest form, it is the
    /// same number (`-0.0` included).
    case double(Double)
    /// Any other number, as its text: see ``JSONNumber``.
    case number(JSONNumber)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)
}

/// A JSON object: members in document order, looked up by key.
public struct JSONObject: Sendable, Hashable, ExpressibleByDictionaryLiteral, Sequence {
    public var members: [(key: String, value: JSONValue)]

    public init() { members = [] }
    public init(_ members: [(key: String, value: JSONValue)]) { self.members = members }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        members = elements.map { (key: $0.0, value: $0.1) }
    }

    public var count: Int { members.count }
    public var isEmpty: Bool { members.isEmpty }
    public var keys: [String] { members.map(\.key) }

    /// The value of the last member named `key`, or nil; setting nil removes the member.
    public subscript(key: String) -> JSONValue? {
        get {
            var i = members.count - 1
            while i >= 0 {
                if members[i].key == key { return members[i].value }
                i -= 1
            }
            return nil
        }
        set {
            if let index = members.lastIndex(where: { $0.key == key }) {
                if let newValue { members[index].value = newValue } else { members.remove(at: index) }
            } else if let newValue {
                members.append((key: key, value: newValue))
            }
        }
    }

    public func makeIterator() -> IndexingIterator<[(key: String, value: JSONValue)]> { members.makeIterator() }

    public static func == (lhs: JSONObject, rhs: JSONObject) -> Bool {
        guard lhs.members.count == rhs.members.count else { return false }
        for (l, r) in zip(lhs.members, rhs.members) where l.key != r.key || l.value != r.value { return false }
        return true
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(members.count)
        for member in members {
            hasher.combine(member.key)
            hasher.combine(member.value)
        }
    }
}

extension JSONValue: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral,
    ExpressibleByDictionaryLiteral
{
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(JSONObject(elements.map { (key: $0.0, value: $0.1) }))
    }
}

extension JSONValue {
    public var isNull: Bool { if case .null = self { true } else { false } }
    public var boolValue: Bool? { if case .bool(let b) = self { b } else { nil } }
    public var stringValue: String? { if case .string(let s) = self { s } else { nil } }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { a } else { nil } }
    public var objectValue: JSONObject? { if case .object(let o) = self { o } else { nil } }

    /// The number as the nearest Double, for `.int`, `.double` and `.number`; for a `.number`
    /// that is `±infinity` beyond the doubles' range and `±0` below it.
    public var doubleValue: Double? {
        switch self {
        case .int(let i): Double(i)
        case .double(let d): d
        case .number(let n): n.doubleValue
        default: nil
        }
    }

    /// The number as an exact Int64: `.int`, or a `.double` or `.number` with no fractional
    /// part in range.
    public var int64Value: Int64? {
        switch self {
        case .int(let i): i
        case .double(let d): d.rounded() == d && abs(d) < 9.2e18 ? Int64(d) : nil
        case .number(let n): n.int64Value
        default: nil
        }
    }

    /// Member lookup on objects; nil for other kinds.
    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { o[key] } else { nil }
    }

    /// The JSON type name, for error messages.
    public var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "boolean"
        case .int, .double, .number: "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }
}

extension JSONValue {
    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): true
        case (.bool(let l), .bool(let r)): l == r
        case (.int(let l), .int(let r)): l == r
        case (.double(let l), .double(let r)): l.bitPattern == r.bitPattern
        case (.number(let l), .number(let r)): l == r
        case (.string(let l), .string(let r)): l == r
        case (.array(let l), .array(let r)): l == r
        case (.object(let l), .object(let r)): l == r
        default: false
        }
    }

    public func hash(into hasher: inout Hasher) {
        switch self {
        case .null: hasher.combine(0)
        case .bool(let b): hasher.combine(1); hasher.combine(b)
        case .int(let i): hasher.combine(2); hasher.combine(i)
        case .double(let d): hasher.combine(3); hasher.combine(d.bitPattern)
        case .number(let n): hasher.combine(4); hasher.combine(n)
        case .string(let s): hasher.combine(5); hasher.combine(s)
        case .array(let a): hasher.combine(6); hasher.combine(a)
        case .object(let o): hasher.combine(7); hasher.combine(o)
        }
    }
}
