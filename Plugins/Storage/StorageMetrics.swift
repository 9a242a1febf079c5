import CSOPCore
import CoreMetrics
import Synchronization

/// The storage plugin's series. Reads and writes by tier are counted with one relaxed atomic
/// add on their path; the rest (values, bytes and the quota) is read when the host is scraped.
final class StorageMetrics: Sendable {
    /// Index 0: the local tier (SQLite); 1: the cold tier (PostgreSQL).
    private let reads = [TierCount(), TierCount()]
    private let writes = [TierCount(), TierCount()]
    private let writtenBytes = [TierCount(), TierCount()]

    private final class TierCount: Sendable {
        let value = Atomic<Int>(0)
        func add(_ amount: Int) { value.add(amount, ordering: .relaxed) }
        var count: Int { value.load(ordering: .relaxed) }
    }

    private let registry = MetricsRegistry()
    private let readSeries: [MirroredCounter]
    private let writeSeries: [MirroredCounter]
    private let writtenSeries: [MirroredCounter]
    private let values: [CoreMetrics.Gauge]
    private let bytes: [CoreMetrics.Gauge]
    private let storedBytes: [CoreMetrics.Gauge]
    private let quota: CoreMetrics.Gauge
    /// The change feed's: changes sent and not sent, received, malformed payloads dropped.
    private let feedDropped: MirroredCounter
    private let feedReceived: MirroredCounter
    private let feedMalformed: MirroredCounter

    init() {
        let tiers = [[("tier", "local")], [("tier", "cold")]]
        let registry = registry
        readSeries = tiers.map { registry.mirroredCounter("csop_storage_reads_total", "Values read (storage.get), by the tier they came from.", $0) }
        writeSeries = tiers.map { registry.mirroredCounter("csop_storage_writes_total", "Values saved, by the tier they went to.", $0) }
        writtenSeries = tiers.map {
            registry.mirroredCounter("csop_storage_written_bytes_total", "JSON bytes of the values saved, by the tier they went to.", $0)
        }
        // Streamed values (read and written as the local tier's) are a third tier of their own here.
        let stored = tiers + [[("tier", "stream")]]
        values = stored.map { registry.gauge("csop_storage_values", "Values stored now (expired ones excluded), all tenants, by tier.", $0) }
        bytes = stored.map { registry.gauge("csop_storage_bytes", "Bytes of the values stored now (JSON, or a stream's), all tenants, by tier.", $0) }
        storedBytes = stored.map {
            registry.gauge("csop_storage_stored_bytes", "Bytes the values take as stored (compressed, encrypted), by tier.", $0)
        }
        quota = registry.gauge("csop_storage_quota_bytes", "maxBytes per tenant (0: no quota).")
        feedDropped = registry.mirroredCounter(
            "csop_storage_feed_dropped_total", "Changes committed here that the change feed could not send to other processes.")
        feedReceived = registry.mirroredCounter(
            "csop_storage_feed_received_total", "Changes committed by other processes of this store, received by the change feed.")
        feedMalformed = registry.mirroredCounter(
            "csop_storage_feed_malformed_total", "NOTIFY payloads on the change feed's channel that were not changes (dropped).")
    }

    func read(cold: Bool) { reads[cold ? 1 : 0].add(1) }

    func wrote(cold: Bool, bytes size: Int64) {
        writes[cold ? 1 : 0].add(1)
        writtenBytes[cold ? 1 : 0].add(Int(size))
    }

    /// Sets every series and appends them; `stats` is nil when the database could not be read.
    func write(
        into buffer: inout [UInt8], stats: LocalStore.Stats?, maxBytes: Int64?,
        feed: ChangeFeed?
    ) {
        feedDropped.update(to: feed?.dropped.load(ordering: .relaxed) ?? 0)
        feedReceived.update(to: feed?.received.load(ordering: .relaxed) ?? 0)
        feedMalformed.update(to: feed?.malformed.load(ordering: .relaxed) ?? 0)
        for tier in 0..<2 {
            readSeries[tier].update(to: reads[tier].count)
            writeSeries[tier].update(to: writes[tier].count)
            writtenSeries[tier].update(to: writtenBytes[tier].count)
        }
        if let stats {
            for (tier, figures) in [stats.local, stats.cloud, stats.stream].enumerated() {
                values[tier].record(figures.count)
                bytes[tier].record(figures.bytes)
                storedBytes[tier].record(figures.storedBytes)
            }
        }
        quota.record(maxBytes ?? 0)
        registry.emit(into: &buffer)
    }
}
