import CSOPCore
import CSOPHost
import HTTPTypes
import HummingbirdCore
import NIOCore
import Synchronization

/// `POST /v1/dispatch` and `POST /v1/{domain}/{operation}`: what they answer for a request
/// whose body has been read. It completes through a callback, so ``RawDispatchHandler`` and
/// ``DispatchHandler`` run it on the connection's event loop without a task (a token not seen
/// before is verified in one).
///
/// - `/v1/dispatch`: one request object (a `csop run` line) → one response; an array of 1 to
///   ``maxBatch`` requests → an array of responses in the same order (status 200; each
///   carries its own outcome). Batches run concurrently.
/// - `/v1/{domain}/{operation}?timeout=&retry=`: the body is the payload (empty: `{}`).
/// - `sync.subscribe` and the watches (`storage.watch`, `compute.watch`) are refused: a subscription needs a connection to deliver to.
struct DispatchRoute: Sendable {
    enum Target: Sendable, Equatable {
        case dispatch
        /// `domain.operation`
        case action(String)
    }

    /// The most requests one `POST /v1/dispatch` array may hold.
    static let maxBatch = 1000

    let services: GatewayServices

    /// The route a request goes to, or nil when it is not a dispatch (those go to the
    /// Hummingbird router: health, events, files, and anything it answers 404).
    static func target(method: HTTPRequest.Method, path: Substring) -> Target? {
        guard method == .post, path.hasPrefix("/v1/") else { return nil }
        let rest = path.dropFirst(4)
        if rest == "dispatch" { return .dispatch }
        let parts = rest.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { return nil }
        return .action("\(parts[0]).\(parts[1])")
    }

    /// What a dispatch request carries besides its body.
    struct Head: Sendable {
        var target: Target
        /// The request target as sent (path and query).
        var uri: String
        var origin: String?
        /// The `Host` (the server's own origin is allowed).
        var authority: String?
        var authorization: String?
        /// The `traceparent` and `tracestate` headers: requests without a `trace` field of
        /// their own run in this context. Malformed ones are ignored, as W3C Trace Context asks.
        var trace: TraceContext?

        static func trace(traceparent: String?, tracestate: String?) -> TraceContext? {
            guard let traceparent else { return nil }
            return try? TraceContext(traceparent: traceparent, tracestate: tracestate)
        }
    }

    /// Answers one dispatch: checks its origin and token, then runs it. `completion` is called
    /// once, on any thread (possibly before this returns).
    /// - Parameter peer: the client's address, which the rate limit counts against when auth
    ///   is off.
    func serve(_ head: Head, body: ByteBuffer, peer: String, completion: @escaping @Sendable (HTTPAnswer) -> Void) {
        if let origin = head.origin,
            let refusal = OriginMiddleware.refusal(origin: origin, authority: head.authority, allowed: services.configuration.corsOrigins)
        {
            return completion(.failure(refusal))
        }
        guard let authenticator = services.authenticator else {
            return answer(head, body: body, caller: nil, peer: peer, completion: completion)
        }
        guard let token = head.authorization.flatMap(GatewayServices.bearerToken(authorization:)) else {
            authenticator.recordMissingToken(transport: "http")
            return completion(.failure(GatewayServices.missingToken(queryToken: false)))
        }
        if let caller = authenticator.cached(token) {
            return answer(head, body: body, caller: caller, peer: peer, completion: completion)
        }
        Task {
            do throws(CSOPError) {
                let caller = try await authenticator.verify(token)
                answer(head, body: body, caller: caller, peer: peer, completion: completion)
            } catch {
                completion(.failure(error))
            }
        }
    }

    private func answer(_ head: Head, body: ByteBuffer, caller: Caller?, peer: String, completion: @escaping @Sendable (HTTPAnswer) -> Void) {
        let rateKey = services.rateLimiter.isEnabled ? GatewayServices.rateKey(caller, peer: peer) : ""
        switch head.target {
        case .dispatch: dispatch(body: body, caller: caller, trace: head.trace, rateKey: rateKey, completion: completion)
        case .action(let action): dispatch(action, uri: head.uri, body: body, caller: caller, trace: head.trace, rateKey: rateKey, completion: completion)
        }
    }

    private func dispatch(body: ByteBuffer, caller: Caller?, trace: TraceContext?, rateKey: String, completion: @escaping @Sendable (HTTPAnswer) -> Void) {
        let value: JSONValue
        switch Self.parse(body) {
        case .success(let parsed): value = parsed
        case .failure(let error): return completion(.failure(.invalidPayload("the body is not valid JSON: \(error)")))
        }
        guard case .array(let items) = value else {
            if let wait = services.rateLimiter.take(rateKey) { return completion(.rateLimited(wait)) }
            return run(value, caller: caller, trace: trace) { completion(.reply($0)) }
        }
        guard !items.isEmpty, items.count <= Self.maxBatch else {
            return completion(.failure(.invalidPayload("a batch holds 1 to \(Self.maxBatch) requests, got \(items.count)")))
        }
        if let wait = services.rateLimiter.take(rateKey, count: items.count) { return completion(.rateLimited(wait)) }
        let batch = Batch(count: items.count)
        for (index, item) in items.enumerated() {
            run(item, caller: caller, trace: trace) { response in
                guard let responses = batch.set(index, response) else { return }
                var writer = JSONWriter(capacity: 128 * responses.count)
                writer.append("[")
                for (index, response) in responses.enumerated() {
                    if index > 0 { writer.append(",") }
                    response.write(to: &writer)
                }
                writer.append("]")
                completion(.json(.ok, writer.bytes))
            }
        }
    }

    private func dispatch(
        _ action: String, uri: String, body: ByteBuffer, caller: Caller?, trace: TraceContext?, rateKey: String,
        completion: @escaping @Sendable (HTTPAnswer) -> Void
    ) {
        var options = JSONObject()
        for (key, text) in uri.utf8.contains(UInt8(ascii: "?")) ? URI(uri).queryParameters : [:] {
            guard key == "timeout" || key == "retry" else {
                return completion(.failure(.invalidPayload("unknown query parameter \"\(key)\"; the options are timeout (ms) and retry (count)")))
            }
            guard let number = Double(text), number.isFinite else {
                return completion(.failure(.invalidPayload("query parameter \(key) must be a number, got \"\(text.prefix(64))\"")))
            }
            options[String(key)] = key == "retry" && number == number.rounded() && abs(number) < 1e9 ? .int(Int64(number)) : .double(number)
        }
        var payload: JSONValue = .object(JSONObject())
        if body.readableBytesView.contains(where: { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }) {
            switch Self.parse(body) {
            case .success(let parsed): payload = parsed
            case .failure(let error): return completion(.failure(.invalidPayload("the body (the payload) is not valid JSON: \(error)")))
            }
        }
        if let wait = services.rateLimiter.take(rateKey) { return completion(.rateLimited(wait)) }
        run(.object(["action": .string(action), "payload": payload, "options": .object(options)]), caller: caller, trace: trace) { completion(.reply($0)) }
    }

    /// Runs one request given as JSON; its own `trace` field wins over the headers' `trace`.
    private func run(_ value: JSONValue, caller: Caller?, trace: TraceContext?, completion: @escaping @Sendable (CSOPResponse) -> Void) {
        var request: CSOPRequest
        switch CSOPRequest.decode(value) {
        case .success(let decoded): request = decoded
        case .failure(let failure):
            return completion(CSOPResponse(id: failure.id ?? CSOPRequest.generateID(), outcome: .failure(failure.error), duration: 0))
        }
        if ConnectionScope.subscribes(request.action) {
            let sse = request.action == "sync.subscribe" ? ", or GET /v1/events?channel=... (Server-Sent Events)" : ""
            let error = CSOPError(.invalidAction, "\(request.action) needs a connection to deliver events to: use the WebSocket at /v1/ws\(sse)")
            return completion(CSOPResponse(id: request.id, outcome: .failure(error), duration: 0))
        }
        request.caller = caller
        if request.trace == nil { request.trace = trace }
        services.host.dispatch(request, completion: completion)
    }

    private static func parse(_ body: ByteBuffer) -> Result<JSONValue, JSONParseError> {
        body.withUnsafeReadableBytes { raw in
            do throws(JSONParseError) {
                return .success(try JSONParser.parse(raw.bindMemory(to: UInt8.self)))
            } catch {
                return .failure(error)
            }
        }
    }

    /// The too-large refusal, naming the limit.
    static func tooLarge(_ length: Int?, _ limit: Int) -> CSOPError {
        CSOPError(
            GatewayErrorCode.payloadTooLarge,
            "the body is \(length.map { "\($0) bytes" } ?? "larger than the limit"); this server takes at most \(limit) bytes (--max-body-bytes)")
    }
}

/// The responses of one batch as they come, in the batch's order.
private final class Batch: Sendable {
    private let state: Mutex<(responses: [CSOPResponse?], missing: Int)>

    init(count: Int) {
        state = Mutex((Array(repeating: nil, count: count), count))
    }

    /// Records one response; returns all of them once the last one came.
    func set(_ index: Int, _ response: CSOPResponse) -> [CSOPResponse]? {
        state.withLock { state in
            state.responses[index] = response
            state.missing -= 1
            return state.missing == 0 ? state.responses.map { $0! } : nil
        }
    }
}
