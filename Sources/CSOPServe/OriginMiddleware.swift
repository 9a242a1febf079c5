import CSOPCore
import HTTPTypes
import Hummingbird

/// CORS, and the rule that keeps other web sites out: a request whose `Origin` is neither
/// this server's own nor one of the allowed origins is refused with `FORBIDDEN` before it
/// runs. Browsers send "simple" cross-site POSTs and WebSocket handshakes without asking
/// first, so without this any page a user visits could drive a server on their machine
/// (listening on loopback without auth). Requests without `Origin` (curl, programs) pass, and
/// so do plain GETs of files (`/v1/csop.js`, the static directory, health): they change and
/// reveal nothing. `/v1/events` and the WebSocket handshake are GETs that do, and are checked.
struct OriginMiddleware: RouterMiddleware {
    typealias Context = GatewayContext

    let allowed: [String]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // Browsers send http(s) origins (or "null"); a ws:// one comes from a program, which
        // could send anything anyway.
        guard let origin = request.headers[.origin], !origin.hasPrefix("ws://"), !origin.hasPrefix("wss://") else {
            return try await next(request, context)
        }
        let path = request.uri.path
        if request.method == .get || request.method == .head, !path.hasPrefix("/v1/events"), !path.hasPrefix("/v1/ws") {
            return try await next(request, context)
        }
        if let refusal = Self.refusal(origin: origin, authority: request.head.authority, allowed: allowed) {
            return HTTPRoutes.failure(refusal)
        }
        guard Self.listed(origin, in: allowed) else { return try await next(request, context) }
        if request.method == .options {
            // A preflight.
            var headers: HTTPFields = [:]
            headers[.accessControlAllowOrigin] = origin
            headers[.accessControlAllowMethods] = "GET, POST, OPTIONS"
            headers[.accessControlAllowHeaders] = "Authorization, Content-Type, traceparent, tracestate"
            headers[.accessControlMaxAge] = "600"
            headers[.vary] = "Origin"
            return Response(status: .noContent, headers: headers)
        }
        var response = try await next(request, context)
        for field in Self.corsHeaders(origin: origin) { response.headers[field.name] = field.value }
        return response
    }

    /// The headers of an answer to a request from a listed `origin`.
    static func corsHeaders(origin: String) -> HTTPFields {
        [.accessControlAllowOrigin: origin, .accessControlExposeHeaders: "Retry-After", .vary: "Origin"]
    }

    /// `FORBIDDEN` for a request from `origin` that is neither this server's own (`authority`,
    /// the request's host) nor one of the `allowed`; nil when it may go on. A `ws://` or
    /// `wss://` origin comes from a program, which could send anything anyway, and passes.
    static func refusal(origin: String, authority: String?, allowed: [String]) -> CSOPError? {
        if origin.hasPrefix("ws://") || origin.hasPrefix("wss://") { return nil }
        let sameOrigin = authority.map { host in origin == "http://\(host)" || origin == "https://\(host)" } ?? false
        guard !sameOrigin, !listed(origin, in: allowed) else { return nil }
        return CSOPError(
            ErrorCode.forbidden,
            "requests from the web origin \(origin.prefix(200)) are not allowed; list it with --cors-origin (or [cors] origins) to let its pages call this server"
        )
    }

    static func listed(_ origin: String, in allowed: [String]) -> Bool {
        allowed.contains("*") || allowed.contains(origin)
    }
}
