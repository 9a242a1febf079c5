/// A W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` of the span a
/// request belongs to, and the vendors' `tracestate` that travels with it.
///
/// Read from HTTP headers by the gateway, from a request's `trace` field (`csop run`,
/// WebSocket), and handed to plugins across the ABI (`csop_call.traceparent`), so that a
/// plugin's own spans join the caller's trace.
///
/// Parsed here rather than with swift-w3c-trace-context (which swift-otel uses): that one
/// refuses every version but `00`, where the specification asks for later versions to be read
/// by their first four fields, and its errors say nothing a caller could act on, where a
/// malformed `trace` field is answered `INVALID_PAYLOAD` naming what to fix.
public struct TraceContext: Sendable, Equatable, CustomStringConvertible {
    /// 32 lowercase hex digits, not all zero.
    public var traceID: String
    /// The parent span's id: 16 lowercase hex digits, not all zero.
    public var spanID: String
    /// Trace flags; bit 0 is "sampled".
    public var flags: UInt8
    /// The `tracestate` list as received (at most 512 bytes of printable ASCII), or nil.
    public var state: String?

    public static let maxStateBytes = 512

    /// Parses a `traceparent` (version `00`; a later version is read by its first four fields,
    /// as the specification asks) and an optional `tracestate`.
    /// - Throws: ``TraceContextError`` saying what is wrong, for a caller who sent it on purpose.
    public init(traceparent: String, tracestate: String? = nil) throws(TraceContextError) {
        let bytes = Array(traceparent.utf8)
        guard bytes.count >= 55 else {
            throw TraceContextError("traceparent must be version-traceid-spanid-flags like 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        }
        func hex(_ range: Range<Int>) -> Bool { bytes[range].allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) } }
        guard hex(0..<2), bytes[2] == 0x2D, hex(3..<35), bytes[35] == 0x2D, hex(36..<52), bytes[52] == 0x2D, hex(53..<55) else {
            throw TraceContextError("traceparent must be lowercase hex fields version-traceid(32)-spanid(16)-flags(2) separated by '-'")
        }
        let version = String(decoding: bytes[0..<2], as: UTF8.self)
        guard version != "ff" else { throw TraceContextError("traceparent version ff is invalid") }
        guard version != "00" ? (bytes.count == 55 || bytes[55] == 0x2D) : bytes.count == 55 else {
            throw TraceContextError("traceparent of version 00 is exactly 55 characters")
        }
        traceID = String(decoding: bytes[3..<35], as: UTF8.self)
        spanID = String(decoding: bytes[36..<52], as: UTF8.self)
        guard traceID.utf8.contains(where: { $0 != 0x30 }) else { throw TraceContextError("traceparent's trace id is all zeros") }
        guard spanID.utf8.contains(where: { $0 != 0x30 }) else { throw TraceContextError("traceparent's span id is all zeros") }
        flags = UInt8(String(decoding: bytes[53..<55], as: UTF8.self), radix: 16)!
        if let tracestate {
            guard tracestate.utf8.count <= Self.maxStateBytes, tracestate.utf8.allSatisfy({ (0x20...0x7E).contains($0) }) else {
                throw TraceContextError("tracestate must be at most \(Self.maxStateBytes) bytes of printable ASCII")
            }
            state = tracestate.isEmpty ? nil : tracestate
        }
    }

    /// A context with the given fields (checked by the caller).
    public init(traceID: String, spanID: String, flags: UInt8 = 1, state: String? = nil) {
        self.traceID = traceID
        self.spanID = spanID
        self.flags = flags
        self.state = state
    }

    /// The `traceparent` header value (version 00).
    public var traceparent: String {
        let flagText = String(flags, radix: 16)
        return "00-\(traceID)-\(spanID)-\(flagText.count == 1 ? "0" : "")\(flagText)"
    }

    public var description: String { traceparent }

    /// The same trace with a new span id: the context of a span started as this one's child.
    public func child() -> TraceContext {
        TraceContext(traceID: traceID, spanID: Self.randomHex(8), flags: flags, state: state)
    }

    /// A new trace (sampled), for a request that came without one.
    public static func random() -> TraceContext {
        TraceContext(traceID: randomHex(16), spanID: randomHex(8))
    }

    private static func randomHex(_ bytes: Int) -> String {
        var text = ""
        while true {
            text = (0..<bytes).map { _ in
                let byte = UInt8.random(in: 0...255)
                return String(byte >> 4, radix: 16) + String(byte & 0xF, radix: 16)
            }.joined()
            if text.utf8.contains(where: { $0 != 0x30 }) { return text }
        }
    }

    /// A request's `trace` field: a `traceparent` string, or `{"traceparent", "tracestate"?}`.
    /// - Throws: `INVALID_PAYLOAD` naming what is wrong.
    public init(json: JSONValue) throws(CSOPError) {
        let traceparent: String
        var tracestate: String?
        switch json {
        case .string(let text):
            traceparent = text
        case .object:
            let fields = try Fields(json, path: "trace", allowed: ["traceparent", "tracestate"])
            traceparent = try fields.requiredString("traceparent")
            tracestate = try fields.string("tracestate", nonEmpty: false)
        default:
            throw .invalidPayload("trace must be a traceparent string or {\"traceparent\", \"tracestate\"}, got \(json.typeName)")
        }
        do throws(TraceContextError) {
            try self.init(traceparent: traceparent, tracestate: tracestate)
        } catch {
            throw .invalidPayload("trace: \(error.message)")
        }
    }
}

/// Why a `traceparent` or `tracestate` cannot be used.
public struct TraceContextError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
