import Hummingbird
import NIOCore

/// The per-request context of ``Gateway``'s routes: Hummingbird's, and the client's address
/// (rate limits without auth count per address).
struct GatewayContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    /// The client's IP address, or "unknown".
    let peer: String

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.peer = source.channel.remoteAddress?.ipAddress ?? "unknown"
    }

    /// The routes collect bodies themselves, against `--max-body-bytes`.
    var maxUploadSize: Int { .max }
}
