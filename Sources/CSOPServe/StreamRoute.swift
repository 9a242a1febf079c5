import CSOPCore
import CSOPHost
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import NIOCore

/// `PUT /v1/streams/{key}` and `GET /v1/streams/{key}`: a streamed storage value as a raw HTTP
/// body, in either direction, never whole in memory (``CSOPHost/saveStream(_:from:ttl:ifVersion:caller:timeout:)``
/// and ``CSOPHost/readStream(_:caller:timeout:)`` as the token's caller: the token must
/// allow `storage.upload`, `storage.append` and `storage.commit` to save, `storage.read` to
/// read). `{key}` is the rest of the path, percent-decoded.
///
/// - PUT: the body (any length, chunked or not) becomes the value when it has all arrived; the
///   answer is the commit's CSOP response. `?ttl=` (ms) and `?ifVersion=` are the save's
///   options. A body cut short saves nothing.
/// - GET: `200` with the bytes as `application/octet-stream`, `Content-Length` and
///   `ETag: "<version>"`; an error before the first byte is a CSOP response with its status.
///   If the key changes while it is being sent, the connection is closed before
///   `Content-Length` bytes: a client never gets two versions mixed.
struct StreamRoute: Sendable {
    static let prefix = "/v1/streams/"
    /// Milliseconds each step (an append, a slice, the commit) may take: a step may wait for
    /// the database behind other writers, and a timed-out step fails the whole transfer.
    static let stepTimeout = 60_000.0

    let services: GatewayServices

    func put(_ request: HTTPRequestValue, context: GatewayContext) async -> HTTPReply {
        let start = WallClock.nanoseconds()
        let key: String, caller: Caller?
        var ttl: Int64?, ifVersion: Int64?
        do throws(CSOPError) {
            (key, caller) = try await admit(request, context: context)
            for (name, value) in request.uri.queryParameters {
                switch name {
                case "ttl": ttl = try Self.integer(value, name: "ttl", in: 1...Int64.max)
                case "ifVersion": ifVersion = try Self.integer(value, name: "ifVersion", in: 0...Int64.max)
                default: throw .invalidPayload("unknown query parameter \"\(name)\"; PUT \(Self.prefix){key} takes ttl and ifVersion")
                }
            }
        } catch {
            return HTTPRoutes.failure(error)
        }
        if let refusal = services.rateRefusal(caller, peer: context.peer) { return HTTPRoutes.reply(refusal) }
        let body = request.body.map { Array(buffer: $0) }
        do {
            let saved = try await services.host.saveStream(key, from: body, ttl: ttl, ifVersion: ifVersion, caller: caller, timeout: Self.stepTimeout)
            let duration = Double(WallClock.nanoseconds() - start) / 1e6
            return HTTPRoutes.reply(CSOPResponse(id: CSOPRequest.generateID(), outcome: .success(RawJSON(saved)), duration: duration))
        } catch let error as CSOPError {
            return HTTPRoutes.failure(error)
        } catch {
            return HTTPRoutes.failure(.invalidPayload("the request body ended before it was complete (\(error)); nothing was saved"))
        }
    }

    func get(_ request: HTTPRequestValue, context: GatewayContext) async -> HTTPReply {
        let key: String, caller: Caller?
        do throws(CSOPError) {
            (key, caller) = try await admit(request, context: context)
            if let name = request.uri.queryParameters.first?.key {
                throw .invalidPayload("unknown query parameter \"\(name)\"; GET \(Self.prefix){key} takes none")
            }
        } catch {
            return HTTPRoutes.failure(error)
        }
        if let refusal = services.rateRefusal(caller, peer: context.peer) { return HTTPRoutes.reply(refusal) }
        var slices = services.host.readStream(key, caller: caller, timeout: Self.stepTimeout).makeAsyncIterator()
        let first: [UInt8]?
        do throws(CSOPError) {
            first = try await slices.next()
        } catch {
            return HTTPRoutes.failure(error)
        }
        let size = slices.size ?? 0
        var headers: HTTPFields = [.contentType: "application/octet-stream", .cacheControl: "no-store"]
        headers[.eTag] = "\"\(slices.version ?? 0)\""
        headers[.contentLength] = String(size)
        return HTTPReply(
            status: .ok, headers: headers,
            body: ResponseBody(contentLength: Int(size)) { [slices] writer in
                var slices = slices
                if let first { try await writer.write(ByteBuffer(bytes: first)) }
                while let next = try await slices.next() { try await writer.write(ByteBuffer(bytes: next)) }
                try await writer.finish(nil)
            })
    }

    /// The request's key and caller, once its token lets it in.
    private func admit(_ request: HTTPRequestValue, context: GatewayContext) async throws(CSOPError) -> (String, Caller?) {
        let caller = try await services.authenticate(request)
        let raw = request.uri.path.dropFirst(Self.prefix.count)
        guard !raw.isEmpty, let key = String(raw).removingPercentEncoding, !key.isEmpty else {
            throw .invalidPayload("the path must be \(Self.prefix){key}, with the key percent-encoded (UTF-8)")
        }
        return (key, caller)
    }

    private static func integer(_ text: Substring, name: String, in range: ClosedRange<Int64>) throws(CSOPError) -> Int64 {
        guard let value = Int64(text), range.contains(value) else {
            throw .invalidPayload("query parameter \(name) must be an integer in \(range.lowerBound)...\(range.upperBound), got \"\(text)\"")
        }
        return value
    }
}
