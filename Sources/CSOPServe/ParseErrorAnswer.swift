import CSOPCore
import HTTPTypes
import NIOCore
import NIOHTTP1

/// Answers bytes NIO's HTTP parser refuses (a bare LF in a header, two `Content-Length`s, a
/// request line that is not HTTP/1.1, a bad chunk size) with `400 INVALID_HTTP` and a CSOP
/// error body that names the parser's complaint, then closes the connection, as the parser
/// cannot read past them. Without it such a connection got no answer at all until the idle
/// timeout: no handler was yet there to see the error while NIO waits to tell an upgrade
/// from a plain request.
///
/// It sits right after the upgrade handler, so it sees NIO's HTTP parts both ways: requests
/// read before the bad bytes are answered first, and the 400 follows the last of them (an
/// answer is never cut in half). A WebSocket upgrade removes it (``GatewayChannel``): frames
/// are not its business.
final class ParseErrorAnswer: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// Request heads read, and answers fully written.
    private var heads = 0
    private var ends = 0
    /// A request's head is read and its end is not: bad bytes now break that request.
    private var midRequest = false
    /// An answer's head is written and its end is not.
    private var midAnswer = false
    /// The parser's complaint once it has one; how many answers must be written before the
    /// 400; whether a request was broken in the middle (its handler must hear of it).
    private var refusal: (error: HTTPParserError, answersFirst: Int, broken: Bool)?
    private var settled = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: heads += 1; midRequest = true
        case .end: midRequest = false
        case .body: break
        }
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else { return context.fireErrorCaught(error) }
        guard refusal == nil else { return }
        // The parser reads nothing more. Requests read before the bad bytes are answered
        // first and the 400 follows them; a request the bad bytes broke (a bad chunk) is
        // answered by the 400. Until then the error goes no further: the handlers behind
        // would end the connection before those answers.
        refusal = (parserError, midRequest ? heads - 1 : heads, midRequest)
        settle(context)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let part = unwrapOutboundIn(data)
        context.write(data, promise: promise)
        switch part {
        case .head(let head) where head.status.code >= 200: midAnswer = true
        case .end:
            midAnswer = false
            ends += 1
            settle(context)
        default: break
        }
    }

    /// Answers 400 and closes once the answers owed before it are written (or only closes,
    /// if the broken request's own answer has begun).
    private func settle(_ context: ChannelHandlerContext) {
        guard let refusal, !settled, ends >= refusal.answersFirst else { return }
        settled = true
        if ends == refusal.answersFirst, !midAnswer { refuse(context) } else { context.close(promise: nil) }
        if refusal.broken { context.fireErrorCaught(refusal.error) }
    }

    private func refuse(_ context: ChannelHandlerContext) {
        guard let refusal = refusal?.error, context.channel.isActive else { return }
        let failure = CSOPError(
            GatewayErrorCode.invalidHTTP,
            "the request is not well-formed HTTP/1.1 (\(refusal)); send CRLF line ends, one Content-Length, and a valid request line")
        let answer = HTTPAnswer.failure(failure)
        var headers = HTTPHeaders()
        for field in answer.fields(origin: nil, allowedOrigins: [], closing: true) {
            headers.add(name: field.name.rawName, value: field.value)
        }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .badRequest, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: answer.body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        // The small answer went out with the flush.
        context.close(promise: nil)
    }
}
