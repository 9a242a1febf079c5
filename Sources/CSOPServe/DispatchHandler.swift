import CSOPCore
import HTTPTypes
import HummingbirdCore
import NIOCore
import NIOHTTPTypes

/// Serves the dispatch routes (``DispatchRoute``) on a connection that ``RawDispatchHandler``
/// handed to NIO's HTTP pipeline (it made another kind of request first, or sent a dispatch
/// the raw reader leaves to NIO: a chunked body, a body over the limit, an unusual header),
/// and hands every other request on to Hummingbird's responder behind it. Dispatches are
/// answered here, on the event loop, rather than by Hummingbird routes: the same
/// ``DispatchRoute`` as on the raw path, without a task per request.
///
/// Order: HTTP/1.1 answers in request order, so while a request handed on is unanswered, a
/// dispatch that follows waits (and the other way round); reads stop while requests wait.
final class DispatchHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// Where the parts of the request being read go.
    private enum Current {
        case none
        /// A dispatch: its body is collected.
        case dispatch(Dispatch)
        /// Over the body limit: the rest is read and dropped, then 413 is answered.
        case discarding(Dispatch, CSOPError)
        /// To Hummingbird.
        case handedOn
    }

    private struct Dispatch {
        var target: DispatchRoute.Target
        var head: HTTPRequest
        var body: ByteBuffer
    }

    private let route: DispatchRoute
    private let maxBody: Int
    private var context: ChannelHandlerContext?
    private var peer = "unknown"
    private var current = Current.none
    /// A dispatch is running or its answer is being written.
    private var answering = false
    /// Requests handed on whose response has not ended.
    private var handedOn = 0
    /// Parts handed on so far (to know whether a release handed any on).
    private var handedOnParts = 0
    /// Parts read while they could not go on yet, in order.
    private var waiting: CircularBuffer<HTTPRequestPart> = []
    private var readHeld = false

    init(services: GatewayServices) {
        self.route = DispatchRoute(services: services)
        self.maxBody = services.configuration.maxBodyBytes
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        peer = context.channel.remoteAddress?.ipAddress ?? "unknown"
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: - Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if !waiting.isEmpty || !take(part) { waiting.append(part) }
    }

    /// Routes one part; false when it must wait (a head while the connection is busy).
    private func take(_ part: HTTPRequestPart) -> Bool {
        guard let context else { return true }
        switch part {
        case .head(let head):
            if let target = DispatchRoute.target(method: head.method, path: Self.path(of: head)) {
                guard handedOn == 0, !answering else { return false }
                let dispatch = Dispatch(target: target, head: head, body: context.channel.allocator.buffer(capacity: 0))
                if let length = head.headerFields[.contentLength].flatMap({ Int($0) }), length > maxBody {
                    current = .discarding(dispatch, DispatchRoute.tooLarge(length, maxBody))
                } else {
                    current = .dispatch(dispatch)
                }
            } else {
                guard !answering else { return false }
                handedOn += 1
                current = .handedOn
                handOn(part, context)
            }
        case .body(var chunk):
            switch current {
            case .dispatch(var dispatch):
                guard dispatch.body.readableBytes + chunk.readableBytes <= maxBody else {
                    current = .discarding(dispatch, DispatchRoute.tooLarge(nil, maxBody))
                    return true
                }
                current = .none  // no copy of the buffer while it grows
                dispatch.body.writeBuffer(&chunk)
                current = .dispatch(dispatch)
            case .handedOn:
                handOn(part, context)
            case .discarding, .none:
                break
            }
        case .end:
            switch current {
            case .dispatch(let dispatch):
                current = .none
                run(dispatch)
            case .discarding(let dispatch, let error):
                current = .none
                answering = true
                finisher(for: dispatch.head)(.failure(error))
            case .handedOn:
                current = .none
                handOn(part, context)
            case .none:
                break
            }
        }
        return true
    }

    private func handOn(_ part: HTTPRequestPart, _ context: ChannelHandlerContext) {
        handedOnParts &+= 1
        context.fireChannelRead(wrapInboundOut(part))
    }

    /// Parts that waited go on, as far as they can.
    private func release() {
        let before = handedOnParts
        while let part = waiting.first, take(part) { waiting.removeFirst() }
        guard let context else { return }
        // Hummingbird's async channel passes reads on at a read-complete: parts handed on
        // outside a read would otherwise sit there.
        if handedOnParts != before { context.fireChannelReadComplete() }
        guard readHeld, waiting.isEmpty else { return }
        readHeld = false
        context.read()
    }

    func read(context: ChannelHandlerContext) {
        // Reading goes on while a dispatch runs (a client waits for its answer anyway, and
        // holding each read would re-register the socket with epoll on every request); it
        // stops once a pipelining client has parts waiting.
        if waiting.isEmpty {
            context.read()
        } else {
            readHeld = true
        }
    }

    // MARK: - Answering

    /// Where the answer to the request with `head` goes: it is written from a task of its
    /// own on the event loop, never from inside ``take(_:)`` (whose caller may be working
    /// through the waiting parts).
    private func finisher(for head: HTTPRequest) -> @Sendable (HTTPAnswer) -> Void {
        let loop = context!.eventLoop
        let this = NIOLoopBound(self, eventLoop: loop)
        return { answer in loop.execute { this.value.answered(answer, for: head) } }
    }

    private func run(_ dispatch: Dispatch) {
        answering = true
        let head = dispatch.head
        let fields = head.headerFields
        let routeHead = DispatchRoute.Head(
            target: dispatch.target, uri: head.path ?? "/", origin: fields[.origin], authority: head.authority,
            authorization: fields[.authorization],
            trace: DispatchRoute.Head.trace(
                traceparent: fields[HTTPField.Name("traceparent")!], tracestate: fields[values: HTTPField.Name("tracestate")!].joined(separator: ",")))
        route.serve(routeHead, body: dispatch.body, peer: peer, completion: finisher(for: head))
    }

    /// Writes the answer to the dispatch whose head is `head`, then lets waiting parts go on.
    private func answered(_ answer: HTTPAnswer, for head: HTTPRequest) {
        guard let context else { return }
        let closing = Self.asksToClose(head.headerFields)
        let fields = answer.fields(origin: head.headerFields[.origin], allowedOrigins: route.services.configuration.corsOrigins, closing: closing)
        context.write(wrapOutboundOut(.head(HTTPResponse(status: answer.status, headerFields: fields))), promise: nil)
        context.write(wrapOutboundOut(.body(context.channel.allocator.buffer(bytes: answer.body))), promise: nil)
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if closing {
            let channel = context.channel
            written.whenComplete { _ in channel.close(promise: nil) }
            return
        }
        answering = false
        release()
    }

    /// Whether a `Connection` field lists `close` (a token list, any case, as
    /// ``RawDispatchHead`` reads it: `Connection: keep-alive, Close` closes too).
    static func asksToClose(_ fields: HTTPFields) -> Bool {
        fields[values: .connection].contains { value in
            value.split(separator: ",").contains { $0.lowercased().filter { $0 != " " && $0 != "\t" } == "close" }
        }
    }

    // MARK: - Writing (Hummingbird's answers)

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let ended: Bool
        if case .end = unwrapOutboundIn(data) { ended = true } else { ended = false }
        context.write(data, promise: promise)
        if ended {
            handedOn -= 1
            if handedOn == 0 { release() }
        }
    }

    /// The path of a request, without its query.
    private static func path(of head: HTTPRequest) -> Substring {
        let target = head.path ?? "/"
        return target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
    }
}
