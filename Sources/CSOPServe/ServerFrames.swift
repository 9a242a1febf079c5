import NIOCore
import NIOWebSocket

/// Server-to-client WebSocket frames written straight into a `ByteBuffer`: unmasked, final,
/// the header (2, 4 or 10 bytes) before the payload. ``WebSocketConnection`` writes a batch of
/// answers as one buffer this way (one `write` of contiguous bytes), which NIO's
/// `WebSocketFrameEncoder` cannot: it writes each frame's header as a separate buffer (it
/// prepends only into a buffer it owns alone, and the frame it is handed never is), so a batch
/// of 64 answers became a `writev` of 128 pieces. The frames go past that encoder through a
/// ``FrameOutlet``.
enum ServerFrames {
    /// The most header bytes a server frame takes.
    static let maxHeaderBytes = 10

    /// Appends one frame with `payload` to `buffer`.
    static func append(_ opcode: WebSocketOpcode, _ payload: some Collection<UInt8>, to buffer: inout ByteBuffer) {
        appendHeader(opcode, length: payload.count, to: &buffer)
        buffer.writeBytes(payload)
    }

    /// Appends one frame whose payload is `payload`'s readable bytes.
    static func append(_ opcode: WebSocketOpcode, _ payload: ByteBuffer, to buffer: inout ByteBuffer) {
        appendHeader(opcode, length: payload.readableBytes, to: &buffer)
        buffer.writeImmutableBuffer(payload)
    }

    /// One frame in a buffer of its own.
    static func frame(_ opcode: WebSocketOpcode, _ payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: maxHeaderBytes + payload.readableBytes)
        append(opcode, payload, to: &buffer)
        return buffer
    }

    /// One frame with `payload` in a buffer of its own.
    static func frame(_ opcode: WebSocketOpcode, _ payload: some Collection<UInt8>, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: maxHeaderBytes + payload.count)
        append(opcode, payload, to: &buffer)
        return buffer
    }

    private static func appendHeader(_ opcode: WebSocketOpcode, length: Int, to buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(0x80) | UInt8(webSocketOpcode: opcode))
        switch length {
        case 0..<126:
            buffer.writeInteger(UInt8(length))
        case 126...0xFFFF:
            buffer.writeInteger(UInt8(126))
            buffer.writeInteger(UInt16(length))
        default:
            buffer.writeInteger(UInt8(127))
            buffer.writeInteger(UInt64(length))
        }
    }
}
