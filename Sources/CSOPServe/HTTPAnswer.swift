import CSOPCore
import HTTPTypes

/// One HTTP answer of the gateway before it is written: the status ``HTTPStatusMap`` gives the
/// CSOP error code, the headers that go with it, and the JSON body. The Hummingbird routes
/// and ``DispatchHandler`` both write these, so a status, `Retry-After` or
/// `WWW-Authenticate` is decided in one place.
struct HTTPAnswer: Sendable {
    var status: HTTPResponse.Status
    var headers: HTTPFields
    var body: [UInt8]

    static func json(_ status: HTTPResponse.Status, _ body: [UInt8]) -> HTTPAnswer {
        HTTPAnswer(status: status, headers: [.contentType: "application/json"], body: body)
    }

    /// A CSOP response, with the status of its error code (and `Retry-After: 1` on 503).
    static func reply(_ response: CSOPResponse) -> HTTPAnswer {
        let status = HTTPStatusMap.status(for: response.error?.code)
        var answer = json(status, response.serialized())
        if HTTPStatusMap.wantsRetryAfter(status) { answer.headers[.retryAfter] = "1" }
        return answer
    }

    /// An error response (`WWW-Authenticate: Bearer` on 401).
    static func failure(_ error: CSOPError, id: String? = nil) -> HTTPAnswer {
        var answer = reply(CSOPResponse(id: id ?? CSOPRequest.generateID(), outcome: .failure(error), duration: 0))
        if error.code == ErrorCode.unauthenticated { answer.headers[.wwwAuthenticate] = "Bearer" }
        return answer
    }

    /// `RATE_LIMITED`, 429, with `Retry-After` in whole seconds (at least 1).
    static func rateLimited(_ wait: Double) -> HTTPAnswer {
        var answer = failure(GatewayServices.rateLimited(wait))
        answer.headers[.retryAfter] = String(max(1, Int(wait.rounded(.up))))
        return answer
    }

    /// The headers to write: the answer's, its length, the date, CORS for a listed `origin`,
    /// and `Connection: close` when the connection ends after it.
    func fields(origin: String?, allowedOrigins: [String], closing: Bool) -> HTTPFields {
        var fields = headers
        fields[.contentLength] = String(body.count)
        fields[.date] = HTTPDate.now()
        if let origin, OriginMiddleware.listed(origin, in: allowedOrigins) {
            fields.append(contentsOf: OriginMiddleware.corsHeaders(origin: origin))
        }
        if closing { fields[.connection] = "close" }
        return fields
    }
}
