/// Writes compact JSON into a byte buffer. Numbers are written so that ``JSONParser`` reads
/// them back as the same value (``JSONValue``): doubles in their shortest round-trip form,
/// with `.0` on integral ones and the sign of `-0.0`; `.number` text verbatim. Non-finite
/// doubles, which JSON cannot spell, are written as `null`.
public struct JSONWriter {
    public var bytes: [UInt8]

    public init(capacity: Int = 128) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public mutating func write(_ value: JSONValue) {
        switch value {
        case .null: append("null")
        case .bool(let b): b ? append("true") : append("false")
        case .int(let i): writeInt(i)
        case .double(let d): writeDouble(d)
        case .number(let n): bytes.append(contentsOf: n.text.utf8)
        case .string(let s): writeString(s)
        case .array(let elements):
            bytes.append(UInt8(ascii: "["))
            var first = true
            for element in elements {
                if !first { bytes.append(UInt8(ascii: ",")) }
                first = false
                write(element)
            }
            bytes.append(UInt8(ascii: "]"))
        case .object(let object):
            bytes.append(UInt8(ascii: "{"))
            var first = true
            for member in object.members {
                if !first { bytes.append(UInt8(ascii: ",")) }
                first = false
                writeString(member.key)
                bytes.append(UInt8(ascii: ":"))
                write(member.value)
            }
            bytes.append(UInt8(ascii: "}"))
        }
    }

    /// Appends ASCII text verbatim.
    public mutating func append(_ text: StaticString) {
        bytes.append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    /// Appends bytes that already are valid JSON.
    public mutating func appendRaw(_ raw: some Sequence<UInt8>) { bytes.append(contentsOf: raw) }

    public mutating func writeInt(_ value: Int64) {
        if value >= 0 && value < 10 {
            bytes.append(UInt8(ascii: "0") + UInt8(value))
            return
        }
        var buffer: (UInt64, UInt64, UInt64) = (0, 0, 0)
        withUnsafeMutableBytes(of: &buffer) { raw in
            var position = 24
            var magnitude = value.magnitude
            repeat {
                position -= 1
                raw[position] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            if value < 0 {
                position -= 1
                raw[position] = UInt8(ascii: "-")
            }
            bytes.append(contentsOf: raw[position..<24])
        }
    }

    public mutating func writeDouble(_ value: Double) {
        guard value.isFinite else { return append("null") }
        if value == value.rounded(), abs(value) < 1e15 {
            // Int64(-0.0) is 0: keep the sign, which the parser reads back as .double(-0.0).
            if value.sign == .minus, value == 0 { bytes.append(UInt8(ascii: "-")) }
            writeInt(Int64(value))
            // Keep the value a double on the way back in.
            append(".0")
            return
        }
        bytes.append(contentsOf: value.description.utf8)
    }

    /// Writes `value` rounded to three decimals, exactly as ``writeDouble(_:)`` writes the
    /// rounded value ("12.5", "0.012", "3.0"), with integer arithmetic instead of Double's
    /// shortest-digits formatting: response durations are written for every request.
    public mutating func writeThousandths(_ value: Double) {
        let scaled = (value * 1000).rounded()
        let rounded = scaled / 1000
        guard rounded.isFinite, abs(rounded) < 1e12, rounded != 0 || rounded.sign == .plus else { return writeDouble(rounded) }
        let thousandths = Int64(scaled)
        if thousandths < 0 { bytes.append(UInt8(ascii: "-")) }
        writeInt(abs(thousandths) / 1000)
        var fraction = abs(thousandths) % 1000
        bytes.append(UInt8(ascii: "."))
        guard fraction != 0 else { return bytes.append(UInt8(ascii: "0")) }
        var digits = 3
        while fraction % 10 == 0 {
            fraction /= 10
            digits -= 1
        }
        var divisor: Int64 = digits == 3 ? 100 : digits == 2 ? 10 : 1
        while divisor > 0 {
            bytes.append(UInt8(ascii: "0") + UInt8(fraction / divisor % 10))
            divisor /= 10
        }
    }

    public mutating func writeString(_ string: String) {
        bytes.append(UInt8(ascii: "\""))
        var string = string
        string.withUTF8 { utf8 in
            var runStart = 0
            for i in 0..<utf8.count {
                let byte = utf8[i]
                guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
                if runStart < i { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<i])) }
                runStart = i + 1
                switch byte {
                case UInt8(ascii: "\""): append("\\\"")
                case UInt8(ascii: "\\"): append("\\\\")
                case 0x0A: append("\\n")
                case 0x0D: append("\\r")
                case 0x09: append("\\t")
                case 0x08: append("\\b")
                case 0x0C: append("\\f")
                default:
                    append("\\u00")
                    let hex: StaticString = "0123456789abcdef"
                    bytes.append(hex.utf8Start[Int(byte >> 4)])
                    bytes.append(hex.utf8Start[Int(byte & 0xF)])
                }
            }
            if runStart < utf8.count { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart...])) }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

extension JSONValue {
    /// Compact UTF-8 JSON.
    public func serialized() -> [UInt8] {
        var writer = JSONWriter()
        writer.write(self)
        return writer.bytes
    }

    /// Compact JSON text.
    public var jsonString: String { String(decoding: serialized(), as: UTF8.self) }
}
