import CSOPCore
import CSOPHost
import HTTPTypes
import Hummingbird
import HummingbirdCore
import NIOCore

typealias HTTPReply = HummingbirdCore.Response
typealias HTTPRequestValue = HummingbirdCore.Request

/// The HTTP routes of ``Gateway``. Every answer to `/v1/...` is a CSOP response (or an array
/// of them) as JSON, with the status ``HTTPStatusMap`` gives its error code.
struct HTTPRoutes: Sendable {
    let services: GatewayServices
    /// The most requests one `POST /v1/dispatch` array may hold.
    static let maxBatch = 1000

    // MARK: - Health

    func healthz() -> HTTPReply {
        Self.json(.ok, Array(#"{"status":"ok"}"#.utf8))
    }

    /// Ready when every enabled plugins.d entry loaded and every plugin that offers a `health`
    /// operation says it is ready (storage: its cold tier answers; sync: its cluster connection
    /// is up), asked with a 2 s timeout; the body lists each plugin's state.
    func readyz() async -> HTTPReply {
        let host = services.host
        let states = await withTaskGroup(of: (Int, JSONValue).self) { group in
            for (index, plugin) in host.plugins.enumerated() {
                group.addTask {
                    var state: JSONObject = ["name": .string(plugin.name), "version": .string(plugin.version), "state": "ready"]
                    guard plugin.operations.contains("health") else { return (index, .object(state)) }
                    let response = await host.dispatch("\(plugin.name).health", options: RequestOptions(timeout: 2000))
                    if let error = response.error {
                        state["state"] = "not ready"
                        state["detail"] = .string("\(plugin.name).health answered \(error.code): \(error.message)")
                    } else if case .object(let health)? = response.data, health["ready"] != .bool(true) {
                        state["state"] = "not ready"
                        state["detail"] = health["detail"] ?? .string("\(plugin.name).health says it is not ready")
                    }
                    return (index, .object(state))
                }
            }
            var ordered = [JSONValue](repeating: .null, count: host.plugins.count)
            for await (index, state) in group { ordered[index] = state }
            return ordered
        }
        var plugins = states
        for failure in host.failures {
            plugins.append(
                .object([
                    "name": failure.domain.map(JSONValue.string) ?? .null, "file": .string(failure.file), "state": "failed",
                    "reason": .string(failure.kind.rawValue),
                ]))
        }
        let ready = host.failures.isEmpty && states.allSatisfy { $0["state"] == .string("ready") }
        let body: JSONValue = .object(["status": .string(ready ? "ready" : "not ready"), "plugins": .array(plugins)])
        return Self.json(ready ? .ok : .serviceUnavailable, body.serialized())
    }

    func clientScript(_ request: HTTPRequestValue) -> HTTPReply {
        var headers: HTTPFields = [.contentType: "text/javascript; charset=utf-8", .cacheControl: "no-cache"]
        // A page on another origin may import the module; what it may call is up to the token.
        headers[.accessControlAllowOrigin] = "*"
        return HTTPReply(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: PackageResources.csop_js)))
    }

    // MARK: - Dispatch

    /// `POST /v1/dispatch`: one request object (a `csop run` line) → one response; an array
    /// of requests → an array of responses in the same order (status 200; each carries its own
    /// outcome).
    func dispatch(_ request: HTTPRequestValue, context: GatewayContext) async -> HTTPReply {
        let caller: Caller?
        do throws(CSOPError) {
            caller = try await services.authenticate(request)
        } catch {
            return Self.failure(error)
        }
        let body: [UInt8]
        do throws(CSOPError) {
            body = try await collect(request)
        } catch {
            return Self.failure(error)
        }
        let value: JSONValue
        do throws(JSONParseError) {
            value = try JSONValue(parsing: body)
        } catch {
            return Self.failure(.invalidPayload("the body is not valid JSON: \(error)"))
        }
        let rateKey = GatewayServices.rateKey(caller, peer: context.peer)
        guard case .array(let items) = value else {
            if let wait = services.rateLimiter.take(rateKey) { return Self.rateLimited(wait) }
            let response = await dispatch(value, caller: caller)
            return Self.reply(response)
        }
        guard !items.isEmpty, items.count <= Self.maxBatch else {
            return Self.failure(.invalidPayload("a batch holds 1 to \(Self.maxBatch) requests, got \(items.count)"))
        }
        if let wait = services.rateLimiter.take(rateKey, count: items.count) { return Self.rateLimited(wait) }
        let responses = await withTaskGroup(of: (Int, CSOPResponse).self) { group in
            for (index, item) in items.enumerated() {
                group.addTask { (index, await dispatch(item, caller: caller)) }
            }
            var ordered = [CSOPResponse?](repeating: nil, count: items.count)
            for await (index, response) in group { ordered[index] = response }
            return ordered.map { $0! }
        }
        var writer = JSONWriter(capacity: 128 * responses.count)
        writer.append("[")
        for (index, response) in responses.enumerated() {
            if index > 0 { writer.append(",") }
            response.write(to: &writer)
        }
        writer.append("]")
        return Self.json(.ok, writer.bytes)
    }

    /// `POST /v1/{domain}/{operation}?timeout=&retry=`: the body is the payload (empty: `{}`).
    func dispatchAction(_ request: HTTPRequestValue, context: GatewayContext) async -> HTTPReply {
        let caller: Caller?
        do throws(CSOPError) {
            caller = try await services.authenticate(request)
        } catch {
            return Self.failure(error)
        }
        let action = "\(context.parameters.get("domain") ?? "").\(context.parameters.get("operation") ?? "")"
        var options = JSONObject()
        for (key, text) in request.uri.queryParameters {
            guard key == "timeout" || key == "retry" else {
                return Self.failure(.invalidPayload("unknown query parameter \"\(key)\"; the options are timeout (ms) and retry (count)"))
            }
            guard let number = Double(text), number.isFinite else {
                return Self.failure(.invalidPayload("query parameter \(key) must be a number, got \"\(text.prefix(64))\""))
            }
            options[String(key)] = key == "retry" && number == number.rounded() && abs(number) < 1e9 ? .int(Int64(number)) : .double(number)
        }
        let body: [UInt8]
        do throws(CSOPError) {
            body = try await collect(request)
        } catch {
            return Self.failure(error)
        }
        var payload: JSONValue = .object(JSONObject())
        if body.contains(where: { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }) {
            do throws(JSONParseError) {
                payload = try JSONValue(parsing: body)
            } catch {
                return Self.failure(.invalidPayload("the body (the payload) is not valid JSON: \(error)"))
            }
        }
        if let wait = services.rateLimiter.take(GatewayServices.rateKey(caller, peer: context.peer)) {
            return Self.rateLimited(wait)
        }
        let requestValue: JSONValue = .object(["action": .string(action), "payload": payload, "options": .object(options)])
        return Self.reply(await dispatch(requestValue, caller: caller))
    }

    /// Runs one request given as JSON. A subscription needs a connection to deliver to, so
    /// `sync.subscribe` over plain HTTP is refused with a pointer to the WebSocket and SSE.
    private func dispatch(_ value: JSONValue, caller: Caller?) async -> CSOPResponse {
        var request: CSOPRequest
        switch CSOPRequest.decode(value) {
        case .success(let decoded): request = decoded
        case .failure(let failure):
            return CSOPResponse(id: failure.id ?? CSOPRequest.generateID(), outcome: .failure(failure.error), duration: 0)
        }
        if request.action == "sync.subscribe" {
            let error = CSOPError(
                .invalidAction,
                "sync.subscribe needs a connection to deliver events to: use the WebSocket at /v1/ws, or GET /v1/events?channel=... (Server-Sent Events)")
            return CSOPResponse(id: request.id, outcome: .failure(error), duration: 0)
        }
        request.caller = caller
        let admitted = request
        return await withUnsafeContinuation { continuation in
            services.host.dispatch(admitted) { continuation.resume(returning: $0) }
        }
    }

    /// The request body, up to the configured limit.
    private func collect(_ request: HTTPRequestValue) async throws(CSOPError) -> [UInt8] {
        let limit = services.configuration.maxBodyBytes
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit {
            throw Self.tooLarge(length, limit)
        }
        do {
            let buffer = try await request.body.collect(upTo: limit)
            return Array(buffer.readableBytesView)
        } catch {
            throw Self.tooLarge(nil, limit)
        }
    }

    private static func tooLarge(_ length: Int?, _ limit: Int) -> CSOPError {
        CSOPError(
            GatewayErrorCode.payloadTooLarge,
            "the body is \(length.map { "\($0) bytes" } ?? "larger than the limit"); this server takes at most \(limit) bytes (--max-body-bytes)")
    }

    // MARK: - Events

    /// `GET /v1/events?channel=...&events=a,b`: Server-Sent Events of one sync subscription.
    func events(_ request: HTTPRequestValue, context: GatewayContext) async -> HTTPReply {
        let caller: Caller?
        do throws(CSOPError) {
            caller = try await services.authenticate(request, queryToken: true)
        } catch {
            return Self.failure(error)
        }
        var payload = JSONObject()
        for (key, value) in request.uri.queryParameters {
            switch key {
            case "channel": payload["channel"] = .string(String(value))
            case "events":
                payload["events"] = .array(value.split(separator: ",").map { .string(String($0)) })
            case "token": continue
            default:
                return Self.failure(.invalidPayload("unknown query parameter \"\(key)\"; /v1/events takes channel, events and token"))
            }
        }
        if let wait = services.rateLimiter.take(GatewayServices.rateKey(caller, peer: context.peer)) {
            return Self.rateLimited(wait)
        }
        return await EventStream(services: services, caller: caller).start(payload: payload)
    }

    // MARK: - Replies

    static func reply(_ response: CSOPResponse) -> HTTPReply {
        let status = HTTPStatusMap.status(for: response.error?.code)
        var headers: HTTPFields = [.contentType: "application/json"]
        if HTTPStatusMap.wantsRetryAfter(status) {
            headers[.retryAfter] = "1"
        }
        return HTTPReply(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: response.serialized())))
    }

    static func failure(_ error: CSOPError, id: String? = nil) -> HTTPReply {
        var reply = reply(CSOPResponse(id: id ?? CSOPRequest.generateID(), outcome: .failure(error), duration: 0))
        if error.code == ErrorCode.unauthenticated {
            reply.headers[.wwwAuthenticate] = "Bearer"
        }
        return reply
    }

    /// `RATE_LIMITED`, 429, with `Retry-After` in whole seconds (at least 1).
    static func rateLimited(_ wait: Double) -> HTTPReply {
        var reply = failure(GatewayServices.rateLimited(wait))
        reply.headers[.retryAfter] = String(max(1, Int(wait.rounded(.up))))
        return reply
    }

    static func json(_ status: HTTPResponse.Status, _ bytes: [UInt8]) -> HTTPReply {
        HTTPReply(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}
