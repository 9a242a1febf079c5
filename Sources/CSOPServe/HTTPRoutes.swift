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

    /// `GET /metrics`: every series in Prometheus's text format (the host's, each plugin's and
    /// the gateway's). With auth on, it needs a token that allows `host.metrics` (`host.*`
    /// or `*` do): request counts by action and tenant-blind totals are not for every client.
    func metrics(_ request: HTTPRequestValue) async -> HTTPReply {
        do throws(CSOPError) {
            if let caller = try await services.authenticate(request), !caller.allows(Self.metricsAction) {
                return Self.failure(
                    CSOPError(.forbidden, "GET /metrics needs a token that allows \(Self.metricsAction) (or host.*); this one allows only \(caller.actions)"))
            }
        } catch {
            return Self.failure(error)
        }
        services.metrics?.refresh(services)
        guard let text = await services.host.metricsText() else {
            return Self.failure(CSOPError(.operationNotFound, "metrics are off on this host"))
        }
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
        headers[.cacheControl] = "no-store"
        return HTTPReply(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: text)))
    }

    /// The status page (``GatewayConfiguration/statusPath``): one static file with no data of
    /// its own and no outside assets. Its script reads `/metrics` (with the token the user
    /// gives it, when auth is on) and `/readyz`.
    func statusPage() -> HTTPReply {
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        headers[.cacheControl] = "no-store"
        headers[.contentSecurityPolicy] =
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'self'"
        headers[.xContentTypeOptions] = "nosniff"
        headers[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
        return HTTPReply(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: PackageResources.status_html)))
    }

    /// What a token must allow to read `/metrics` when auth is on.
    static let metricsAction = "host.metrics"

    func clientScript(_ request: HTTPRequestValue) -> HTTPReply {
        var headers: HTTPFields = [.contentType: "text/javascript; charset=utf-8", .cacheControl: "no-cache"]
        // A page on another origin may import the module; what it may call is up to the token.
        headers[.accessControlAllowOrigin] = "*"
        return HTTPReply(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: PackageResources.csop_js)))
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
        if let refusal = services.rateRefusal(caller, peer: context.peer) { return Self.reply(refusal) }
        return await EventStream(services: services, caller: caller).start(payload: payload)
    }

    // MARK: - Replies

    static func reply(_ response: CSOPResponse) -> HTTPReply {
        reply(.reply(response))
    }

    static func failure(_ error: CSOPError, id: String? = nil) -> HTTPReply {
        reply(.failure(error, id: id))
    }

    static func json(_ status: HTTPResponse.Status, _ bytes: [UInt8]) -> HTTPReply {
        reply(.json(status, bytes))
    }

    static func reply(_ answer: HTTPAnswer) -> HTTPReply {
        HTTPReply(status: answer.status, headers: answer.headers, body: .init(byteBuffer: ByteBuffer(bytes: answer.body)))
    }
}
