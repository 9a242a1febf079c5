public import CSOPCore
public import HTTPTypes

/// The HTTP status of a CSOP response, from its error code: one table, documented in the
/// README's "Serving over the network". The body always carries the whole CSOP response.
///
/// | code | status |
/// |---|---|
/// | none (ok) | 200 |
/// | `INVALID_*` | 400 |
/// | `UNAUTHENTICATED` | 401 |
/// | `FORBIDDEN` | 403 |
/// | `*_NOT_FOUND` | 404 |
/// | `CONFLICT`, `STREAMED_VALUE`, `NOT_STREAMED` | 409 |
/// | `PAYLOAD_TOO_LARGE`, `QUOTA_EXCEEDED` | 413 |
/// | `QUEUE_FULL`, `RATE_LIMITED` | 429, with `Retry-After` |
/// | `NOT_CONNECTED`, `NOT_INITIALIZED`, `CIRCUIT_OPEN`, `PLUGIN_CRASHED` | 503 |
/// | `TIMEOUT` | 504 |
/// | anything else | 500 |
public enum HTTPStatusMap {
    public static func status(for code: ErrorCode?) -> HTTPResponse.Status {
        guard let code else { return .ok }
        let raw = code.rawValue
        switch raw {
        case ErrorCode.unauthenticated.rawValue: return .unauthorized
        case ErrorCode.forbidden.rawValue: return .forbidden
        case "CONFLICT", "STREAMED_VALUE", "NOT_STREAMED": return .conflict
        case GatewayErrorCode.payloadTooLarge.rawValue, "QUOTA_EXCEEDED": return .contentTooLarge
        case ErrorCode.queueFull.rawValue, ErrorCode.rateLimited.rawValue: return .tooManyRequests
        case "NOT_CONNECTED", ErrorCode.notInitialized.rawValue, ErrorCode.circuitOpen.rawValue, ErrorCode.pluginCrashed.rawValue:
            return .serviceUnavailable
        case ErrorCode.timeout.rawValue: return .gatewayTimeout
        default:
            if raw.hasPrefix("INVALID_") { return .badRequest }
            if raw.hasSuffix("_NOT_FOUND") { return .notFound }
            return .internalServerError
        }
    }

    /// Whether the status asks the client to come back later (`Retry-After`).
    public static func wantsRetryAfter(_ status: HTTPResponse.Status) -> Bool {
        status == .tooManyRequests || status == .serviceUnavailable
    }
}

/// The codes only the gateway answers with (`UNAUTHENTICATED`, `FORBIDDEN` and
/// `RATE_LIMITED` are the protocol's, in `ErrorCode`).
public enum GatewayErrorCode {
    /// The body or WebSocket frame is larger than the server's limit.
    public static let payloadTooLarge: ErrorCode = "PAYLOAD_TOO_LARGE"
    /// No route at this path (or not with this method).
    public static let routeNotFound: ErrorCode = "ROUTE_NOT_FOUND"
    /// The bytes are not a well-formed HTTP/1.1 request (the message says what the parser
    /// refused); the connection closes after the answer.
    public static let invalidHTTP: ErrorCode = "INVALID_HTTP"
}
