import NIOCore

/// Where ``WebSocketConnection`` writes its encoded frames (``ServerFrames``): a handler put
/// just before NIO's `WebSocketFrameEncoder` (on the socket's side of it, after TLS), whose
/// context passes buffers on toward the socket. The upgrade always adds that encoder and it
/// cannot be removed; it only ever sees frames nobody writes.
final class FrameOutlet: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private(set) var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Writes `buffer` toward the socket (without a flush).
    func write(_ buffer: ByteBuffer, promise: EventLoopPromise<Void>? = nil) {
        guard let context else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        context.write(wrapOutboundOut(buffer), promise: promise)
    }

    /// Writes `buffer` and flushes.
    func writeAndFlush(_ buffer: ByteBuffer, promise: EventLoopPromise<Void>? = nil) {
        write(buffer, promise: promise)
        context?.flush()
    }
}
