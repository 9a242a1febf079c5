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

    /// Writes `string` quoted, escaping `"`, `\\` and control characters. Runs without them
    /// are found eight bytes at a time and copied whole: a request's payload may carry
    /// megabytes of base64 text.
    public mutating func writeString(_ string: String) {
        var string = string
        string.withUTF8 { utf8 in
            let count = utf8.count
            // One move for a long string, not a doubling per power of two it passes; grown
            // geometrically still (reserveCapacity alone would grow to the exact size).
            let needed = bytes.count + count + 2
            if count >= 1024, needed > bytes.capacity { bytes.reserveCapacity(max(needed, bytes.capacity * 2)) }
            bytes.append(UInt8(ascii: "\""))
            guard let base = utf8.baseAddress else { return }
            let raw = UnsafeRawPointer(base)
            let ones: UInt64 = 0x0101_0101_0101_0101
            let high: UInt64 = 0x8080_8080_8080_8080
            var runStart = 0
            var i = 0
            // Where the next eight-byte test may start: after a word that has a special byte,
            // its eight bytes are taken one by one, so escape-heavy text costs no test per byte.
            var nextWord = 0
            while i < count {
                if i >= nextWord, i + 8 <= count {
                    // Whether any of the eight bytes is below 0x20, a quote or a backslash
                    // (each test sets a byte's high bit; a borrow can only add false hits
                    // above a true one, so the answer is exact for the word).
                    let x = raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                    let control = (x &- ones &* 0x20) & ~x & high
                    let q = x ^ (ones &* 0x22)
                    let b = x ^ (ones &* 0x5C)
                    if control | ((q &- ones) & ~q & high) | ((b &- ones) & ~b & high) == 0 {
                        i += 8
                        continue
                    }
                    nextWord = i + 8
                }
                let byte = utf8[i]
                i += 1
                guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
                if runStart < i - 1 { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<(i - 1)])) }
                runStart = i
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
            if runStart < count { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart...])) }
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
