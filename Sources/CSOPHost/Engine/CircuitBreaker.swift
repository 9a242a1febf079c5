public import CSOPCore
import Logging
import Synchronization

/// When a plugin's circuit opens and for how long: a plugins.d entry's `[circuit]` table.
public struct CircuitPolicy: Sendable, Equatable {
    /// Consecutive retryable failures (timeouts, `NOT_CONNECTED`, `PLUGIN_CRASHED`, …) that open
    /// the circuit. 1…1000.
    public var failures: Int
    /// Milliseconds an open circuit refuses calls before it lets one probe through. 1…3,600,000.
    public var coolDown: Double

    public static let keys: Set<String> = ["failures", "coolDown"]

    public init(failures: Int = 5, coolDown: Double = 30_000) {
        self.failures = failures
        self.coolDown = coolDown
    }

    /// Reads `[circuit]` (as JSON), every key optional, each checked against its range.
    /// - Throws: `INVALID_PAYLOAD` naming `circuit.<key>` and what it accepts.
    public init(json: JSONValue) throws(CSOPError) {
        let fields = try Fields(json, path: "circuit", allowed: Self.keys)
        self.init()
        if let value = try fields.int("failures", in: 1...1000) { failures = Int(value) }
        if let value = try fields.number("coolDown", in: 1...3_600_000) { coolDown = value }
    }
}

/// One plugin's circuit breaker: closed, it counts consecutive retryable failures; at
/// ``CircuitPolicy/failures`` it opens, and calls fail at once with `CIRCUIT_OPEN` (retryable,
/// with the time left) for ``CircuitPolicy/coolDown``; then one probe call is let through
/// (half-open) while others are still refused, and the probe's success closes the circuit,
/// its failure opens it again. Any answer that is not a retryable failure — a success, or an
/// error about the request itself — counts as the plugin working.
///
/// The router consults it before every attempt (``admit(now:)``) and reports every attempt's
/// outcome (``record(failed:probe:now:)``); `onChange` hears each change of state.
final class CircuitBreaker: Sendable {
    enum State: Equatable, Sendable {
        case closed(failures: Int)
        case open(until: Double)
        /// One probe is running.
        case halfOpen

        /// As `host.info`, the events and the log name it.
        var name: String {
            switch self {
            case .closed: "closed"
            case .open: "open"
            case .halfOpen: "half-open"
            }
        }
    }

    enum Admission: Equatable {
        case allow
        /// The one call let through after the cool-down: its outcome decides.
        case probe
        case refuse(CSOPError)
    }

    let plugin: String
    let policy: CircuitPolicy
    private let state = Mutex(State.closed(failures: 0))
    private let onChange: @Sendable (_ plugin: String, _ state: State, _ policy: CircuitPolicy) -> Void

    init(plugin: String, policy: CircuitPolicy, onChange: @escaping @Sendable (String, State, CircuitPolicy) -> Void = { _, _, _ in }) {
        self.plugin = plugin
        self.policy = policy
        self.onChange = onChange
    }

    var current: State { state.withLock { $0 } }

    /// Whether a call may run now (`now` in the router's scheduler milliseconds).
    func admit(now: Double) -> Admission {
        let (admission, changed) = state.withLock { state -> (Admission, State?) in
            switch state {
            case .closed:
                return (.allow, nil)
            case .open(let until) where now < until:
                return (.refuse(refusal(remaining: until - now)), nil)
            case .open:
                state = .halfOpen
                return (.probe, .halfOpen)
            case .halfOpen:
                return (.refuse(refusal(remaining: nil)), nil)
            }
        }
        if let changed { onChange(plugin, changed, policy) }
        return admission
    }

    /// Counts one attempt's outcome. `probe` says it was the call ``admit(now:)`` let through
    /// half-open; other outcomes arriving while a probe runs are ignored.
    func record(failed: Bool, probe: Bool, now: Double) {
        let changed = state.withLock { state -> State? in
            switch state {
            case .closed(let failures):
                guard failed else {
                    if failures > 0 { state = .closed(failures: 0) }
                    return nil
                }
                guard failures + 1 >= policy.failures else {
                    state = .closed(failures: failures + 1)
                    return nil
                }
                state = .open(until: now + policy.coolDown)
                return state
            case .halfOpen where probe:
                state = failed ? .open(until: now + policy.coolDown) : .closed(failures: 0)
                return state
            case .halfOpen, .open:
                return nil
            }
        }
        if let changed { onChange(plugin, changed, policy) }
    }

    private func refusal(remaining: Double?) -> CSOPError {
        let when =
            remaining.map { "for \(Self.seconds($0)) s more" }
            ?? "while one probe call tests it"
        return CSOPError(
            .circuitOpen,
            "\(plugin)'s circuit is open after \(policy.failures) failures in a row: its calls fail at once \(when) (plugins.d [circuit] failures and coolDown); retry later",
            retryable: true)
    }

    private static func seconds(_ milliseconds: Double) -> String {
        let tenths = (milliseconds / 100).rounded(.up) / 10
        return tenths == tenths.rounded() ? String(Int64(tenths)) : String(tenths)
    }

    /// The state as `host.info` shows it.
    func json(now: Double) -> JSONValue {
        let state = current
        var object: JSONObject = ["failures": .int(Int64(policy.failures)), "coolDown": .double(policy.coolDown), "state": .string(state.name)]
        switch state {
        case .closed(let failures): object["consecutiveFailures"] = .int(Int64(failures))
        case .open(let until): object["remaining"] = .double(max(0, until - now))
        case .halfOpen: break
        }
        return .object(object)
    }

    /// The event a change of state emits: `{type: "host.circuit", plugin, state, …}`.
    /// A plugin's breaker as a loaded plugin has it: each change of state is a warning in
    /// `logger` and a `host.circuit` event on `events`.
    static func announcing(plugin: String, policy: CircuitPolicy, logger: Logger, events: EventHub) -> CircuitBreaker {
        CircuitBreaker(plugin: plugin, policy: policy) { plugin, state, policy in
            logger.warning("\(plugin): circuit \(state.name)")
            events.publish(HostEvent(plugin: "host", json: RawJSON(CircuitBreaker.event(plugin: plugin, state: state, policy: policy))))
        }
    }

    static func event(plugin: String, state: State, policy: CircuitPolicy) -> JSONValue {
        var object: JSONObject = ["type": "host.circuit", "plugin": .string(plugin), "state": .string(state.name)]
        if case .open = state { object["coolDown"] = .double(policy.coolDown) }
        return .object(object)
    }
}
