import CSOPCore
import CSOPHost
import Logging
import NIOCore
import NIOWebSocket

/// One WebSocket connection at `/v1/ws`: the `csop run` protocol over text frames, served by
/// a channel handler on the connection's event loop. Requests run concurrently; their
/// responses (matched by id) and the connection's events are written in the order they are
/// ready, each batch with one flush.
///
/// - Auth: a token from the handshake (`Authorization: Bearer`, or the subprotocol
///   `csop.bearer.<token>` that browsers can set), or else, when auth is on, a first message
///   `{"type":"auth","token":"..."}`. A refused token gets one frame
///   `{"type":"error","error":{...UNAUTHENTICATED...}}` and close code 4401.
/// - Backpressure: at most `maxInFlightPerConnection` requests run; once as many more wait,
///   or while the socket does not take writes, the connection is not read: a client that
///   sends too fast, or does not read its answers, meets TCP backpressure.
/// - Limits: a frame or message over `maxFrameBytes` closes with 1009; a client that reads
///   events more slowly than they come is closed with 1013 once 8 MiB of events wait; a
///   rate-limited request is answered `RATE_LIMITED` (retry true); a peer that does not answer
///   a ping by the next one is closed with 1001 "Ping timeout".
/// - Stopping: the server's stop (``OpenSockets``, or NIO's quiesce event) lets the running
///   requests finish, writes their answers, then closes with 1001.
final class WebSocketConnection: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    // A duplex handler to hold back `read`. It writes encoded frames (``ServerFrames``)
    // through its ``FrameOutlet``, past NIO's frame encoder, not through its own context.
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    static let closeUnauthenticated: UInt16 = 4401
    static let maxEventBytes = 8 << 20
    /// How long a close handshake may take, once the close frame is on the socket, before
    /// the connection is dropped.
    static let closeTimeout: TimeAmount = .seconds(5)
    /// How long a close frame may wait behind unread data (a client that reads slowly)
    /// before the connection is dropped without it.
    static let closeWriteTimeout: TimeAmount = .seconds(30)

    private enum Phase {
        /// Checking the handshake's token, or the first message's.
        case authenticating
        /// Auth is on and the handshake had no token: the first message must carry one.
        case awaitingAuthMessage
        case open
        /// A close frame was sent; waiting for the client's.
        case closing
        case closed
    }

    private let gateway: GatewayServices
    private let outlet: FrameOutlet
    private let handshakeToken: String?
    private let peer: String
    private let logger: Logger
    private let maxMessageBytes: Int
    private let maxInFlight: Int

    // Everything below is touched only on the connection's event loop.
    private var context: ChannelHandlerContext?
    private var phase = Phase.authenticating
    /// Set in `handlerAdded`; its `onReady` needs this handler's event loop.
    private var outbox: Outbox!
    private var scope: ConnectionScope?
    private var rateKey = ""
    /// A fragmented message being received.
    private var partial: (opcode: WebSocketOpcode, data: ByteBuffer)?
    /// Complete messages read and not yet admitted (auth pending, or at the in-flight limit).
    private var queued: CircularBuffer<(opcode: WebSocketOpcode, data: ByteBuffer)> = []
    private var inFlight = 0
    /// Requests started since answers were last written: a read that brings many requests
    /// writes the answers of each ``answersPerFlush`` as they are done, so the client sends
    /// more while the rest run (one flush at the end left client and server taking turns,
    /// each idle while the other worked).
    private var startedSinceDrain = 0
    static let answersPerFlush = 16
    /// A `read` held back by backpressure.
    private var readHeld = false
    private var awaitingPong = false
    private var pingTask: RepeatedTask?
    private var closeTimer: Scheduled<Void>?
    /// The server is stopping: close with 1001 once the running requests are answered.
    private var stopping = false
    private var stopped: [EventLoopPromise<Void>] = []
    private var socketToken: UInt64?

    init(gateway: GatewayServices, handshakeToken: String?, peer: String, outlet: FrameOutlet, logger: Logger) {
        self.gateway = gateway
        self.outlet = outlet
        self.handshakeToken = handshakeToken
        self.peer = peer
        self.logger = logger
        self.maxMessageBytes = gateway.configuration.maxFrameBytes
        self.maxInFlight = max(1, gateway.configuration.maxInFlightPerConnection)
    }

    // MARK: - Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let loop = context.eventLoop
        let this = NIOLoopBound(self, eventLoop: loop)
        let ready = LoopReadyQueue.of(loop)
        let drain: @Sendable () -> Void = { this.value.drain() }
        outbox = Outbox(maxEventBytes: Self.maxEventBytes) { ready.add(drain) }
        let interval = gateway.configuration.pingInterval
        if interval > 0 {
            let period = TimeAmount.milliseconds(Int64(interval * 1000))
            pingTask = loop.scheduleRepeatedTask(initialDelay: period, delay: period) { _ in this.value.ping() }
        }
        socketToken = gateway.openSockets.add {
            let promise = loop.makePromise(of: Void.self)
            loop.execute { this.value.stop(promise) }
            try? await promise.futureResult.get()
        }
        if let authenticator = gateway.authenticator {
            if let token = handshakeToken {
                verify(token, with: authenticator, fromMessage: false)
            } else {
                phase = .awaitingAuthMessage
            }
        } else {
            open(caller: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        ended()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        ended()
        context.fireChannelInactive()
    }

    /// The connection is gone: its subscriptions end, its presence leaves, answers still
    /// coming are dropped.
    private func ended() {
        guard phase != .closed else { return }
        phase = .closed
        pingTask?.cancel()
        closeTimer?.cancel()
        outbox.close()
        scope?.close()
        if let socketToken { gateway.openSockets.remove(socketToken) }
        queued.removeAll()
        for promise in stopped { promise.succeed() }
        stopped.removeAll()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("WebSocket error: \(error)")
        guard let frameError = error as? NIOWebSocketError else { return context.close(promise: nil) }
        // NIO's frame decoder refused a frame.
        switch frameError {
        case .invalidFrameLength: fail(.messageTooLarge, "frames are limited to \(maxMessageBytes) bytes")
        default: fail(.protocolError, "a control frame that is fragmented or longer than 125 bytes")
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            stop(nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    // MARK: - Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text, .binary:
            guard partial == nil else { return fail(.protocolError, "a new message began before the last one ended") }
            if frame.fin {
                received(frame.opcode, frame.unmaskedData)
            } else {
                partial = (frame.opcode, frame.unmaskedData)
            }
        case .continuation:
            guard var message = partial else { return fail(.protocolError, "a continuation frame without a message to continue") }
            partial = nil
            var data = frame.unmaskedData
            guard message.data.readableBytes + data.readableBytes <= maxMessageBytes else {
                return fail(.messageTooLarge, "messages are limited to \(maxMessageBytes) bytes")
            }
            message.data.writeBuffer(&data)
            if frame.fin {
                received(message.opcode, message.data)
            } else {
                partial = message
            }
        case .ping:
            guard phase != .closed else { return }
            let pong = ServerFrames.frame(.pong, frame.unmaskedData, allocator: context.channel.allocator)
            outlet.writeAndFlush(pong)
        case .pong:
            awaitingPong = false
        case .connectionClose:
            closeReceived(frame)
        default:
            fail(.protocolError, "unknown opcode")
        }
    }

    /// A complete message: queue it, and admit what may run.
    private func received(_ opcode: WebSocketOpcode, _ data: ByteBuffer) {
        switch phase {
        case .closing, .closed: return
        case .authenticating, .awaitingAuthMessage, .open: break
        }
        queued.append((opcode, data))
        admit()
    }

    /// Starts queued messages while the connection may run more.
    private func admit() {
        while let message = queued.first {
            switch phase {
            case .authenticating:
                return
            case .awaitingAuthMessage:
                queued.removeFirst()
                guard let authenticator = gateway.authenticator else { return }
                do throws(CSOPError) {
                    let token = try Self.authToken(opcode: message.opcode, data: message.data)
                    phase = .authenticating
                    verify(token, with: authenticator, fromMessage: true)
                } catch {
                    authenticator.recordMissingToken(transport: "websocket")
                    refuse(error)
                }
                return
            case .open:
                guard inFlight < maxInFlight else { return }
                queued.removeFirst()
                inFlight += 1
                start(message.opcode, message.data)
                startedSinceDrain += 1
                if startedSinceDrain >= Self.answersPerFlush { drain(admitting: false) }
            case .closing, .closed:
                queued.removeAll()
                return
            }
        }
        resumeReading()
    }

    func read(context: ChannelHandlerContext) {
        if mayRead {
            context.read()
        } else {
            readHeld = true
        }
    }

    private var mayRead: Bool {
        switch phase {
        case .closing, .closed: return true  // the client's close frame
        case .authenticating: return false
        case .awaitingAuthMessage: return queued.isEmpty
        case .open:
            // Reading goes on into `queued` up to one more window of requests: holding the read
            // at every answer would re-register the socket with epoll each time.
            return !stopping && queued.count < maxInFlight && (context?.channel.isWritable ?? false)
        }
    }

    private func resumeReading() {
        guard readHeld, mayRead, let context else { return }
        readHeld = false
        context.read()
    }

    // MARK: - Requests

    /// Runs one admitted message; its answer reaches the outbox through `complete`.
    private func start(_ opcode: WebSocketOpcode, _ data: ByteBuffer) {
        guard let scope else { return }
        guard opcode == .text else {
            return outbox.complete(Self.error(id: nil, .invalidPayload("binary frames are not accepted: send each request as a JSON text frame")))
        }
        let parsed: Result<JSONValue, JSONParseError> = data.withUnsafeReadableBytes { raw in
            do throws(JSONParseError) {
                return .success(try JSONParser.parse(raw.bindMemory(to: UInt8.self)))
            } catch {
                return .failure(error)
            }
        }
        let value: JSONValue
        switch parsed {
        case .success(let parsedValue): value = parsedValue
        case .failure(let error):
            if String(validating: data.readableBytesView, as: UTF8.self) == nil {
                return fail(.dataInconsistentWithMessage, "a text frame that is not UTF-8")
            }
            return outbox.complete(Self.error(id: nil, .invalidPayload("the frame is not valid JSON: \(error)")))
        }
        let request: Request
        switch Request.decode(value) {
        case .success(let decoded): request = decoded
        case .failure(let failure): return outbox.complete(Self.error(id: failure.id, failure.error))
        }
        if let wait = gateway.rateLimiter.take(rateKey) {
            return outbox.complete(Self.error(id: request.id, GatewayServices.rateLimited(wait)))
        }
        let outbox = self.outbox!
        scope.dispatch(request) { response in outbox.complete(response?.serialized()) }
    }

    // MARK: - Writing

    /// Writes what the outbox holds with one flush, then (`admitting`) admits the requests
    /// that were waiting for those answers.
    private func drain(admitting: Bool = true) {
        guard phase != .closed, let context else { return }
        startedSinceDrain = 0
        switch outbox.take(writable: context.channel.isWritable) {
        case nil:
            break
        case .frames(let frames, let completed):
            if phase != .closing, !frames.isEmpty {
                // One buffer for the batch: one contiguous write.
                var batch = context.channel.allocator.buffer(
                    capacity: frames.reduce(0) { $0 + $1.count + ServerFrames.maxHeaderBytes })
                for frame in frames { ServerFrames.append(.text, frame, to: &batch) }
                outlet.writeAndFlush(batch)
            }
            inFlight -= completed
            if admitting { admit() }
        case .overflowed:
            return close(WebSocketErrorCode(codeNumber: 1013), "events arrived faster than this client read them")
        case .closed:
            break
        }
        if stopping, inFlight == 0, queued.isEmpty, context.channel.isWritable { close(.goingAway, "the server is stopping") }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            drain()
            resumeReading()
        }
        context.fireChannelWritabilityChanged()
    }

    // MARK: - Auth

    private func verify(_ token: String, with authenticator: Authenticator, fromMessage: Bool) {
        phase = .authenticating
        let loop = context!.eventLoop
        let this = NIOLoopBound(self, eventLoop: loop)
        Task {
            let result: Result<Caller, CSOPError>
            do throws(CSOPError) {
                result = .success(try await authenticator.verify(token))
            } catch {
                result = .failure(error)
            }
            loop.execute { this.value.verified(result, fromMessage: fromMessage) }
        }
    }

    private func verified(_ result: Result<Caller, CSOPError>, fromMessage: Bool) {
        guard phase == .authenticating, let context else { return }
        switch result {
        case .success(let caller):
            if fromMessage {
                outlet.writeAndFlush(ServerFrames.frame(.text, #"{"type":"auth","status":"ok"}"#.utf8, allocator: context.channel.allocator))
            }
            open(caller: caller)
        case .failure(let error):
            refuse(error)
        }
    }

    private func open(caller: Caller?) {
        scope = ConnectionScope(host: gateway.host, router: gateway.router, caller: caller, sink: outbox)
        rateKey = GatewayServices.rateKey(caller, peer: peer)
        phase = .open
        admit()
    }

    /// One error frame, then close code 4401.
    private func refuse(_ error: CSOPError) {
        guard let context else { return }
        var writer = JSONWriter(capacity: 160)
        writer.append(#"{"type":"error","error":"#)
        writer.appendRaw(error.json.serialized())
        writer.append("}")
        outlet.write(ServerFrames.frame(.text, writer.bytes, allocator: context.channel.allocator))
        close(WebSocketErrorCode(codeNumber: Int(Self.closeUnauthenticated)), "unauthenticated")
    }

    /// The token of a first message `{"type":"auth","token":"..."}`.
    static func authToken(opcode: WebSocketOpcode, data: ByteBuffer) throws(CSOPError) -> String {
        guard opcode == .text, case .object(let object)? = try? JSONValue(parsing: Array(data.readableBytesView)),
            object["type"] == .string("auth"), case .string(let token)? = object["token"]
        else {
            throw CSOPError(
                ErrorCode.unauthenticated,
                "this server needs a token: send it in the handshake (Authorization: Bearer, or the subprotocol csop.bearer.<token>) or as the first message {\"type\":\"auth\",\"token\":\"...\"}"
            )
        }
        return token
    }

    // MARK: - Closing

    /// Sends a close frame; the connection ends when the client answers it, or
    /// ``closeTimeout`` after the frame is written (``closeWriteTimeout`` at most) — or, with
    /// `now`, as soon as the frame is written.
    private func close(_ code: WebSocketErrorCode, _ reason: String, now: Bool = false) {
        guard let context, phase != .closed else { return }
        let channel = context.channel
        guard phase != .closing else {
            if now { channel.close(promise: nil) }
            return
        }
        phase = .closing
        queued.removeAll()
        var data = channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        data.write(webSocketErrorCode: code)
        data.writeString(reason)
        let promise = context.eventLoop.makePromise(of: Void.self)
        outlet.writeAndFlush(ServerFrames.frame(.connectionClose, data, allocator: channel.allocator), promise: promise)
        let written = promise.futureResult
        for promise in stopped { promise.succeed() }
        stopped.removeAll()
        if now {
            written.whenComplete { _ in channel.close(promise: nil) }
        } else {
            // The handshake's time counts from when the frame is on the socket: closing sooner
            // would drop it, unsent, behind what a slow reader has not read yet.
            let loop = context.eventLoop
            let this = NIOLoopBound(self, eventLoop: loop)
            closeTimer = loop.scheduleTask(in: Self.closeWriteTimeout) { channel.close(promise: nil) }
            written.whenComplete { _ in
                guard this.value.phase == .closing else { return }
                this.value.closeTimer?.cancel()
                this.value.closeTimer = loop.scheduleTask(in: Self.closeTimeout) { channel.close(promise: nil) }
            }
            resumeReading()
        }
    }

    /// A protocol error: close with `code`, without waiting for the client's answer.
    private func fail(_ code: WebSocketErrorCode, _ reason: String) {
        close(code, reason, now: true)
    }

    private func closeReceived(_ frame: WebSocketFrame) {
        guard let context else { return }
        if phase == .closing || phase == .closed {
            context.close(promise: nil)
            return
        }
        // Answer with the client's code, then end.
        phase = .closing
        var data = frame.unmaskedData
        let code = data.readSlice(length: min(2, data.readableBytes)) ?? context.channel.allocator.buffer(capacity: 0)
        let channel = context.channel
        let answer = ServerFrames.frame(.connectionClose, code, allocator: channel.allocator)
        let promise = context.eventLoop.makePromise(of: Void.self)
        outlet.writeAndFlush(answer, promise: promise)
        promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
    }

    /// The server is stopping: answer what is running, then close with 1001.
    private func stop(_ promise: EventLoopPromise<Void>?) {
        guard phase != .closing, phase != .closed else {
            promise?.succeed()
            return
        }
        if let promise { stopped.append(promise) }
        stopping = true
        if phase != .open {
            return close(.goingAway, "the server is stopping")
        }
        drain()
    }

    private func ping() {
        guard phase != .closing, phase != .closed, let context else { return }
        if awaitingPong { return close(.goingAway, "Ping timeout", now: true) }
        awaitingPong = true
        var data = context.channel.allocator.buffer(capacity: 8)
        data.writeInteger(UInt64.random(in: 0 ... .max))
        outlet.writeAndFlush(ServerFrames.frame(.ping, data, allocator: context.channel.allocator))
    }

    static func error(id: String?, _ error: CSOPError) -> [UInt8] {
        Response(id: id ?? Request.generateID(), outcome: .failure(error), duration: 0).serialized()
    }
}
