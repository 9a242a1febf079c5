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
/// | `CONFLICT` | 409 |
/// | `PAYLOAD_TOO_LARGE`, `QUOTA_EXCEEDED` | 413 |
/// | `QUEUE_FULL`, `RATE_LIMITED` | 429, with `Retry-After` |
/// | `NOT_CONNECTED`, `NOT_INITIALIZED` | 503 |
/// | `TIMEOUT` | 504 |
/// | anything else | 500 |
public enum HTTPStatusMap {
    public static func status(for code: ErrorCode?) -> HTTPResponse.Status {
        guard let code else { return .ok }
        let raw = code.rawValue
        switch raw {
        case GatewayErrorCode.unauthenticated.rawValue: return .unauthorized
        case GatewayErrorCode.forbidden.rawValue: return .forbidden
        case "CONFLICT": return .conflict
        case GatewayErrorCode.payloadTooLarge.rawValue, "QUOTA_EXCEEDED": return .contentTooLarge
        case ErrorCode.queueFull.rawValue, GatewayErrorCode.rateLimited.rawValue: return .tooManyRequests
        case "NOT_CONNECTED", ErrorCode.notInitialized.rawValue: return .serviceUnavailable
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

/// The codes the gateway itself answers with (the protocol's own are in `ErrorCode`).
public enum GatewayErrorCode {
    /// No valid token: missing, malformed, expired, not yet valid, wrong signature or audience.
    public static let unauthenticated: ErrorCode = "UNAUTHENTICATED"
    /// The token does not allow the action.
    public static let forbidden: ErrorCode = "FORBIDDEN"
    /// The token (or client address) sent more requests per second than its limit.
    public static let rateLimited: ErrorCode = "RATE_LIMITED"
    /// The body or WebSocket frame is larger than the server's limit.
    public static let payloadTooLarge: ErrorCode = "PAYLOAD_TOO_LARGE"
    /// No route at this path (or not with this method).
    public static let routeNotFound: ErrorCode = "ROUTE_NOT_FOUND"
}
