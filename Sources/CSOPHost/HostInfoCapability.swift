import CSOPCore
import CSOPPluginABI

/// The host's own `host` domain: `host.info` describes the host and its plugins,
/// `host.ping` answers at once.
final class HostInfoCapability: Capability, Sendable {
    let name = "host"
    let version = CSOPHost.version
    let operations = ["info", "ping"]
    private let info: RawJSON

    init(plugins: [LoadedPluginInfo], failures: [PluginLoadFailure]) {
        let capabilities: [JSONValue] =
            [["name": "host", "version": .string(CSOPHost.version), "operations": ["info", "ping"], "builtin": true]]
            + plugins.map { plugin in
                [
                    "name": .string(plugin.name), "version": .string(plugin.version),
                    "operations": .array(plugin.operations.map { .string($0) }),
                    "library": .string(plugin.library), "file": .string(plugin.file),
                ]
            }
        let failed: [JSONValue] = failures.map {
            ["file": .string($0.file), "kind": .string($0.kind.rawValue), "message": .string($0.message)]
        }
        info = RawJSON([
            "version": .string(CSOPHost.version), "abiVersion": .int(Int64(CSOP_ABI_VERSION)),
            "capabilities": .array(capabilities), "failures": .array(failed),
        ])
    }

    func invoke(
        callID: UInt64, operation: Int, payload: [UInt8], timeoutMilliseconds: Double,
        completion: @escaping @Sendable (Result<RawJSON, CSOPError>) -> Void
    ) {
        completion(.success(operation == 0 ? info : RawJSON(["pong": true])))
    }

    func cancel(callID: UInt64) {}
}
