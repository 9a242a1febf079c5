import CSOPCore
import CSOPHTTPHead
import HTTPTypes
import NIOCore

/// The first reader of every plain HTTP connection: it serves dispatches
/// (`POST /v1/dispatch`, `POST /v1/{domain}/{operation}`) straight from the bytes, and at the
/// first request that is anything else it puts NIO's HTTP pipeline (and with it Hummingbird
/// and the WebSocket upgrade) behind itself, hands that request's bytes over and leaves. A
/// connection that only dispatches never meets NIO's HTTP parser.
///
/// Why: with NIO's parser, its HTTPTypes conversion and the per-request handlers, a no-op
/// dispatch cost ~4× what the socket calls do, and the gateway could not reach the issue's
/// floor of 40,000 requests/s on 2 cores; a minimal epoll server in C answers ~90,000/s on
/// the same machine (`csop bench --only gateway`, and the closing note). The head is read by
/// ``RawDispatchHead``, which accepts only plainly well-formed dispatches and hands anything
/// else, however odd, to NIO's parser.
///
/// Limits as on the NIO path: a head must be complete within `headerTimeout` of its first
/// byte, a connection idle for `idleTimeout` is closed, a body over `maxBodyBytes` goes to the
/// NIO path (which answers 413), and a server that stops closes the connection after the
/// answer being written.
final class RawDispatchHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The most bytes a head may take on this path (NIO's own limit is larger; a larger head
    /// goes there).
    static let maxHeadBytes = 16 << 10

    private let route: DispatchRoute
    private let maxBody: Int
    private let headerTimeout: TimeAmount
    private let idleTimeout: TimeAmount?
    /// Puts NIO's HTTP pipeline behind this handler; called once, on the event loop.
    private let handOver: (any Channel) throws -> Void

    private var context: ChannelHandlerContext?
    private var peer = "unknown"
    /// Bytes read and not yet served.
    private var buffer: ByteBuffer?
    /// A dispatch is running or its answer is being written.
    private var answering = false
    /// The head of the request whose body is still coming.
    private var pendingHead: (RawDispatchHead, DispatchRoute.Target)?
    /// Bytes of an incomplete head already searched for its end.
    private var searched = 0
    /// The answer being written ends the connection.
    private var closeAfterAnswer = false
    private var readHeld = false
    private var handedOver = false
    /// When the buffered bytes (an incomplete request) began, and when bytes last came or
    /// an answer went: one timer checks both.
    private var headStarted: NIODeadline?
    private var lastActivity = NIODeadline.now()
    private var timer: Scheduled<Void>?
    private var timerDeadline: NIODeadline?

    init(services: GatewayServices, handOver: @escaping (any Channel) throws -> Void) {
        self.route = DispatchRoute(services: services)
        self.maxBody = services.configuration.maxBodyBytes
        self.headerTimeout = .milliseconds(Int64(services.configuration.headerTimeout * 1000))
        let idle = services.configuration.idleTimeout
        self.idleTimeout = idle > 0 ? .milliseconds(Int64(idle * 1000)) : nil
        self.handOver = handOver
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        peer = context.channel.remoteAddress?.ipAddress ?? "unknown"
        lastActivity = .now()
        armTimer()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        self.context = nil
    }

    // MARK: - Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        lastActivity = .now()
        if buffer == nil || buffer!.readableBytes == 0 {
            buffer = bytes
        } else {
            buffer!.writeBuffer(&bytes)
        }
        serve()
    }

    func read(context: ChannelHandlerContext) {
        // Reading goes on while a dispatch runs (holding it would re-register the socket with
        // epoll on every request) until a pipelining client has a body's worth waiting.
        if (buffer?.readableBytes ?? 0) > maxBody + Self.maxHeadBytes {
            readHeld = true
        } else {
            context.read()
        }
    }

    /// Serves the next complete request in the buffer, if no answer is being written.
    private func serve() {
        guard !answering, !handedOver, let context, var bytes = buffer, bytes.readableBytes > 0 else {
            headStarted = nil
            resumeReading()
            return
        }
        let head: RawDispatchHead
        let target: DispatchRoute.Target
        if let pending = pendingHead {
            (head, target) = pending
        } else {
            // A head that comes a few bytes at a time is searched for its end only in what is
            // new, not read again from its start at every read (a client dribbling 16 KiB one
            // byte at a time would otherwise cost 16 KiB × 16 KiB).
            if searched > 0, bytes.readableBytes < Self.maxHeadBytes,
                !bytes.withUnsafeReadableBytes({ Self.hasBlankLine($0, from: max(0, searched - 3)) })
            {
                searched = bytes.readableBytes
                return waitForRest()
            }
            switch bytes.withUnsafeReadableBytes({ RawDispatchHead.parse($0, maxHeadBytes: Self.maxHeadBytes) }) {
            case .handOn:
                return handOverConnection(context)
            case .incomplete:
                searched = bytes.readableBytes
                return waitForRest()
            case .request(let parsed):
                searched = 0
                guard let route = DispatchRoute.target(method: .post, path: parsed.path), parsed.contentLength <= maxBody else {
                    return handOverConnection(context)
                }
                (head, target) = (parsed, route)
            }
        }
        guard bytes.readableBytes >= head.headLength + head.contentLength else {
            // The head is in (and kept, not read again); a body that stops coming meets the
            // idle timeout.
            pendingHead = (head, target)
            headStarted = nil
            return resumeReading()
        }
        pendingHead = nil
        headStarted = nil
        bytes.moveReaderIndex(forwardBy: head.headLength)
        let body = bytes.readSlice(length: head.contentLength)!
        buffer = bytes.readableBytes > 0 ? bytes : nil
        run(head, target: target, body: body, context: context)
    }

    /// Whether "\r\n\r\n" is in `bytes` at or after `start`.
    private static func hasBlankLine(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Bool {
        var index = start
        while index + 3 < bytes.count {
            if bytes[index] == 13, bytes[index + 1] == 10, bytes[index + 2] == 13, bytes[index + 3] == 10 { return true }
            index += 1
        }
        return false
    }

    private func waitForRest() {
        if headStarted == nil {
            headStarted = .now()
            armTimer()
        }
        resumeReading()
    }

    private func resumeReading() {
        guard readHeld, let context, (buffer?.readableBytes ?? 0) <= maxBody + Self.maxHeadBytes else { return }
        readHeld = false
        context.read()
    }

    // MARK: - Answering

    private func run(_ head: RawDispatchHead, target: DispatchRoute.Target, body: ByteBuffer, context: ChannelHandlerContext) {
        answering = true
        closeAfterAnswer = closeAfterAnswer || head.closing
        let loop = context.eventLoop
        let this = NIOLoopBound(self, eventLoop: loop)
        let routeHead = DispatchRoute.Head(
            target: target, uri: head.uri, origin: head.origin, authority: head.host, authorization: head.authorization,
            trace: DispatchRoute.Head.trace(traceparent: head.traceparent, tracestate: head.tracestate))
        let origin = head.origin
        // The answer is written from a task of its own on the event loop, never from inside
        // serve() (a synchronous completion would otherwise re-enter it).
        route.serve(routeHead, body: body, peer: peer) { answer in
            loop.execute { this.value.answered(answer, origin: origin) }
        }
    }

    private func answered(_ answer: HTTPAnswer, origin: String?) {
        guard let context else { return }
        let closing = closeAfterAnswer
        let fields = answer.fields(origin: origin, allowedOrigins: route.services.configuration.corsOrigins, closing: closing)
        var out = context.channel.allocator.buffer(capacity: 128 + answer.body.count + fields.count * 32)
        out.writeString("HTTP/1.1 \(answer.status.code) \(answer.status.reasonPhrase)\r\n")
        for field in fields {
            out.writeString(field.name.rawName)
            out.writeString(": ")
            out.writeString(field.value)
            out.writeString("\r\n")
        }
        out.writeString("\r\n")
        out.writeBytes(answer.body)
        let written = context.writeAndFlush(wrapOutboundOut(out))
        lastActivity = .now()
        if closing {
            let channel = context.channel
            written.whenComplete { _ in channel.close(promise: nil) }
            return
        }
        answering = false
        serve()
    }

    // MARK: - Handing over

    /// The connection from here on is NIO's and Hummingbird's: the buffered bytes (starting
    /// with a whole request) go to NIO's HTTP parser, and this handler leaves the pipeline.
    private func handOverConnection(_ context: ChannelHandlerContext) {
        handedOver = true
        timer?.cancel()
        timer = nil
        do {
            try handOver(context.channel)
        } catch {
            context.close(promise: nil)
            return
        }
        if let bytes = buffer, bytes.readableBytes > 0 {
            buffer = nil
            context.fireChannelRead(wrapInboundOut(bytes))
            context.fireChannelReadComplete()
        }
        let wasHeld = readHeld
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        if wasHeld { context.channel.read() }
    }

    // MARK: - Timeouts and stopping

    /// One timer for both timeouts, set for the earlier: an incomplete head's deadline, or
    /// the end of the idle time. Moved only when a head starts before it is due.
    private func armTimer() {
        guard let context, !handedOver else { return }
        var due: NIODeadline?
        if let headStarted { due = headStarted + headerTimeout }
        if let idleTimeout {
            // While an answer is awaited the connection is not idle: look again later.
            let idleDue = (answering ? .now() : lastActivity) + idleTimeout
            due = due.map { min($0, idleDue) } ?? idleDue
        }
        guard let due else { return }
        if let timerDeadline, timer != nil, timerDeadline <= due { return }
        timer?.cancel()
        timerDeadline = due
        let this = NIOLoopBound(self, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: due) { this.value.timerFired() }
    }

    private func timerFired() {
        timer = nil
        timerDeadline = nil
        guard let context, !handedOver else { return }
        let now = NIODeadline.now()
        if let headStarted, now >= headStarted + headerTimeout {
            // A head dribbled (slow loris), or a body that stopped coming.
            return context.close(promise: nil)
        }
        if let idleTimeout, !answering, now >= lastActivity + idleTimeout {
            return context.close(promise: nil)
        }
        armTimer()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent else { return context.fireUserInboundEventTriggered(event) }
        // The server is stopping: end after the answer being written, or now.
        if answering {
            closeAfterAnswer = true
        } else {
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }
}
