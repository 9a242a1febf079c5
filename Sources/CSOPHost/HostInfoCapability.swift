import CSOPCore
import CSOPPluginABI
import Foundation

/// The host's own `host` domain: `host.info` describes the host and its plugins (with their
/// generation, load time, calls running now, and those that timed out and were never
/// completed), `host.ping` answers at once, and `host.reload` reloads the plugins directory
/// and answers what changed (``ReloadReport/json``). Like every `host.*` action, a token
/// must allow it; the local owner may.
final class HostInfoCapability: Capability, Sendable {
    let name = "host"
    let version = CSOPHost.version
    let operations = ["info", "ping", "reload"]
    /// Weak: the reloader holds this capability (in what it installs in the router).
    private weak let reloader: PluginReloader?
    /// The router's clock, for the time an open circuit has left.
    private let scheduler: any Scheduler

    init(reloader: PluginReloader, scheduler: any Scheduler) {
        self.reloader = reloader
        self.scheduler = scheduler
    }

    func invoke(
        callID: UInt64, operation: Int, payload: [UInt8], timeoutMilliseconds: Double, caller: Caller?, _ attempt: Attempt
    ) {
        switch operation {
        case 0: attempt.complete(.success(RawJSON(info())))
        case 1: attempt.complete(.success(RawJSON(["pong": true])))
        default:
            guard let reloader else {
                return attempt.complete(.failure(CSOPError(.notInitialized, "the host is gone")))
            }
            // Creating plugins blocks: never on the caller's (perhaps an event loop's) thread.
            Thread.detachNewThread {
                let report = reloader.reload()
                if let refused = report.refused {
                    attempt.complete(.failure(CSOPError(.notInitialized, refused)))
                } else {
                    attempt.complete(.success(RawJSON(report.json)))
                }
            }
        }
    }

    func cancel(callID: UInt64) {}

    private func info() -> JSONValue {
        let plugins = reloader?.capabilities ?? []
        let failures: [JSONValue] = (reloader?.failures ?? []).map {
            var failure: JSONObject = ["file": .string($0.file), "kind": .string($0.kind.rawValue), "message": .string($0.message)]
            if let domain = $0.domain { failure["domain"] = .string(domain) }
            return .object(failure)
        }
        let capabilities: [JSONValue] =
            [["name": "host", "version": .string(CSOPHost.version), "operations": .array(operations.map { .string($0) }), "builtin": true]]
            + plugins.map { plugin in
                let abandoned = plugin.abandonedCalls
                var entry: JSONObject = [
                    "name": .string(plugin.name), "version": .string(plugin.version),
                    "operations": .array(plugin.operations.map { .string($0) }),
                    "library": .string(plugin.libraryPath), "file": .string(plugin.file),
                    "generation": .int(Int64(plugin.generation)), "loadedAt": .string(plugin.loadedAt),
                    "running": .int(Int64(plugin.runningCount)),
                    "neverCompleted": .int(Int64(abandoned.count)),
                    "neverCompletedCalls": .array(abandoned.prefix(16).map { .int(Int64(bitPattern: $0)) }),
                ]
                if let circuit = plugin.circuit { entry["circuit"] = circuit.json(now: scheduler.now()) }
                for (key, value) in plugin.infoDetails.members { entry[key] = value }
                return .object(entry)
            }
        return [
            "version": .string(CSOPHost.version), "abiVersion": .int(Int64(CSOP_ABI_VERSION)),
            "capabilities": .array(capabilities), "failures": .array(failures),
        ]
    }
}
