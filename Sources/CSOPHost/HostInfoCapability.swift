import CSOPCore
import CSOPPluginABI

/// The host's own `host` domain: `host.info` describes the host and its plugins (with their
/// calls running now, and those that timed out and were never completed), `host.ping`
/// answers at once.
final class HostInfoCapability: Capability, Sendable {
    let name = "host"
    let version = CSOPHost.version
    let operations = ["info", "ping"]
    private let plugins: [PluginCapability]
    private let failures: [JSONValue]
    /// The router's clock, for the time an open circuit has left.
    private let scheduler: any Scheduler

    init(plugins: [PluginCapability], failures: [PluginLoadFailure], scheduler: any Scheduler) {
        self.plugins = plugins
        self.scheduler = scheduler
        self.failures = failures.map {
            var failure: JSONObject = ["file": .string($0.file), "kind": .string($0.kind.rawValue), "message": .string($0.message)]
            if let domain = $0.domain { failure["domain"] = .string(domain) }
            return .object(failure)
        }
    }

    func invoke(
        callID: UInt64, operation: Int, payload: [UInt8], timeoutMilliseconds: Double, caller: Caller?, _ attempt: Attempt
    ) {
        attempt.complete(.success(operation == 0 ? RawJSON(info()) : RawJSON(["pong": true])))
    }

    func cancel(callID: UInt64) {}

    private func info() -> JSONValue {
        let capabilities: [JSONValue] =
            [["name": "host", "version": .string(CSOPHost.version), "operations": ["info", "ping"], "builtin": true]]
            + plugins.map { plugin in
                let abandoned = plugin.abandonedCalls
                var entry: JSONObject = [
                    "name": .string(plugin.name), "version": .string(plugin.version),
                    "operations": .array(plugin.operations.map { .string($0) }),
                    "library": .string(plugin.library.path), "file": .string(plugin.file),
                    "running": .int(Int64(plugin.runningCount)),
                    "neverCompleted": .int(Int64(abandoned.count)),
                    "neverCompletedCalls": .array(abandoned.prefix(16).map { .int(Int64(bitPattern: $0)) }),
                ]
                if let circuit = plugin.circuit { entry["circuit"] = circuit.json(now: scheduler.now()) }
                return .object(entry)
            }
        return [
            "version": .string(CSOPHost.version), "abiVersion": .int(Int64(CSOP_ABI_VERSION)),
            "capabilities": .array(capabilities), "failures": .array(failures),
        ]
    }
}
