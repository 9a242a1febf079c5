import Hummingbird
import HummingbirdWebSocket
import NIOCore

/// The per-request context of ``Gateway``'s routes: Hummingbird's, the WebSocket upgrade
/// reference, and the client's address (rate limits without auth count per address).
struct GatewayContext: RequestContext, WebSocketRequestContext {
    var coreContext: CoreRequestContextStorage
    let webSocket: WebSocketHandlerReference<Self>
    /// The client's IP address, or "unknown".
    let peer: String

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.webSocket = .init()
        self.peer = source.channel.remoteAddress?.ipAddress ?? "unknown"
    }

    /// The routes collect bodies themselves, against `--max-body-bytes`.
    var maxUploadSize: Int { .max }
}
