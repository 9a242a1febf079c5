import CSOPHTTPHead
import NIOCore
import NIOEmbedded
import NIOHTTP1

/// `RawDispatchHead.parse` (the gateway's raw dispatch path) on arbitrary bytes, against NIO's
/// HTTP/1.1 parser, which reads everything the raw path hands on:
///
/// - a head it accepts ends at the first blank line, within the head limit;
/// - NIO frames that request the same way: it reads it without error as `POST` of the same
///   URI in HTTP/1.1, keep-alive exactly when the raw head is not `closing`, with the same
///   `Content-Length` (0 without one), and, when the body is all there, the same body bytes
///   and the end of the request; `Host`, `Origin` and `Authorization` have NIO's values. So no
///   byte sequence is read as one request here and as another there (request smuggling);
/// - it answers `incomplete` only while no blank line is within the limit;
/// - a request it accepts, cut anywhere inside its head, is `incomplete` (or handed on), never
///   another request.
enum HTTPHeadFuzzTarget {
    static let target = FuzzTarget(
        name: "httphead", summary: "RawDispatchHead: what it accepts, NIO's HTTP parser frames the same way",
        check: check)

    /// Small, so the fuzzer reaches the limit.
    static let maxHead = 2048
    static let blankLine: [UInt8] = [13, 10, 13, 10]

    static func check(_ bytes: [UInt8]) {
        let parsed = parse(bytes)
        let firstBlank = find(blankLine, in: bytes.prefix(maxHead))
        switch parsed {
        case .handOn:
            return
        case .incomplete:
            property(firstBlank == nil && bytes.count < maxHead, "incomplete although a blank line is at \(firstBlank ?? -1) or the limit is reached")
        case .request(let head):
            property(firstBlank.map { $0 + 4 } == head.headLength, "the head ends at \(head.headLength), the first blank line at \(firstBlank ?? -1)")
            property(head.uri.utf8.allSatisfy { (0x21...0x7E).contains($0) }, "a URI with bytes outside visible ASCII: \(shown(head.uri))")
            for cut in [head.headLength - 1, head.headLength / 2, 1] where cut > 0 {
                let shorter = parse(Array(bytes.prefix(cut)))
                property(shorter == .incomplete || shorter == .handOn, "cut at \(cut) the head parses as \(shorter)")
            }
            compareWithNIO(bytes, head)
        }
    }

    static func parse(_ bytes: [UInt8]) -> RawDispatchHead.Parsed {
        bytes.withUnsafeBytes { RawDispatchHead.parse($0, maxHeadBytes: maxHead) }
    }

    static func compareWithNIO(_ bytes: [UInt8], _ head: RawDispatchHead) {
        let complete = bytes.count >= head.headLength + head.contentLength
        let request = Array(bytes.prefix(head.headLength + head.contentLength))
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))
        defer { _ = try? channel.finish() }
        do {
            try channel.writeInbound(ByteBuffer(bytes: request))
        } catch {
            property(false, "NIO refuses a request the raw path accepted (\(error)): \(shown(request))")
        }
        var parts: [HTTPServerRequestPart] = []
        while let part = try? channel.readInbound(as: HTTPServerRequestPart.self) { parts.append(part) }
        guard case .head(let nio)? = parts.first else {
            return property(false, "NIO read no head from a request the raw path accepted: \(shown(request))")
        }
        property(nio.method == .POST, "NIO reads method \(nio.method)")
        property(nio.uri == head.uri, "NIO reads URI \(shown(nio.uri)), the raw path \(shown(head.uri))")
        property(nio.version == .http1_1, "NIO reads version \(nio.version)")
        property(nio.isKeepAlive == !head.closing, "NIO's keep-alive is \(nio.isKeepAlive), the raw path's closing \(head.closing)")
        let length = nio.headers["content-length"].first.map(trimmed).flatMap { Int($0) } ?? 0
        property(length == head.contentLength, "NIO reads Content-Length \(length), the raw path \(head.contentLength)")
        for (name, value) in [("host", head.host), ("origin", head.origin), ("authorization", head.authorization)] {
            let nioValue = nio.headers[name].first.map(trimmed)
            property(nioValue == value, "NIO reads \(name) \(nioValue.map(shown) ?? "nil"), the raw path \(value.map(shown) ?? "nil")")
        }
        guard complete else { return }
        var body: [UInt8] = []
        var ended = false
        for part in parts.dropFirst() {
            switch part {
            case .body(let buffer): body += buffer.readableBytesView
            case .end: ended = true
            case .head: property(false, "NIO reads a second head inside the raw path's one request")
            }
        }
        property(ended, "NIO did not end the request where the raw path did (\(head.headLength + head.contentLength) bytes)")
        property(body == Array(request[head.headLength...]), "NIO reads another body than the raw path")
    }

    static func trimmed(_ text: String) -> String {
        var slice = Substring(text)
        while slice.first == " " || slice.first == "\t" { slice = slice.dropFirst() }
        while slice.last == " " || slice.last == "\t" { slice = slice.dropLast() }
        return String(slice)
    }

    static func find(_ needle: [UInt8], in haystack: some Collection<UInt8>) -> Int? {
        let bytes = Array(haystack)
        guard bytes.count >= needle.count else { return nil }
        for start in 0...(bytes.count - needle.count) where bytes[start..<(start + needle.count)].elementsEqual(needle) { return start }
        return nil
    }
}
