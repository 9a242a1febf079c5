public import CoreMetrics
public import Prometheus
import Synchronization

/// One set of metrics exported in Prometheus's text format: the host's own (``CSOPHost``'s
/// request counts and durations) or one plugin instance's (a pool's queue depth).
///
/// Metrics are made once and kept: each factory method returns a swift-metrics handle
/// (`Counter`, `Gauge`) whose updates are a few atomic or locked instructions, backed
/// by swift-prometheus. A second call with the same name and labels returns the same series.
/// Names follow Prometheus's conventions (`csop_<domain>_<what>_<unit>`, counters ending in
/// `_total`); each name keeps one help text and one set of label names.
///
/// Not bootstrapped into `MetricsSystem`: a plugin library has its own copy of swift-metrics,
/// and an embedder's process may have its own backend. Thread-safe.
public final class MetricsRegistry: Sendable {
    /// The swift-prometheus registry behind the handles.
    public let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory

    public init() {
        registry = PrometheusCollectorRegistry()
        factory = PrometheusMetricsFactory(registry: registry)
    }

    /// A counter: only goes up (`increment(by:)`).
    public func counter(_ name: String, _ help: String, _ labels: [(String, String)] = []) -> CoreMetrics.Counter {
        let series = registry.makeCounter(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
        return CoreMetrics.Counter(label: name, dimensions: labels, handler: series, factory: factory)
    }

    /// A counter that follows a total kept elsewhere (an atomic a plugin already keeps for its
    /// stats operation): ``MirroredCounter/update(to:)``, at scrape time, adds what was counted
    /// since, so the hot path pays nothing more.
    public func mirroredCounter(_ name: String, _ help: String, _ labels: [(String, String)] = []) -> MirroredCounter {
        MirroredCounter(counter(name, help, labels))
    }

    /// A gauge: set to the current value (`record(_:)`).
    public func gauge(_ name: String, _ help: String, _ labels: [(String, String)] = []) -> CoreMetrics.Gauge {
        let series = registry.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
        return CoreMetrics.Gauge(label: name, dimensions: labels, aggregate: false, handler: series, factory: factory)
    }

    /// Takes the gauge `name` with `labels` out of the export (what it measured is gone).
    public func removeGauge(_ name: String, _ help: String, _ labels: [(String, String)]) {
        registry.unregisterGauge(registry.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels))
    }

    /// 1 µs to 30 s, about three buckets a decade: a no-op dispatch (1–2 µs), a SQLite get
    /// (5 µs), a PostgreSQL round trip (ms) and a long compute job each land in a bucket of
    /// their own.
    public static let durationBuckets: [Duration] = [
        .microseconds(1), .microseconds(2.5), .microseconds(5), .microseconds(10), .microseconds(25), .microseconds(50),
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2.5), .milliseconds(5),
        .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30),
    ]

    /// Every series, in Prometheus's text exposition format (version 0.0.4), appended to `buffer`.
    public func emit(into buffer: inout [UInt8]) { registry.emit(into: &buffer) }
}

/// A counter that follows a total kept elsewhere: see ``MetricsRegistry/mirroredCounter(_:_:_:)``.
public final class MirroredCounter: Sendable {
    private let counter: CoreMetrics.Counter
    private let last = Mutex<Int>(0)

    init(_ counter: CoreMetrics.Counter) { self.counter = counter }

    /// Adds to the counter what `total` grew by since the last update (a total that went down,
    /// a new instance's, is taken as the new base).
    public func update(to total: Int) {
        let delta = last.withLock { last in
            defer { last = total }
            return total - last
        }
        if delta > 0 { counter.increment(by: delta) }
    }
}
