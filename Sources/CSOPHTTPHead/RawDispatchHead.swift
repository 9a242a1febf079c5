/// The head of an HTTP/1.1 request `POST /v1/...` read straight from a connection's bytes,
/// for the gateway's raw dispatch path: strictly formed, or not at all. Anything else — another
/// method or path, a `Transfer-Encoding`, an `Expect`, an upgrade, a repeated or malformed
/// `Content-Length`, a byte a strict reading would question — is not judged here: it is
/// ``Parsed/handOn``, and NIO's full HTTP parser reads it (and answers what is wrong with it).
/// So this parser only has to be right about requests that are plainly well formed, and a
/// fuzz target (`csop-fuzz httphead`) checks that NIO's parser frames every one of those the
/// same way.
public struct RawDispatchHead: Sendable, Equatable {
    /// The request target as sent (path and query): printable ASCII.
    public var uri: String
    /// Bytes from the request line through the blank line.
    public var headLength: Int
    public var contentLength: Int
    /// `Connection: close`: the connection ends after the answer.
    public var closing: Bool
    public var origin: String?
    public var host: String?
    public var authorization: String?
    /// W3C Trace Context headers, as sent (the gateway checks them).
    public var traceparent: String?
    public var tracestate: String?

    /// The path: the target up to its query.
    public var path: Substring {
        uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
    }

    public enum Parsed: Equatable, Sendable {
        /// A request whose head is complete (its body may not be).
        case request(RawDispatchHead)
        /// More bytes are needed to tell.
        case incomplete
        /// Not for the raw path: NIO's parser reads it from its first byte.
        case handOn
    }

    private static let prefix = Array("POST /v1/".utf8)
    private static let version = Array(" HTTP/1.1\r\n".utf8)

    /// Reads the head at the start of `bytes`.
    /// - Parameter maxHeadBytes: past this many bytes without the blank line, the request is
    ///   handed on (NIO refuses heads that are too large).
    public static func parse(_ bytes: UnsafeRawBufferPointer, maxHeadBytes: Int) -> Parsed {
        // Tell early: most requests that are not dispatches show it in their first bytes.
        let start = min(bytes.count, prefix.count)
        for index in 0..<start where bytes[index] != prefix[index] { return .handOn }
        guard let end = headEnd(bytes, limit: maxHeadBytes) else {
            return bytes.count >= maxHeadBytes ? .handOn : .incomplete
        }
        // The request line: POST <target> HTTP/1.1
        var index = 5
        while index < end, bytes[index] != 0x20 {
            guard (0x21...0x7E).contains(bytes[index]) else { return .handOn }
            index += 1
        }
        let uri = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[5..<index]), as: UTF8.self)
        guard index + version.count <= end + 2 else { return .handOn }
        for offset in 0..<version.count where bytes[index + offset] != version[offset] { return .handOn }
        index += version.count
        var head = RawDispatchHead(uri: uri, headLength: end + 4, contentLength: 0, closing: false, origin: nil, host: nil, authorization: nil)
        var sawLength = false
        // Header lines up to the blank line (at `end`).
        while index < end + 2 {
            // name
            let nameStart = index
            while index < end, bytes[index] != UInt8(ascii: ":") {
                guard isTokenByte(bytes[index]) else { return .handOn }
                index += 1
            }
            guard index < end, index > nameStart else { return .handOn }
            let name = UnsafeRawBufferPointer(rebasing: bytes[nameStart..<index])
            index += 1
            // value: optional white space, visible bytes, optional white space, CRLF
            let afterColon = index
            while index < end, bytes[index] == 0x20 || bytes[index] == 0x09 { index += 1 }
            let valueStart = index
            var valueEnd = index
            while index < end + 2, bytes[index] != 0x0D {
                let byte = bytes[index]
                // Visible ASCII, space and tab; other bytes (obs-text too) are for NIO to judge.
                guard byte == 0x09 || (0x20...0x7E).contains(byte) else { return .handOn }
                index += 1
                if byte != 0x20 && byte != 0x09 { valueEnd = index }
            }
            guard index + 1 < bytes.count, bytes[index] == 0x0D, bytes[index + 1] == 0x0A else { return .handOn }
            let value = UnsafeRawBufferPointer(rebasing: bytes[valueStart..<valueEnd])
            index += 2
            switch lowercased(name) {
            case "content-length":
                // Only spaces around the digits: NIO's parser refuses a tab after them.
                let raw = UnsafeRawBufferPointer(rebasing: bytes[afterColon..<(index - 2)])
                guard !sawLength, !raw.contains(0x09), let length = decimal(value) else { return .handOn }
                sawLength = true
                head.contentLength = length
            case "transfer-encoding", "expect", "upgrade", "te":
                return .handOn
            case "connection":
                // llhttp, under NIO, does not see `close` followed by a tab as `close`: let NIO judge.
                guard !UnsafeRawBufferPointer(rebasing: bytes[afterColon..<(index - 2)]).contains(0x09) else { return .handOn }
                let tokens = lowercased(value).split(separator: ",").map { $0.trimmingSpaces() }
                if tokens.contains("upgrade") { return .handOn }
                if tokens.contains("close") { head.closing = true }
            case "origin":
                guard head.origin == nil else { return .handOn }
                head.origin = String(decoding: value, as: UTF8.self)
            case "host":
                guard head.host == nil else { return .handOn }
                head.host = String(decoding: value, as: UTF8.self)
            case "authorization":
                guard head.authorization == nil else { return .handOn }
                head.authorization = String(decoding: value, as: UTF8.self)
            case "traceparent":
                guard head.traceparent == nil else { return .handOn }
                head.traceparent = String(decoding: value, as: UTF8.self)
            case "tracestate":
                // Several tracestate lines make one list: NIO's parser reads those.
                guard head.tracestate == nil else { return .handOn }
                head.tracestate = String(decoding: value, as: UTF8.self)
            default:
                break
            }
        }
        return .request(head)
    }

    /// The offset of the "\r\n\r\n" that ends the head, looked for in the first `limit` bytes.
    private static func headEnd(_ bytes: UnsafeRawBufferPointer, limit: Int) -> Int? {
        let count = min(bytes.count, limit)
        guard count >= 4 else { return nil }
        var index = 0
        while index + 3 < count {
            if bytes[index + 3] != 0x0A {
                index += bytes[index + 3] == 0x0D ? 1 : 4
                continue
            }
            if bytes[index] == 0x0D, bytes[index + 1] == 0x0A, bytes[index + 2] == 0x0D { return index }
            index += 1
        }
        return nil
    }

    /// RFC 9110's `tchar`.
    private static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
            UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
            UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            true
        default: false
        }
    }

    private static func lowercased(_ bytes: UnsafeRawBufferPointer) -> String {
        String(decoding: bytes.map { (0x41...0x5A).contains($0) ? $0 | 0x20 : $0 }, as: UTF8.self)
    }

    /// 1 to 15 decimal digits, and nothing else.
    private static func decimal(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard (1...15).contains(bytes.count) else { return nil }
        var value = 0
        for byte in bytes {
            guard (0x30...0x39).contains(byte) else { return nil }
            value = value * 10 + Int(byte - 0x30)
        }
        return value
    }
}

extension Substring {
    fileprivate func trimmingSpaces() -> Substring {
        var text = self
        while text.first == " " || text.first == "\t" { text = text.dropFirst() }
        while text.last == " " || text.last == "\t" { text = text.dropLast() }
        return text
    }
}
