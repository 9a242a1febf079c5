import CSOPCore
import CSOPHost
import CoreMetrics
import HummingbirdCore
import Synchronization

/// The gateway's series, in the host's ``HostMetrics/registry``: connections, WebSockets,
/// refused tokens by kind and rate-limited requests. Counted where they happen (one relaxed
/// atomic add) and set when `/metrics` is read.
final class GatewayMetrics: Sendable {
    /// TCP connections open now, and accepted since the start: updated by ``CountingConnections``.
    let open = Atomic<Int>(0)
    let accepted = Atomic<Int>(0)

    private let registry: MetricsRegistry
    private let openGauge: CoreMetrics.Gauge
    private let acceptedSeries: MirroredCounter
    private let sockets: CoreMetrics.Gauge
    private let rateLimited: MirroredCounter
    private let refusals = Mutex<[String: MirroredCounter]>([:])

    init(registry: MetricsRegistry) {
        self.registry = registry
        openGauge = registry.gauge("csop_gateway_connections", "TCP connections open now (HTTP and WebSocket).")
        acceptedSeries = registry.mirroredCounter("csop_gateway_connections_accepted_total", "TCP connections accepted.")
        sockets = registry.gauge("csop_gateway_websockets", "WebSocket connections open now.")
        rateLimited = registry.mirroredCounter(
            "csop_gateway_rate_limited_total", "Requests answered RATE_LIMITED (HTTP, WebSocket and SSE).")
    }

    /// Sets the series from the gateway's counts, before the host's metrics are emitted.
    func refresh(_ services: GatewayServices) {
        openGauge.record(open.load(ordering: .relaxed))
        acceptedSeries.update(to: accepted.load(ordering: .relaxed))
        sockets.record(services.openSockets.count)
        rateLimited.update(to: services.rateLimiter.refusedCount)
        guard let authenticator = services.authenticator else { return }
        refusals.withLock { series in
            for (kind, count) in authenticator.refusals {
                let counter =
                    series[kind]
                    ?? registry.mirroredCounter(
                        "csop_gateway_auth_failures_total", "Requests refused for their token, by reason (missing, expired, bad_signature, ...).",
                        [("reason", kind)])
                series[kind] = counter
                counter.update(to: count)
            }
        }
    }
}

/// Hummingbird's connection limit, counting connections for ``GatewayMetrics`` as it goes.
struct CountingConnections: AvailableConnectionsDelegate {
    var limit: MaximumAvailableConnections
    let metrics: GatewayMetrics?

    mutating func connectionOpened() {
        limit.connectionOpened()
        metrics?.open.add(1, ordering: .relaxed)
        metrics?.accepted.add(1, ordering: .relaxed)
    }

    mutating func connectionClosed() {
        limit.connectionClosed()
        metrics?.open.subtract(1, ordering: .relaxed)
    }

    func isAcceptingNewConnections() -> Bool { limit.isAcceptingNewConnections() }
}
