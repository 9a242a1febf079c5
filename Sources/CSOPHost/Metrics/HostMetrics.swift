public import CSOPCore
import CoreMetrics
import Synchronization

/// The host's metrics: every request by action and outcome code, its duration, retries and
/// timeouts; plugin loads, reloads, failures and crashes; and, read when scraped, requests in
/// flight and each plugin's generation. ``CSOPHost/metricsText()`` adds each plugin's own.
///
/// Off unless ``HostConfiguration/metrics`` is set (`csop serve` and `csop run
/// --metrics-listen` set it): on, a dispatch costs about 0.1 µs more (`csop bench --only host`
/// measures it beside the same dispatch without). Front ends add their own series to
/// ``registry`` (the gateway's connections and refusals).
public final class HostMetrics: Sendable {
    /// Where the series live; add a front end's own here.
    public let registry: MetricsRegistry
    private let operations = Mutex<[String: OperationMetrics]>([:])
    /// Requests refused before a capability was found (a malformed action, an unknown domain,
    /// a forbidden one): `action=""`, so that a client sending random actions adds no series.
    let unrouted: OperationMetrics
    private let pluginChanges = Mutex<[String: CoreMetrics.Counter]>([:])
    private let pluginGauges = Mutex<[String: PluginGauge]>([:])
    private let inFlight: CoreMetrics.Gauge
    private let inFlightBytes: CoreMetrics.Gauge
    private let failingEntries: CoreMetrics.Gauge

    static let requestsName = "csop_requests_total"
    static let requestsHelp = "Requests answered, by action and outcome code (OK, or the error code)."

    public init() {
        let registry = MetricsRegistry()
        self.registry = registry
        unrouted = OperationMetrics(action: "", registry: registry)
        inFlight = registry.gauge("csop_requests_in_flight", "Requests dispatched and not yet answered.")
        inFlightBytes = registry.gauge("csop_request_bytes_in_flight", "Payload bytes of the requests in flight (maxInFlightBytes bounds it).")
        failingEntries = registry.gauge("csop_plugin_entries_failing", "plugins.d entries that did not load at the last load or reload.")
    }

    /// Every series in Prometheus's text format: the registry's, then the request durations.
    public func emit(into buffer: inout [UInt8]) {
        registry.emit(into: &buffer)
        let histograms = operations.withLock { table in table.values.filter { !$0.action.isEmpty }.map(\.duration) }
        guard !histograms.isEmpty else { return }
        buffer.append(contentsOf: "# HELP \(Self.durationName) \(Self.durationHelp)\n# TYPE \(Self.durationName) histogram\n".utf8)
        for histogram in histograms.sorted(by: { $0.action < $1.action }) { histogram.emit(name: Self.durationName, into: &buffer) }
    }

    static let durationName = "csop_request_duration_seconds"
    static let durationHelp = "Time from dispatch to answer, retries included, by action."

    /// The series of `action`, made on first use and kept (a reload keeps counting on them).
    func operation(_ action: String) -> OperationMetrics {
        if let metrics = operations.withLock({ $0[action] }) { return metrics }
        let made = OperationMetrics(action: action, registry: registry)
        return operations.withLock { table in
            if let metrics = table[action] { return metrics }
            table[action] = made
            return made
        }
    }

    /// Counts a change of the plugins a host serves: `loaded`, `replaced`, `removed`,
    /// `failed`, `crashed` or `restarted`.
    func pluginChanged(_ plugin: String, _ change: String) {
        let key = "\(plugin)\u{0}\(change)"
        let counter =
            pluginChanges.withLock { $0[key] }
            ?? {
                let made = registry.counter(
                    "csop_plugin_changes_total", "Plugin instances loaded, replaced, removed, failed to load, crashed and restarted, by plugin.",
                    [("plugin", plugin), ("change", change)])
                pluginChanges.withLock { $0[key] = made }
                return made
            }()
        counter.increment()
    }

    /// Sets the gauges read at scrape time. Plugins no longer served lose their series.
    func refresh(inFlight requests: Int, bytes: Int, plugins: [LoadedPluginInfo], failing: Int) {
        inFlight.record(requests)
        inFlightBytes.record(bytes)
        failingEntries.record(failing)
        pluginGauges.withLock { gauges in
            var current: Set<String> = []
            for plugin in plugins {
                let labels = [("plugin", plugin.name), ("version", plugin.version)]
                let key = "\(plugin.name)\u{0}\(plugin.version)"
                current.insert(key)
                let gauge = gauges[key]?.gauge ?? registry.gauge(Self.generationName, Self.generationHelp, labels)
                gauges[key] = PluginGauge(gauge: gauge, labels: labels)
                gauge.record(plugin.generation)
            }
            for (key, gone) in gauges where !current.contains(key) {
                registry.removeGauge(Self.generationName, Self.generationHelp, gone.labels)
                gauges[key] = nil
            }
        }
    }

    private static let generationName = "csop_plugin_generation"
    private static let generationHelp =
        "The instance of each plugin serving now (1 at load; each reload or crash restart adds 1), labelled with its version."

    private struct PluginGauge {
        let gauge: CoreMetrics.Gauge
        let labels: [(String, String)]
    }
}
