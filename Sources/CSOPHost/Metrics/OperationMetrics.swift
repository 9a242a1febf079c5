import CSOPCore
import CoreMetrics
import Synchronization

/// The series one action (`domain.operation`) updates on every request, made once when the
/// action becomes routable so that the hot path only increments: about 0.1 µs a request.
final class OperationMetrics: Sendable {
    /// `domain.operation`, or `""` for requests refused before any capability was found.
    let action: String
    private let registry: MetricsRegistry
    private let succeeded: CoreMetrics.Counter
    let duration: LatencyHistogram
    let retries: CoreMetrics.Counter
    let timeouts: CoreMetrics.Counter
    /// Failures by error code, made on first use. Codes are few (each plugin's documented
    /// set); past ``maxCodes`` of them, a plugin inventing codes counts under `OTHER`.
    private let failures = Mutex<[String: CoreMetrics.Counter]>([:])

    init(action: String, registry: MetricsRegistry) {
        self.action = action
        self.registry = registry
        let labels = [("action", action)]
        succeeded = registry.counter(HostMetrics.requestsName, HostMetrics.requestsHelp, labels + [("code", "OK")])
        duration = LatencyHistogram(action: action)
        retries = registry.counter("csop_request_retries_total", "Attempts made again after a retryable failure, by action.", labels)
        timeouts = registry.counter(
            "csop_request_timeouts_total",
            "Attempts that passed their timeout and were cancelled in their plugin (every cancellation the host makes is one), by action.",
            labels)
    }

    /// Counts an answer: its outcome code (`OK` for success) and, for a routed request, its
    /// duration in milliseconds.
    func record(_ outcome: Result<RawJSON, CSOPError>, milliseconds: Double?) {
        switch outcome {
        case .success: succeeded.increment()
        case .failure(let error): failureCounter(error.code.rawValue).increment()
        }
        if let milliseconds { duration.record(nanoseconds: Int(milliseconds * 1_000_000)) }
    }

    static let maxCodes = 64

    private func failureCounter(_ code: String) -> CoreMetrics.Counter {
        if let counter = failures.withLock({ $0[code] }) { return counter }
        let known = failures.withLock { $0.count }
        let label = known < Self.maxCodes ? code : "OTHER"
        let counter = registry.counter(HostMetrics.requestsName, HostMetrics.requestsHelp, [("action", action), ("code", label)])
        failures.withLock { if $0.count < Self.maxCodes { $0[code] = counter } }
        return counter
    }
}
