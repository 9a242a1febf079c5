import CSOPCore
import HTTPTypes
import Hummingbird

/// Turns what Hummingbird would answer with an empty body (no route, a wrong method, an
/// error thrown below) into a CSOP error response, so every answer says what to fix.
struct GatewayErrorMiddleware: RouterMiddleware {
    typealias Context = GatewayContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError {
            switch error.status {
            case .notFound:
                return HTTPRoutes.failure(
                    CSOPError(
                        GatewayErrorCode.routeNotFound,
                        "nothing is served at \(request.method) \(request.uri.path); the API is POST /v1/dispatch, POST /v1/{domain}/{operation}, GET /v1/ws, GET /v1/events, GET /healthz, GET /readyz"
                    ))
            case .methodNotAllowed:
                return HTTPRoutes.failure(
                    CSOPError(GatewayErrorCode.routeNotFound, "\(request.uri.path) does not take \(request.method)"))
            case .contentTooLarge:
                return HTTPRoutes.failure(CSOPError(GatewayErrorCode.payloadTooLarge, "the request is larger than this server takes"))
            default:
                return HTTPRoutes.failure(CSOPError(.invalidPayload, "the request could not be read (HTTP \(error.status.code))"))
            }
        }
    }
}
