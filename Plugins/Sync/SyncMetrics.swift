import CSOPCore
import CoreMetrics

/// The sync plugin's series, set when the host is scraped from counts the engine keeps
/// (one relaxed atomic add per broadcast and per delivered event).
final class SyncMetrics: Sendable {
    private let registry = MetricsRegistry()
    private let subscriptions: CoreMetrics.Gauge
    private let published: MirroredCounter
    private let delivered: MirroredCounter
    /// Cluster mode only.
    private let dropped: MirroredCounter?
    private let connected: CoreMetrics.Gauge?
    private let reconnects: MirroredCounter?
    private let recovered: MirroredCounter?

    init(cluster: Bool) {
        subscriptions = registry.gauge("csop_sync_subscriptions", "Subscriptions open now, all tenants.")
        published = registry.mirroredCounter("csop_sync_messages_published_total", "Broadcasts accepted by sync.broadcast.")
        delivered = registry.mirroredCounter(
            "csop_sync_messages_delivered_total", "Events delivered to subscriptions in this process (one per matching subscription).")
        guard cluster else {
            (dropped, connected, reconnects, recovered) = (nil, nil, nil, nil)
            return
        }
        dropped = registry.mirroredCounter("csop_sync_frames_dropped_total", "Cluster NOTIFY frames dropped as malformed or oversized.")
        connected = registry.gauge("csop_sync_cluster_connected", "1 while connected to PostgreSQL and listening; 0 otherwise.")
        reconnects = registry.mirroredCounter("csop_sync_cluster_reconnects_total", "Times the PostgreSQL connection was lost.")
        recovered = registry.mirroredCounter(
            "csop_sync_history_recovered_total", "Messages read back from the history table to fill a gap (a lost NOTIFY, a reconnect).")
    }

    func write(into buffer: inout [UInt8], engine: SyncEngine) {
        subscriptions.record(engine.registry.count)
        published.update(to: engine.published.load(ordering: .relaxed))
        delivered.update(to: engine.registry.delivered.load(ordering: .relaxed))
        if let cluster = engine.cluster {
            dropped?.update(to: cluster.droppedFrames.load(ordering: .relaxed))
            connected?.record(cluster.isConnected ? 1 : 0)
            reconnects?.update(to: cluster.reconnects.load(ordering: .relaxed))
            recovered?.update(to: cluster.follower?.recovered.load(ordering: .relaxed) ?? 0)
        }
        registry.emit(into: &buffer)
    }
}
