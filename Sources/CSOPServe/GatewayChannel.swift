import CSOPCore
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket

/// Each accepted connection: dispatches read from its bytes by a ``RawDispatchHandler``; from
/// the first other request on, NIO's HTTP/1.1 pipeline (dispatches served by a
/// ``DispatchHandler``, every other request by Hummingbird's responder), or, after a handshake
/// at `/v1/ws`, a ``WebSocketConnection`` handler on the connection's event loop.
///
/// Why not hummingbird-websocket's channel: it runs every WebSocket as a few async tasks
/// around an `NIOAsyncChannel`, flushing once per frame and waking one writer task per
/// connection for each event. That costs ~35 KiB per idle connection and caps one connection
/// near 40k requests/s; a channel handler writes a batch of frames with one flush and holds
/// no task while idle (`csop bench --only gateway`).
struct GatewayChannel: ServerChildChannel, HTTPChannelHandler {
    enum UpgradeResult: Sendable {
        /// The connection only dispatched (served by ``RawDispatchHandler``), and has closed.
        case served
        /// The connection is a WebSocket now, served by its channel handler.
        case webSocket
        case notUpgraded(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        /// A handshake that was refused, and why.
        case refused(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, CSOPError)
    }

    struct Value: ServerChildChannelValue {
        let upgradeResult: EventLoopFuture<UpgradeResult>
        let channel: any Channel
    }

    let responder: HTTPChannelHandler.Responder
    let services: GatewayServices
    let http1: HTTP1Channel.Configuration

    init(responder: @escaping HTTPChannelHandler.Responder, services: GatewayServices, http1: HTTP1Channel.Configuration) {
        self.responder = Self.redirectingUpgrades(responder)
        self.services = services
        self.http1 = http1
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let refusal = NIOLoopBoundBox<CSOPError?>(nil, eventLoop: channel.eventLoop)
            let configuration = services.configuration
            let upgrader = NIOTypedWebSocketServerUpgrader<UpgradeResult>(
                maxFrameSize: configuration.maxFrameBytes,
                enableAutomaticErrorHandling: false,  // WebSocketConnection answers frame errors
                shouldUpgrade: { channel, head in
                    switch Self.handshake(head, allowedOrigins: configuration.corsOrigins) {
                    case .success(let headers): return channel.eventLoop.makeSucceededFuture(headers)
                    case .failure(let reason):
                        refusal.value = reason
                        return channel.eventLoop.makeSucceededFuture(nil)
                    }
                },
                upgradePipelineHandler: { [services] channel, head in
                    channel.eventLoop.makeCompletedFuture {
                        if let answerer = try? channel.pipeline.syncOperations.handler(type: ParseErrorAnswer.self) {
                            channel.pipeline.syncOperations.removeHandler(answerer, promise: nil)
                        }
                        // WebSocketConnection writes encoded frames (ServerFrames) past NIO's encoder.
                        let outlet = FrameOutlet()
                        try channel.pipeline.syncOperations.addHandler(
                            outlet, position: .before(try channel.pipeline.syncOperations.handler(type: WebSocketFrameEncoder.self)))
                        let headers = HTTPFields(head.headers, splitCookie: false)
                        let token = GatewayServices.bearerToken(headers) ?? GatewayServices.subprotocolToken(headers).token
                        let connection = WebSocketConnection(
                            gateway: services, handshakeToken: token, peer: channel.remoteAddress?.ipAddress ?? "unknown",
                            outlet: outlet, logger: logger)
                        try channel.pipeline.syncOperations.addHandler(connection)
                        return UpgradeResult.webSocket
                    }
                })
            let upgrades = NIOTypedHTTPServerUpgradeConfiguration(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { [http1, services] channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        try channel.pipeline.syncOperations.addHandlers(http1.additionalChannelHandlers())
                        try channel.pipeline.syncOperations.addHandler(
                            HTTPConnectionStateHandler(idleTimeout: http1.idleTimeout.map { .init($0) }, logger: logger))
                        try channel.pipeline.syncOperations.addHandler(DispatchHandler(services: services))
                        let asyncChannel = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                        if let reason = refusal.value { return UpgradeResult.refused(asyncChannel, reason) }
                        return UpgradeResult.notUpgraded(asyncChannel)
                    }
                })
            var pipeline = NIOUpgradableHTTPServerPipelineConfiguration<UpgradeResult>(upgradeConfiguration: upgrades)
            pipeline.enablePipelining = false  // NIOAsyncChannel serves requests one at a time
            pipeline.enableErrorHandling = false  // ParseErrorAnswer does, with a CSOP body
            pipeline.enableResponseHeaderValidation = false  // HTTPTypes validates them
            pipeline.decoderConfiguration.maxHeaderFieldSize = http1.httpDecoder.maxHeaderFieldSize
            pipeline.decoderConfiguration.maxHeaderListSize = http1.httpDecoder.maxHeaderListSize
            pipeline.decoderConfiguration.maxHeaderFieldCount = http1.httpDecoder.maxHeaderFieldCount
            // Dispatches are read straight from the bytes; NIO's HTTP pipeline is put behind at
            // the first request that is anything else (see RawDispatchHandler).
            let http = pipeline
            let result = channel.eventLoop.makePromise(of: UpgradeResult.self)
            let handedOver = NIOLoopBoundBox(false, eventLoop: channel.eventLoop)
            try channel.pipeline.syncOperations.addHandler(
                RawDispatchHandler(services: services) { channel in
                    let configured = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: http)
                    try channel.pipeline.syncOperations.addHandler(ParseErrorAnswer())
                    handedOver.value = true
                    result.completeWith(configured)
                })
            channel.closeFuture.whenComplete { _ in
                if !handedOver.value { result.succeed(.served) }
            }
            return Value(upgradeResult: result.futureResult, channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.upgradeResult.get() {
            case .served, .webSocket:
                // Channel handlers served it (a WebSocket's handler goes on from here; no task
                // waits on it).
                return
            case .notUpgraded(let http):
                await handleHTTP(asyncChannel: http, logger: logger)
            case .refused(let http, let reason):
                await Self.refuse(http, reason)
            }
        } catch {
            logger.debug("connection ended during the upgrade: \(error)")
        }
    }

    // MARK: - The handshake

    /// The response headers for a handshake at `/v1/ws`, or why it is refused. Browsers open
    /// WebSockets to any site without asking, so a foreign `Origin` is refused as it is for
    /// HTTP (see ``OriginMiddleware``).
    static func handshake(_ head: HTTPRequestHead, allowedOrigins: [String]) -> Result<HTTPHeaders, CSOPError> {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
        guard path == "/v1/ws" else {
            return .failure(CSOPError(GatewayErrorCode.routeNotFound, "WebSockets are served at /v1/ws, not \(path.prefix(200))"))
        }
        let fields = HTTPFields(head.headers, splitCookie: false)
        if let origin = fields[.origin],
            let refusal = OriginMiddleware.refusal(origin: origin, authority: head.headers.first(name: "Host"), allowed: allowedOrigins)
        {
            return .failure(refusal)
        }
        var headers = HTTPHeaders()
        if GatewayServices.subprotocolToken(fields).offered { headers.add(name: "Sec-WebSocket-Protocol", value: "csop") }
        return .success(headers)
    }

    /// Answers a refused handshake with the CSOP error, and closes the connection.
    private static func refuse(_ channel: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, _ error: CSOPError) async {
        let body = ByteBuffer(bytes: CSOPResponse(id: CSOPRequest.generateID(), outcome: .failure(error), duration: 0).serialized())
        let head = HTTPResponse(
            status: HTTPStatusMap.status(for: error.code),
            headerFields: [.connection: "close", .contentType: "application/json", .contentLength: String(body.readableBytes)])
        try? await channel.executeThenClose { _, outbound in
            try await outbound.write(contentsOf: [.head(head), .body(body), .end(nil)])
        }
    }

    /// NIO recognizes a handshake only as a connection's first request; a later one is sent
    /// to a new connection (307 to the same URI, then this connection closes), as
    /// hummingbird-websocket does.
    private static func redirectingUpgrades(_ responder: @escaping HTTPChannelHandler.Responder) -> HTTPChannelHandler.Responder {
        struct RedirectedUpgrade: Error {}
        return { request, writer, channel in
            guard request.headers[.upgrade]?.lowercased() == "websocket" else {
                return try await responder(request, writer, channel)
            }
            let location = request.uri.query.map { "\(request.uri.path)?\($0)" } ?? request.uri.path
            try await writer.writeResponse(HTTPResponse(status: .temporaryRedirect, headerFields: [.connection: "close", .location: location]))
            throw RedirectedUpgrade()
        }
    }
}
