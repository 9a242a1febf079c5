public import CSOPCore
/// A validated `domain.operation` action name.
public struct Action: Sendable, Hashable, CustomStringConvertible {
    public let domain: String
    public let operation: String

    /// The longest identifier allowed on either side of the dot.
    public static let maxIdentifierLength = 64

    /// Parses `text`.
    /// - Throws: `INVALID_ACTION` saying what is wrong with it.
    public init(_ text: String) throws(CSOPError) {
        // One pass over the bytes: this runs for every request.
        var contiguous = text
        let parsed = contiguous.withUTF8 { bytes in Result { () throws(CSOPError) in try Self.dot(in: bytes, of: text) } }
        let dot = try parsed.get()
        let utf8 = text.utf8
        let split = utf8.index(utf8.startIndex, offsetBy: dot)
        domain = String(Substring(utf8[..<split]))
        operation = String(Substring(utf8[utf8.index(after: split)...]))
    }

    /// Where the one dot of a valid action is.
    private static func dot(in bytes: UnsafeBufferPointer<UInt8>, of text: String) throws(CSOPError) -> Int {
        guard let dot = bytes.firstIndex(of: UInt8(ascii: ".")) else {
            throw CSOPError(.invalidAction, "action \(quote(text)) must be \"domain.operation\", e.g. \"storage.save\"")
        }
        guard !bytes[(dot + 1)...].contains(UInt8(ascii: ".")) else {
            throw CSOPError(.invalidAction, "action \(quote(text)) has more than one '.'; use \"domain.operation\"")
        }
        try check(UnsafeBufferPointer(rebasing: bytes[..<dot]), part: "domain", in: text)
        try check(UnsafeBufferPointer(rebasing: bytes[(dot + 1)...]), part: "operation", in: text)
        return dot
    }

    public var description: String { "\(domain).\(operation)" }

    private static func check(_ part: UnsafeBufferPointer<UInt8>, part name: String, in text: String) throws(CSOPError) {
        guard let first = part.first else {
            throw CSOPError(.invalidAction, "action \(quote(text)) has an empty \(name); use \"domain.operation\"")
        }
        guard part.count <= maxIdentifierLength else {
            throw CSOPError(.invalidAction, "the \(name) of the action is longer than \(maxIdentifierLength) bytes")
        }
        func isLetter(_ b: UInt8) -> Bool { (b | 0x20) >= UInt8(ascii: "a") && (b | 0x20) <= UInt8(ascii: "z") || b == UInt8(ascii: "_") }
        func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }
        guard isLetter(first), part.allSatisfy({ isLetter($0) || isDigit($0) }) else {
            throw CSOPError(
                .invalidAction,
                "the \(name) in action \(quote(text)) must be an identifier: a letter or '_' followed by letters, digits or '_'")
        }
    }

    private static func quote(_ text: String) -> String {
        let shown = text.count > 80 ? String(text.prefix(80)) + "…" : text
        return "\"\(shown)\""
    }
}
