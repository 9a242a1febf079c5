import CSOPCore
import CSOPHost
import HTTPTypes
import Hummingbird
import Synchronization

/// What every route and connection of one gateway shares.
final class GatewayServices: Sendable {
    let host: CSOPHost
    let configuration: GatewayConfiguration
    /// Nil when auth is off: every caller is then the local owner.
    let authenticator: Authenticator?
    let rateLimiter: RateLimiter
    let router: EventRouter
    /// The open WebSockets, each with how to close it when the server stops.
    let openSockets = OpenSockets()
    /// Nil when the host's metrics are off (``HostConfiguration/metrics``).
    let metrics: GatewayMetrics?

    init(host: CSOPHost, configuration: GatewayConfiguration, authenticator: Authenticator?) {
        self.host = host
        self.configuration = configuration
        self.authenticator = authenticator
        self.rateLimiter = RateLimiter(rate: configuration.rateLimit, burst: configuration.rateBurst)
        self.router = EventRouter()
        self.metrics = host.metrics.map { GatewayMetrics(registry: $0.registry) }
    }

    /// The caller of an HTTP request's `Authorization: Bearer` token (or, for SSE, its
    /// `token` query parameter); nil when auth is off.
    /// - Throws: `UNAUTHENTICATED`, saying what is missing or wrong.
    func authenticate(_ request: HummingbirdCore.Request, queryToken: Bool = false) async throws(CSOPError) -> Caller? {
        guard let authenticator else { return nil }
        guard let token = Self.bearerToken(request.headers) ?? (queryToken ? request.uri.queryParameters["token"].map(String.init) : nil) else {
            authenticator.recordMissingToken(transport: "http")
            throw Self.missingToken(queryToken: queryToken)
        }
        return try await authenticator.verify(token)
    }

    /// `UNAUTHENTICATED` for a request without a token.
    static func missingToken(queryToken: Bool) -> CSOPError {
        CSOPError(
            ErrorCode.unauthenticated,
            "this server needs a token: send Authorization: Bearer <token>\(queryToken ? " (or ?token= for EventSource)" : "")")
    }

    /// The token of an `Authorization: Bearer` header.
    static func bearerToken(_ headers: HTTPFields) -> String? {
        headers[.authorization].flatMap(bearerToken(authorization:))
    }

    /// The token of an `Authorization` value `Bearer <token>`.
    static func bearerToken(authorization value: String) -> String? {
        let parts = value.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        // Not Foundation's trimmingCharacters: on Linux it goes through NSString, which cost
        // ~15% of an authenticated request's CPU (csop bench, gateway suite).
        var token = parts[1].utf8[...]
        while let first = token.first, first == 0x20 || first == 0x09 { token = token.dropFirst() }
        while let last = token.last, last == 0x20 || last == 0x09 { token = token.dropLast() }
        return String(Substring(token))
    }

    /// The token of a `Sec-WebSocket-Protocol: csop, csop.bearer.<token>` offer.
    static func subprotocolToken(_ headers: HTTPFields) -> (offered: Bool, token: String?) {
        var offered = false
        var token: String?
        for value in headers[values: .secWebSocketProtocol] {
            for item in value.split(separator: ",") {
                let name = item.trimmingCharacters(in: .whitespaces)
                if name == "csop" { offered = true }
                if name.hasPrefix("csop.bearer.") { token = String(name.dropFirst("csop.bearer.".count)) }
            }
        }
        return (offered, token)
    }

    /// The key rate limits count against: the token's tenant and subject, else the address.
    static func rateKey(_ caller: Caller?, peer: String) -> String {
        caller.map { "sub:\($0.tenant)/\($0.subject)" } ?? "addr:\(peer)"
    }

    /// The 429 answer (with `Retry-After`) when `caller`, or without auth the address `peer`,
    /// is over the rate limit; nil when the request may go on (it then counts against it).
    func rateRefusal(_ caller: Caller?, peer: String) -> HTTPAnswer? {
        rateLimiter.take(Self.rateKey(caller, peer: peer)).map(HTTPAnswer.rateLimited)
    }

    static func rateLimited(_ wait: Double) -> CSOPError {
        CSOPError(
            ErrorCode.rateLimited,
            "too many requests for this token: retry in \(Int((wait * 1000).rounded(.up))) ms (the server's --rate-limit)", retryable: true)
    }
}

/// The open WebSocket connections and how to close each with 1001 when the server stops:
/// Hummingbird's own shutdown closes them with 1000 ("normal"), which tells a client that
/// the server meant to end the session rather than that it is going away for a while.
final class OpenSockets: Sendable {
    private let closers = Mutex<[UInt64: @Sendable () async -> Void]>([:])
    private let next = Mutex<UInt64>(0)

    func add(_ closer: @escaping @Sendable () async -> Void) -> UInt64 {
        let id = next.withLock { id in
            id += 1
            return id
        }
        closers.withLock { $0[id] = closer }
        return id
    }

    func remove(_ id: UInt64) {
        _ = closers.withLock { $0.removeValue(forKey: id) }
    }

    /// WebSockets open now.
    var count: Int { closers.withLock { $0.count } }

    /// Closes every open socket, each once, concurrently.
    func closeAll() async {
        let all = closers.withLock { closers in
            defer { closers.removeAll() }
            return Array(closers.values)
        }
        await withTaskGroup(of: Void.self) { group in
            for closer in all { group.addTask { await closer() } }
        }
    }
}
