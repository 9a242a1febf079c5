import CSOPCore
import CSOPHost
import HTTPTypes
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket

/// One WebSocket connection at `/v1/ws`: the `csop run` protocol over text frames. Requests
/// run concurrently and their responses (matched by id) and the connection's events are
/// written by one writer task, in the order they are ready.
///
/// - Auth: a token from the handshake (`Authorization: Bearer`, or the subprotocol
///   `csop.bearer.<token>` that browsers can set), or else, when auth is on, a first message
///   `{"type":"auth","token":"..."}`. A refused token gets one frame
///   `{"type":"error","error":{...UNAUTHENTICATED...}}` and close code 4401.
/// - Backpressure: past `maxInFlightPerConnection` running requests the session stops
///   reading until one finishes.
/// - Limits: a frame over `maxFrameBytes` closes with 1009; a client that reads events
///   more slowly than they come is closed with 1013 once 8 MiB of events wait; a rate-limited
///   request is answered `RATE_LIMITED` (retry true).
struct WebSocketSession {
    static let closeUnauthenticated: UInt16 = 4401
    static let maxEventBytes = 8 << 20

    let gateway: GatewayServices
    /// The handshake's token, if any.
    let handshakeToken: String?
    /// The client's address, for rate limiting without auth.
    let peer: String

    func run(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, logger: Logger) async throws {
        let outbox = Outbox(maxEventBytes: Self.maxEventBytes)
        var caller: Caller?
        if let handshakeToken {
            do throws(CSOPError) {
                caller = try await gateway.authenticator?.verify(handshakeToken)
            } catch {
                return try await refuse(error, outbound: outbound)
            }
        }
        var iterator = inbound.messages(maxSize: gateway.configuration.maxFrameBytes).makeAsyncIterator()
        if gateway.authenticator != nil, caller == nil {
            // No token in the handshake: the first message must carry one.
            guard let first = try await iterator.next() else { return }
            do throws(CSOPError) {
                let token = try Self.authToken(in: first)
                caller = try await gateway.authenticator?.verify(token)
            } catch {
                return try await refuse(error, outbound: outbound)
            }
            try await outbound.write(.text(#"{"type":"auth","status":"ok"}"#))
        }
        let scope = ConnectionScope(host: gateway.host, router: gateway.router, caller: caller, sink: outbox)
        let gate = InFlightGate(limit: gateway.configuration.maxInFlightPerConnection)
        let rateKey = GatewayServices.rateKey(caller, peer: peer)
        let writer = Task {
            await withTaskCancellationHandler {
                await Self.write(outbox, to: outbound, logger: logger)
            } onCancel: {
                outbox.close()
            }
        }
        // On shutdown: answer what is running, then close with 1001 ("going away"). The host
        // bounds how long a request runs, and the server's shutdown grace bounds the wait.
        let token = gateway.openSockets.add {
            await gate.idle()
            outbox.close()
            await writer.value
            try? await outbound.close(.goingAway, reason: "the server is stopping")
        }
        defer {
            gateway.openSockets.remove(token)
            scope.close()
            outbox.close()
        }
        do {
            while let message = try await iterator.next() {
                guard case .text(let text) = message else {
                    outbox.push(Self.error(id: nil, .invalidPayload("binary frames are not accepted: send each request as a JSON text frame")))
                    continue
                }
                await gate.acquire()
                handle(Array(text.utf8), scope: scope, outbox: outbox, gate: gate, rateKey: rateKey)
            }
        } catch {
            logger.debug("WebSocket read ended: \(error)")
        }
        // The client stopped sending: answer what is running, then end.
        await gate.idle()
        outbox.close()
        await writer.value
    }

    private func handle(_ bytes: [UInt8], scope: ConnectionScope, outbox: Outbox, gate: InFlightGate, rateKey: String) {
        let value: JSONValue
        do throws(JSONParseError) {
            value = try JSONValue(parsing: bytes)
        } catch {
            outbox.push(Self.error(id: nil, .invalidPayload("the frame is not valid JSON: \(error)")))
            return gate.release()
        }
        let request: Request
        switch Request.decode(value) {
        case .success(let decoded): request = decoded
        case .failure(let failure):
            outbox.push(Self.error(id: failure.id, failure.error))
            return gate.release()
        }
        if let wait = gateway.rateLimiter.take(rateKey) {
            outbox.push(Self.error(id: request.id, GatewayServices.rateLimited(wait)))
            return gate.release()
        }
        scope.dispatch(request) { response in
            if let response { outbox.push(response.serialized()) }
            gate.release()
        }
    }

    private static func write(_ outbox: Outbox, to outbound: WebSocketOutboundWriter, logger: Logger) async {
        do {
            while true {
                switch await outbox.next() {
                case .frames(let frames):
                    for frame in frames {
                        try await outbound.write(.custom(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(bytes: frame))))
                    }
                case .overflowed:
                    try await outbound.close(.init(codeNumber: 1013), reason: "events arrived faster than this client read them")
                    return
                case .closed:
                    return
                }
            }
        } catch {
            logger.debug("WebSocket write ended: \(error)")
        }
    }

    private func refuse(_ error: CSOPError, outbound: WebSocketOutboundWriter) async throws {
        var writer = JSONWriter(capacity: 160)
        writer.append(#"{"type":"error","error":"#)
        writer.appendRaw(error.json.serialized())
        writer.append("}")
        try await outbound.write(.custom(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(bytes: writer.bytes))))
        try await outbound.close(.init(codeNumber: Int(Self.closeUnauthenticated)), reason: "unauthenticated")
    }

    /// The token of a first message `{"type":"auth","token":"..."}`.
    static func authToken(in message: WebSocketMessage) throws(CSOPError) -> String {
        guard case .text(let text) = message, case .object(let object)? = try? JSONValue(parsing: Array(text.utf8)),
            object["type"] == .string("auth"), case .string(let token)? = object["token"]
        else {
            throw CSOPError(
                ErrorCode.unauthenticated,
                "this server needs a token: send it in the handshake (Authorization: Bearer, or the subprotocol csop.bearer.<token>) or as the first message {\"type\":\"auth\",\"token\":\"...\"}"
            )
        }
        return token
    }

    static func error(id: String?, _ error: CSOPError) -> [UInt8] {
        Response(id: id ?? Request.generateID(), outcome: .failure(error), duration: 0).serialized()
    }
}
