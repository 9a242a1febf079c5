/// A JSON number kept as its text, for the numbers that neither `Int64` nor `Double` holds
/// exactly: integers beyond 64 bits (`18446744073709551616`), more digits than a double keeps
/// (`0.30000000000000001`), and nonzero numbers a double would round to zero (`1e-400`) or to
/// infinity (`1e400`).
///
/// ``JSONParser`` makes a ``JSONValue/number(_:)`` only for such numbers, and ``JSONWriter``
/// writes the text back verbatim, so they travel through the host unchanged. A `JSONNumber`
/// made from text that `.int` or `.double` can hold writes the same text but parses back as
/// `.int` or `.double`; parse the text (`JSONValue(parsing:)`) to get the value the parser
/// would make.
public struct JSONNumber: Sendable, Hashable, CustomStringConvertible {
    /// The number as written: RFC 8259 number syntax, ASCII.
    public let text: String

    /// Wraps `text` when it is a JSON number (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`).
    public init?(_ text: String) {
        guard Self.isNumberSyntax(Array(text.utf8)) else { return nil }
        self.text = text
    }

    /// Wraps text the parser has already scanned as a number.
    init(unchecked text: String) { self.text = text }

    public var description: String { text }

    /// The nearest double: `±infinity` beyond `±Double.greatestFiniteMagnitude`, `±0` below
    /// the smallest subnormal.
    public var doubleValue: Double { Double(text) ?? .nan }

    /// The number as an exact Int64 when it is an integer in range, whatever its spelling
    /// (`9223372036854775807.0`, `1.5e3`); nil otherwise.
    public var int64Value: Int64? {
        let decimal = Decimal(Array(text.utf8))
        guard !decimal.digits.isEmpty else { return 0 }
        // The value is 0.d1d2…dn × 10^point: an integer when point ≥ n.
        guard decimal.point >= decimal.digits.count, decimal.point <= 19 else { return nil }
        var value: Int64 = 0
        for position in 0..<decimal.point {
            let digit = position < decimal.digits.count ? Int64(decimal.digits[position] &- UInt8(ascii: "0")) : 0
            let (shifted, o1) = value.multipliedReportingOverflow(by: 10)
            let (next, o2) = decimal.negative ? shifted.subtractingReportingOverflow(digit) : shifted.addingReportingOverflow(digit)
            if o1 || o2 { return nil }
            value = next
        }
        return value
    }

    /// Whether `double`, as ``JSONWriter`` writes it (Swift's shortest round-trip form), is the
    /// same number as the JSON number `literal`: then the parser may keep it as a `.double`.
    ///
    /// Cheap for the common case: a literal of at most 15 significant digits (`DBL_DIG`) whose
    /// double is normal always comes back the same. Longer literals and subnormals compare the
    /// digits of the double's shortest form.
    static func isExact(_ double: Double, literal: UnsafeBufferPointer<UInt8>) -> Bool {
        var first = -1
        var last = -1
        var position = 0
        for byte in literal {
            if byte == UInt8(ascii: "e") || byte == UInt8(ascii: "E") { break }
            guard byte &- UInt8(ascii: "0") < 10 else { continue }
            if byte != UInt8(ascii: "0") {
                if first < 0 { first = position }
                last = position
            }
            position += 1
        }
        // Every digit zero: the number is ±0, which Double reads exactly, sign included.
        if first < 0 { return true }
        // A nonzero number that rounds to zero or to infinity.
        guard double.isFinite, double != 0 else { return false }
        if last - first < 15, double.isNormal { return true }
        return Decimal(Array(double.description.utf8)) == Decimal(Array(literal))
    }

    /// Whether `bytes` are exactly one JSON number.
    static func isNumberSyntax(_ bytes: [UInt8]) -> Bool {
        var i = 0
        func digits() -> Int {
            let start = i
            while i < bytes.count, bytes[i] &- UInt8(ascii: "0") < 10 { i += 1 }
            return i - start
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: "-") { i += 1 }
        guard i < bytes.count else { return false }
        if bytes[i] == UInt8(ascii: "0") {
            i += 1
        } else if digits() == 0 {
            return false
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
            i += 1
            guard digits() > 0 else { return false }
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
            i += 1
            if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
            guard digits() > 0 else { return false }
        }
        return i == bytes.count
    }

    /// A number's sign, significant digits (no leading or trailing zeros) and decimal point:
    /// the value is `0.digits × 10^point`. Equal decimals are equal numbers.
    struct Decimal: Equatable {
        var negative = false
        var digits: [UInt8] = []
        var point = 0

        /// Reads JSON number syntax, or Swift's `Double.description` of a finite double (which
        /// may write `e+`).
        init(_ text: some Collection<UInt8>) {
            var mantissa: [UInt8] = []
            var integerDigits = 0
            var inFraction = false
            var exponent = 0
            var exponentNegative = false
            var inExponent = false
            for byte in text {
                switch byte {
                case UInt8(ascii: "-"):
                    if inExponent { exponentNegative = true } else { negative = true }
                case UInt8(ascii: "."):
                    inFraction = true
                case UInt8(ascii: "e"), UInt8(ascii: "E"):
                    inExponent = true
                case UInt8(ascii: "0")...UInt8(ascii: "9"):
                    if inExponent {
                        // Saturates: such exponents are far outside any double anyway.
                        exponent = min(exponent * 10 + Int(byte - UInt8(ascii: "0")), 1_000_000_000)
                    } else {
                        mantissa.append(byte)
                        if !inFraction { integerDigits += 1 }
                    }
                default:
                    break
                }
            }
            point = integerDigits + (exponentNegative ? -exponent : exponent)
            var start = 0
            while start < mantissa.count, mantissa[start] == UInt8(ascii: "0") {
                start += 1
                point -= 1
            }
            var end = mantissa.count
            while end > start, mantissa[end - 1] == UInt8(ascii: "0") { end -= 1 }
            digits = Array(mantissa[start..<end])
            if digits.isEmpty { point = 0 }
        }
    }
}
