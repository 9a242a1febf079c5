import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes

/// Cuts off a client that opens a request and then dribbles its header (slow loris): once
/// the first byte of a request arrives, its whole head must arrive within `timeout`, or the
/// connection is closed. An idle keep-alive connection (no request begun) is the idle
/// timeout's business, not this one's.
///
/// It sits after the HTTP decoder, where it sees heads; a ``ByteWatcher`` it puts at the
/// front of the pipeline tells it when bytes arrive. Both run on the channel's event loop.
final class HeaderDeadlineHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let timeout: TimeAmount
    private var deadline: Scheduled<Void>?
    private var awaitingHead = true
    private var watcher: ByteWatcher?

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let watcher = ByteWatcher(owner: self, context: context)
        self.watcher = watcher
        try? context.pipeline.syncOperations.addHandler(watcher, position: .first)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        if let watcher {
            watcher.owner = nil
            context.pipeline.syncOperations.removeHandler(watcher).whenFailure { _ in }
        }
        watcher = nil
    }

    /// Bytes came in: if they begin a request, its head is now due.
    fileprivate func bytesArrived(context: ChannelHandlerContext) {
        guard awaitingHead, deadline == nil else { return }
        let this = NIOLoopBound(self, eventLoop: context.eventLoop)
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: timeout) {
            guard this.value.awaitingHead else { return }
            channel.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = unwrapInboundIn(data) {
            awaitingHead = false
            deadline?.cancel()
            deadline = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            awaitingHead = true
        }
        context.write(data, promise: promise)
    }
}

/// Tells a ``HeaderDeadlineHandler`` that bytes arrived, and passes them on untouched.
final class ByteWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    fileprivate weak var owner: HeaderDeadlineHandler?
    private let ownerContext: ChannelHandlerContext

    fileprivate init(owner: HeaderDeadlineHandler, context: ChannelHandlerContext) {
        self.owner = owner
        self.ownerContext = context
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        owner?.bytesArrived(context: ownerContext)
        context.fireChannelRead(data)
    }
}

/// The deadline for a connection's first request head, which arrives before Hummingbird
/// adds per-request handlers (it must first tell an upgrade from a plain request): from the
/// moment the connection opens, the bytes up to the first blank line must arrive within
/// `timeout`. It sits right after TLS, sees plaintext, and removes itself once the head is in.
final class FirstHeadDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let timeout: TimeAmount
    private var deadline: Scheduled<Void>?
    /// The last bytes seen, to find "\r\n\r\n" across reads.
    private var tail: [UInt8] = []
    private var done = false

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    private func arm(_ context: ChannelHandlerContext) {
        guard deadline == nil, !done else { return }
        let this = NIOLoopBound(self, eventLoop: context.eventLoop)
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: timeout) {
            guard !this.value.done else { return }
            channel.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        if !done {
            tail += buffer.readableBytesView
            if tail.count >= 4, tail.indices.dropLast(3).contains(where: { tail[$0] == 13 && tail[$0 + 1] == 10 && tail[$0 + 2] == 13 && tail[$0 + 3] == 10 }) {
                done = true
                deadline?.cancel()
                deadline = nil
            } else if tail.count > 3 {
                tail.removeFirst(tail.count - 3)
            }
        }
        context.fireChannelRead(data)
        if done {
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }
}

/// A server child channel (Hummingbird's) with a ``FirstHeadDeadline`` added before its own handlers.
struct FirstHeadDeadlineChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value

    let base: Base
    let timeout: TimeAmount

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(FirstHeadDeadline(timeout: timeout))
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}
